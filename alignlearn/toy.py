"""Data sets whose ideal denoiser is analytic: the oracle for samplers and for Algorithm 1.

For data N(mu, s^2 I), E[x0 | x_t] = (s^2 x + t^2 mu)/(s^2 + t^2) and the PF-ODE
trajectory is x_t = mu + (x_a - mu) sqrt(s^2 + t^2)/sqrt(s^2 + a^2). A mixture of such
components has the posterior-mean denoiser sum_k w_k(x, t) D_k(x, t).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .samplers import ode_sample
from .schedule import EPS, T_MAX, karras_sigmas


@dataclass(frozen=True)
class Gaussian:
    mu: float
    s: float

    def denoiser(self, x: torch.Tensor, t: torch.Tensor, labels=None) -> torch.Tensor:
        t = t.view((-1,) + (1,) * (x.ndim - 1)).to(x.dtype)
        return (self.s**2 * x + t**2 * self.mu) / (self.s**2 + t**2)

    def flow(self, x_a: torch.Tensor, a: float, b: float) -> torch.Tensor:
        """The exact PF-ODE map from noise level a to b."""
        return self.mu + (x_a - self.mu) * math.sqrt(self.s**2 + b**2) / math.sqrt(self.s**2 + a**2)

    def noiser(self, x: torch.Tensor, t: torch.Tensor, labels=None, T: float = T_MAX) -> torch.Tensor:
        """The ideal CT-Inversion noiser: x_t -> x_T along the exact trajectory."""
        t = t.view((-1,) + (1,) * (x.ndim - 1)).to(x.dtype)
        return self.mu + (x - self.mu) * math.sqrt(self.s**2 + T**2) / torch.sqrt(self.s**2 + t**2)


@dataclass(frozen=True)
class GaussianMixture1D:
    """Equal-weight mixture of N(mu_k, s^2) on the line (report Figure 1, made smooth)."""

    means: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0)
    s: float = 0.1

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
        k = torch.randint(len(self.means), (n,), generator=generator)
        mu = torch.tensor(self.means, dtype=dtype)[k]
        return (mu + self.s * torch.randn(n, generator=generator, dtype=dtype))[:, None]

    def denoiser(self, x: torch.Tensor, t: torch.Tensor, labels=None) -> torch.Tensor:
        """E[x0 | x_t = x] for x of shape (B, 1)."""
        t = t.view(-1, 1).to(x.dtype)
        mu = torch.tensor(self.means, dtype=x.dtype, device=x.device)[None, :]
        var = self.s**2 + t**2
        logw = -((x - mu) ** 2) / (2 * var)
        w = torch.softmax(logw, dim=1)
        return ((self.s**2 * x + t**2 * mu) / var * w).sum(1, keepdim=True)

    def exact_endpoint(self, x_eps: torch.Tensor, eps: float = EPS, T: float = T_MAX, steps: int = 2000) -> torch.Tensor:
        """x_T of the PF-ODE through x_eps, by Heun on a fine Karras grid in float64."""
        sigmas = karras_sigmas(steps, eps, T)
        return ode_sample(self.denoiser, x_eps.double(), sigmas, method="heun").to(x_eps.dtype)
