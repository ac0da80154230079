"""Noise levels and curricula of consistency training (Karras et al. 2022; Song et al. 2023; iCT).

Pure functions: the Karras discretisation, the step schedule N(k) and the
distribution P over adjacent index pairs (n, n+1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

EPS = 0.002
T_MAX = 80.0
RHO = 7.0
SIGMA_DATA = 0.5



@dataclass(frozen=True)
class NoiseLevels:
    """The VE noise range [eps, T] and the data scale sigma_data that a model and its objective share."""

    sigma_data: float = SIGMA_DATA
    eps: float = EPS
    T: float = T_MAX


STANDARD_NOISE = NoiseLevels()

STEP_SCHEDULES = ("ict", "cm")
SCALE_DISTRIBUTIONS = ("lognormal", "uniform")


def karras_sigmas(
    N: int,
    eps: float = EPS,
    T: float = T_MAX,
    rho: float = RHO,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Rising noise levels t_1 = eps < ... < t_N = T (Karras et al. 2022, Eq. 5).

    t_i = (eps^(1/rho) + (i-1)/(N-1) (T^(1/rho) - eps^(1/rho)))^rho
    """
    if N < 2:
        raise ValueError(f"karras_sigmas needs N >= 2, got {N}")
    i = torch.arange(N, dtype=torch.float64)
    lo, hi = eps ** (1 / rho), T ** (1 / rho)
    t = (lo + i / (N - 1) * (hi - lo)) ** rho
    # Pin the endpoints: the boundary conditions c_out(T) = 0, c_out(eps) = 0 must hold exactly.
    t[0], t[-1] = eps, T
    return t.to(dtype=dtype, device=device)


def segment_boundaries(K: int, eps: float = EPS, T: float = T_MAX, rho: float = RHO) -> torch.Tensor:
    """A K-segment noiser's boundaries eps = s_0 < s_1 < ... < s_K = T: the K+1-point Karras grid."""
    if K < 1:
        raise ValueError(f"a noiser needs at least 1 segment, got {K}")
    if K == 1:
        return torch.tensor([eps, T], dtype=torch.float64)
    return karras_sigmas(K + 1, eps, T, rho)


def with_boundaries(t: torch.Tensor, boundaries: torch.Tensor) -> torch.Tensor:
    """The rising grid t with the segment boundaries added, so that no adjacent pair straddles one.

    A Karras grid of N points already holds the boundaries of K segments when K divides N - 1;
    otherwise they are inserted (the pairs around each become shorter). A grid point within
    rounding of a boundary is replaced by it, so that the noiser sees the boundary's exact value.
    """
    b = boundaries.to(t.dtype)
    near = (t[:, None] - b[None]).abs() <= 1e-9 * b[None]
    return torch.sort(torch.cat([t[~near.any(1)], b])).values


def ict_steps(k: int, K: int, s0: int = 10, s1: int = 1280) -> int:
    """iCT's doubling schedule N(k) = min(s0 * 2^floor(k/K'), s1) + 1, K' = floor(K / (log2 floor(s1/s0) + 1))."""
    K_prime = max(1, math.floor(K / (math.log2(math.floor(s1 / s0)) + 1)))
    return min(s0 * 2 ** math.floor(k / K_prime), s1) + 1


def cm_steps(k: int, K: int, s0: int = 2, s1: int = 150) -> int:
    """The 2023 CM schedule N(k) = ceil(sqrt(k/K ((s1+1)^2 - s0^2) + s0^2) - 1) + 1."""
    return math.ceil(math.sqrt(k / K * ((s1 + 1) ** 2 - s0**2) + s0**2) - 1) + 1


# Each schedule's (s0, s1) as published: iCT (Song & Dhariwal 2023), CM (Song et al. 2023, CIFAR-10 CT).
SCHEDULE_DEFAULTS = {"ict": (10, 1280), "cm": (2, 150)}


def steps_at(k: int, K: int, schedule: str = "ict", s0: int | None = None, s1: int | None = None) -> int:
    """Number of discretisation points N(k) at training step k of K (held at N(K) after K)."""
    if schedule not in SCHEDULE_DEFAULTS:
        raise ValueError(f"unknown step schedule {schedule!r}; choose from {', '.join(STEP_SCHEDULES)}")
    d0, d1 = SCHEDULE_DEFAULTS[schedule]
    s0, s1 = s0 or d0, s1 or d1
    fn = ict_steps if schedule == "ict" else cm_steps
    return fn(min(k, K), K, s0, s1)


def index_probs(
    t: torch.Tensor, distribution: str = "lognormal", p_mean: float = -1.1, p_std: float = 2.0
) -> torch.Tensor:
    """P(n) over the N-1 adjacent pairs (t_n, t_{n+1}) of a rising schedule t.

    lognormal (iCT): P(n) ∝ erf((ln t_{n+1} - P_mean)/(√2 P_std)) - erf((ln t_n - P_mean)/(√2 P_std)),
    i.e. the mass a lognormal over t puts on [t_n, t_{n+1}). uniform: P(n) = 1/(N-1).
    """
    if distribution == "uniform":
        return torch.full((len(t) - 1,), 1.0 / (len(t) - 1), dtype=t.dtype, device=t.device)
    if distribution != "lognormal":
        raise ValueError(f"unknown scale distribution {distribution!r}; choose from {', '.join(SCALE_DISTRIBUTIONS)}")
    cdf = torch.erf((torch.log(t) - p_mean) / (math.sqrt(2.0) * p_std))
    mass = cdf[1:] - cdf[:-1]
    return mass / mass.sum()


def sample_indices(probs: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw n pair indices from P (with replacement), on probs' device and without a host sync."""
    return torch.multinomial(probs, n, replacement=True, generator=generator)


def lognormal_sigmas(
    n: int, p_mean: float, p_std: float, *, device=None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """EDM's training noise levels ln t ~ N(P_mean, P_std^2)."""
    return torch.exp(p_mean + p_std * torch.randn(n, device=device, generator=generator))
