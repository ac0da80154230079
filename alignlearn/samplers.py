"""Samplers on the VE probability-flow ODE dx/dt = (x - D(x, t)) / t, k-diffusion style.

Plain functions over (model, x, sigmas); schedules are built by `schedule.karras_sigmas`
and passed in. Models are called as model(x, t, labels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .schedule import EPS

Model = Callable[..., torch.Tensor]


def _batch_t(t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), float(t), dtype=torch.float64 if x.dtype == torch.float64 else torch.float32, device=x.device)


def guided(model: Model, guidance: float, null_label: int) -> Model:
    """Classifier-free guidance: D_w = D_uncond + w (D_cond - D_uncond) (Ho & Salimans 2022).

    w = 1 is the conditional model, w = 0 the unconditional one. Both passes run as one batch.
    """

    def D_w(x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None or guidance == 1.0:
            return model(x, t, labels)
        null = torch.full_like(labels, null_label)
        out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
        cond, uncond = out.chunk(2)
        return uncond + guidance * (cond - uncond)

    return D_w


@torch.no_grad()
def encode(noiser: Model, x0: torch.Tensor, *, eps: float = EPS, labels: torch.Tensor | None = None) -> torch.Tensor:
    """CT-Inversion encoding: a clean image is treated as x_eps and mapped to x_T = f(x0, eps) in 1 NFE;
    a K-segment noiser goes boundary to boundary, x_{s_1} = f(x0, eps), x_{s_2} = f(x_{s_1}, s_1), ..."""
    x = x0
    for t in encode_levels(noiser, eps):
        x = noiser(x, _batch_t(t, x0), labels)
    return x


def encode_levels(noiser: Model, eps: float = EPS) -> list[float]:
    """The levels at which encoding evaluates the noiser: eps, then each inner segment boundary."""
    return [eps] + list(getattr(noiser, "boundaries", [])[1:-1])


@torch.no_grad()
def cm_sample(
    model: Model,
    x: torch.Tensor,
    sigmas: Sequence[float] | torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    eps: float = EPS,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Consistency sampling (Song et al. 2023, Algorithm 1): x is at sigmas[0]; each later
    sigma re-noises the estimate, x_t = x0 + sqrt(t^2 - eps^2) z, and denoises again."""
    sigmas = [float(s) for s in sigmas]
    x0 = model(x, _batch_t(sigmas[0], x), labels)
    for t in sigmas[1:]:
        z = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        x0 = model(x0 + (t**2 - eps**2) ** 0.5 * z, _batch_t(t, x), labels)
    return x0


def _ode(model: Model, x: torch.Tensor, sigmas, labels, method: str) -> torch.Tensor:
    """Euler or Heun along sigmas (in either direction) on dx/dt = (x - D(x, t)) / t."""
    if method not in ("euler", "heun"):
        raise ValueError(f"unknown ODE method {method!r}; choose euler or heun")
    sigmas = [float(s) for s in sigmas]
    for t_i, t_next in zip(sigmas[:-1], sigmas[1:]):
        d = (x - model(x, _batch_t(t_i, x), labels)) / t_i
        x_next = x + (t_next - t_i) * d
        if method == "heun":
            d_next = (x_next - model(x_next, _batch_t(t_next, x), labels)) / t_next
            x_next = x + (t_next - t_i) * (d + d_next) / 2
        x = x_next
    return x


def ode_step(model: Model, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, labels: torch.Tensor | None = None,
             method: str = "euler") -> torch.Tensor:
    """One Euler or Heun step of dx/dt = (x - D(x, t)) / t from per-sample levels t to t_next, shape (B,);
    where t_next equals t the step is zero."""
    if method not in ("euler", "heun"):
        raise ValueError(f"unknown ODE method {method!r}; choose euler or heun")
    shape = (-1,) + (1,) * (x.ndim - 1)
    dt = (t_next - t).view(shape)
    d = (x - model(x, t, labels).to(x.dtype)) / t.view(shape)
    x_next = x + dt * d
    if method == "heun":
        d_next = (x_next - model(x_next, t_next, labels).to(x.dtype)) / t_next.view(shape)
        x_next = x + dt * (d + d_next) / 2
    return x_next


@torch.no_grad()
def ode_sample(
    denoiser: Model,
    x: torch.Tensor,
    sigmas: Sequence[float] | torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    method: str = "euler",
) -> torch.Tensor:
    """Integrate the PF-ODE down the falling schedule sigmas (T ... eps); x is at sigmas[0]."""
    return _ode(denoiser, x, sigmas, labels, method)


@torch.no_grad()
def ddim_invert(
    denoiser: Model,
    x0: torch.Tensor,
    sigmas: Sequence[float] | torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """DDIM inversion (report Eq. 5): x_{i+1} = x_i + (t_{i+1} - t_i)(x_i - D(x_i, t_i))/t_i
    up the rising schedule sigmas (eps ... T); the clean image is x at sigmas[0]."""
    return _ode(denoiser, x0, sigmas, labels, "euler")


def nfe(method: str, steps: int) -> int:
    """Network evaluations of `steps` ODE steps (Heun: two per step)."""
    return steps * (2 if method == "heun" else 1)
