"""Preconditioning: f(x, t) = c_skip(t) x + c_out(t) F(c_in(t) x, c_noise(t), label).

One class per parameterisation, each four named coefficient lines (EDM, Karras et al.
2022, Table 1). The backbone F is any module called as F(x, c_noise, labels).
"""

from __future__ import annotations

import torch
from torch import nn

from .schedule import EPS, SIGMA_DATA, T_MAX, segment_boundaries


class Preconditioned(nn.Module):
    """Wraps a backbone F with the skip/scale coefficients of one parameterisation."""

    kind: str = ""

    def __init__(self, backbone: nn.Module, sigma_data: float = SIGMA_DATA, eps: float = EPS, T: float = T_MAX):
        super().__init__()
        self.backbone = backbone
        self.sigma_data, self.eps, self.T = float(sigma_data), float(eps), float(T)

    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, labels: torch.Tensor | None = None) -> torch.Tensor:
        # Coefficients stay in fp32 (fp64 for fp64 inputs) even under autocast.
        ctype = torch.float64 if x.dtype == torch.float64 else torch.float32
        t = torch.as_tensor(t, dtype=ctype, device=x.device)
        t = t.reshape(-1, *([1] * (x.ndim - 1))).expand(x.shape[0], *([1] * (x.ndim - 1)))
        c_skip, c_out, c_in, c_noise = self.coefficients(t)
        F = self.backbone((c_in * x).to(x.dtype), c_noise.flatten(), labels)
        return c_skip * x + c_out * F.to(ctype)


class Noiser(Preconditioned):
    """CT-Inversion: maps x_t to the trajectory's end x_T; f(x_T, T) = x_T exactly.

    With K segments (boundaries eps = s_0 < ... < s_K = T), f maps x_t for t in [s_{k-1}, s_k) to
    x_{s_k}: c_out = s_k - t, so f tends to the identity as t reaches s_k from below and encoding
    takes K evaluations (samplers.encode). K = 1 is the report's one-step noiser.
    """

    kind = "noiser"

    def __init__(self, backbone: nn.Module, sigma_data: float = SIGMA_DATA, eps: float = EPS, T: float = T_MAX,
                 segments: int = 1):
        super().__init__(backbone, sigma_data, eps, T)
        self.segments = int(segments)
        self.boundaries = [float(s) for s in segment_boundaries(self.segments, self.eps, self.T)]

    def segment_end(self, t: torch.Tensor) -> torch.Tensor:
        """s_k for t in [s_{k-1}, s_k); T for t = T (the last point maps to itself). A chain of
        selections rather than a search, so that each s_k is returned exactly and exports to ONNX."""
        end = torch.full_like(t, self.T)
        for s in reversed(self.boundaries[1:-1]):
            end = torch.where(t < s, torch.full_like(t, s), end)
        return end

    def coefficients(self, t):
        c_skip = torch.ones_like(t)
        c_out = self.T - t if self.segments == 1 else self.segment_end(t) - t
        c_in = 1 / torch.sqrt(t**2 + self.sigma_data**2)
        c_noise = torch.log(t) / 4
        return c_skip, c_out, c_in, c_noise


class ConsistencyDenoiser(Preconditioned):
    """Consistency model (Song et al. 2023, Appendix C): f(x_eps, eps) = x_eps exactly."""

    kind = "cm"

    def coefficients(self, t):
        c_skip = self.sigma_data**2 / ((t - self.eps) ** 2 + self.sigma_data**2)
        c_out = self.sigma_data * (t - self.eps) / torch.sqrt(self.sigma_data**2 + t**2)
        c_in = 1 / torch.sqrt(t**2 + self.sigma_data**2)
        c_noise = torch.log(t) / 4
        return c_skip, c_out, c_in, c_noise


class EDMDenoiser(Preconditioned):
    """Diffusion denoiser D(x, t) ≈ E[x0 | x_t] (Karras et al. 2022, Table 1)."""

    kind = "edm"

    def coefficients(self, t):
        c_skip = self.sigma_data**2 / (t**2 + self.sigma_data**2)
        c_out = t * self.sigma_data / torch.sqrt(t**2 + self.sigma_data**2)
        c_in = 1 / torch.sqrt(t**2 + self.sigma_data**2)
        c_noise = torch.log(t) / 4
        return c_skip, c_out, c_in, c_noise


PARAMETERISATIONS: dict[str, type[Preconditioned]] = {
    cls.kind: cls for cls in (Noiser, ConsistencyDenoiser, EDMDenoiser)
}
