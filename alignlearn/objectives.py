"""Training objectives with one call signature: loss(model, target_model, x0, labels, step) -> per-sample loss.

Settings live in the constructor; the curriculum is explicit state derived from the
step (EDM/ECT style). `ct-inversion` is the report's Algorithm 1, `ct` is consistency
training of a denoiser (Song et al. 2023; iCT), `edm` is EDM's denoising loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .distances import make_distance
from .errors import UserError
from .samplers import ode_step
from .schedule import (RHO, STANDARD_NOISE, NoiseLevels, index_probs, karras_sigmas, lognormal_sigmas, sample_indices,
                       segment_boundaries, steps_at, with_boundaries)

OBJECTIVES = ("ct-inversion", "cd-inversion", "ct", "edm")
TEACHER_SOLVERS = ("euler", "heun")
WEIGHTINGS = ("inverse-dt", "uniform")
TARGETS = ("stopgrad", "ema")

# Each objective's recipe defaults. `ct` is iCT's (Song & Dhariwal 2023). `edm` is EDM's
# lognormal over t. `ct-inversion` departs from iCT where measurement says so (RESULTS.md,
# 1-D mixture toy): 1/(t_{n+1}-t_n) and the lognormal P put almost all gradient on low
# noise levels, while the noiser's boundary condition enters at T, so the plain recipe
# never propagated it (median |f - x_T|/T 0.65, no better than f = x); uniform weighting,
# uniform P and an EMA target (mu 0.95, for stability) reached 0.04.
RECIPE_DEFAULTS = {
    "ct": dict(scale_distribution="lognormal", p_mean=-1.1, p_std=2.0, weighting="inverse-dt", target="stopgrad", target_ema=0.999),
    "ct-inversion": dict(scale_distribution="uniform", p_mean=-1.1, p_std=2.0, weighting="uniform", target="ema", target_ema=0.95),
    "cd-inversion": dict(scale_distribution="uniform", p_mean=-1.1, p_std=2.0, weighting="uniform", target="ema", target_ema=0.95),
    "edm": dict(scale_distribution="lognormal", p_mean=-1.2, p_std=1.2, weighting="uniform", target="stopgrad", target_ema=0.999),
}



def recipe_default_text(key: str) -> str:
    """Each objective's default for the recipe knob `key`, grouped by value: for --help, which reads them here."""
    by_value: dict = {}
    for name, defaults in RECIPE_DEFAULTS.items():
        by_value.setdefault(defaults[key], []).append(name)
    return ", ".join(f"{'/'.join(names)} {value}" for value, names in by_value.items())


# Which preconditioning each objective trains.
PARAMETERISATION_OF = {"ct-inversion": "noiser", "cd-inversion": "noiser", "ct": "cm", "edm": "edm"}


@dataclass
class ObjectiveConfig:
    name: str = "ct-inversion"
    step_schedule: str = "ict"
    s0: int | None = None
    s1: int | None = None
    scale_distribution: str | None = None
    p_mean: float | None = None
    p_std: float | None = None
    distance: str = "pseudo-huber"
    huber_c: float | None = None
    weighting: str | None = None
    target: str | None = None
    target_ema: float | None = None
    rho: float = RHO
    curriculum_steps: int | None = None
    teacher: str | None = None  # cd-inversion: the diffusion-model run whose PF-ODE step replaces the shared z
    teacher_solver: str = "euler"  # cd-inversion: the teacher's step, euler or heun (second order, 2 NFE)
    teacher_steps: int = 1  # cd-inversion: teacher steps per pair, (t_n, t_{n+k}); clipped at a segment boundary
    encode_mass: float = 0.0  # noisers: extra probability on the pairs that start where encoding evaluates f

    def __post_init__(self):
        if self.name not in OBJECTIVES:
            raise UserError(f"unknown objective {self.name!r}; choose from {', '.join(OBJECTIVES)}")
        for key, value in RECIPE_DEFAULTS[self.name].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.teacher_solver not in TEACHER_SOLVERS:
            raise UserError(f"unknown teacher solver {self.teacher_solver!r}; choose from {', '.join(TEACHER_SOLVERS)}")
        for name in ("s0", "s1", "curriculum_steps", "teacher_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.encode_mass < 1.0:
            raise UserError(f"--encode-mass must be in [0, 1), got {self.encode_mass}")
        if not 0.0 <= self.target_ema < 1.0:
            raise UserError(f"--target-ema must be in [0, 1), got {self.target_ema}")
        for name in ("p_mean", "p_std", "huber_c", "rho"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and (name == "p_mean" or value > 0)):
                raise UserError(f"--{name.replace('_', '-')} must be a finite{'' if name == 'p_mean' else ' positive'} number, got {value}")
        if self.weighting not in WEIGHTINGS:
            raise UserError(f"unknown weighting {self.weighting!r}; choose from {', '.join(WEIGHTINGS)}")
        if self.target not in TARGETS:
            raise UserError(f"unknown target network {self.target!r}; choose from {', '.join(TARGETS)}")


def _replay_rng(device: torch.device):
    """Fork the RNG so the target pass and the online pass draw the same dropout mask (iCT)."""
    if device.type == "cpu":
        return torch.random.fork_rng(devices=[])
    return torch.random.fork_rng(devices=[device.index or 0], device_type=device.type)


def _upload(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy to `device` without making the host wait: a plain copy from pageable memory drains the GPU's
    queue (benchmarks/host_syncs.py found it at every change of N(k) on an H100)."""
    if device.type == "cuda":
        try:
            return x.pin_memory().to(device, non_blocking=True)
        except RuntimeError:  # no page-locked memory to be had (a locked-memory limit): one blocking copy per N(k)
            pass
    return x.to(device)


class ConsistencyPairLoss:
    """Shared by `ct` and `ct-inversion`: Algorithm 1's adjacent pair on one trajectory.

    x_n = x0 + t_n z and x_{n+1} = x_n + (t_{n+1} - t_n)(x_n - x0)/t_n, which equals x0 + t_{n+1} z.
    Subclasses choose which of the two points is the target.
    """

    def __init__(self, cfg: ObjectiveConfig, total_steps: int, data_dim: int, noise: NoiseLevels = STANDARD_NOISE):
        # The curriculum may reach its final N before training ends (short budgets).
        self.cfg, self.noise, self.total_steps = cfg, noise, cfg.curriculum_steps or total_steps
        steps_at(0, total_steps, cfg.step_schedule, cfg.s0, cfg.s1)  # validate the schedule name
        self.distance = make_distance(cfg.distance, data_dim, cfg.huber_c)
        self._grids: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
        self.boundaries: torch.Tensor | None = None  # a multi-segment noiser's s_0..s_K, part of every grid

    def num_steps(self, step: int) -> int:
        return steps_at(step, self.total_steps, self.cfg.step_schedule, self.cfg.s0, self.cfg.s1)

    def grid(self, step: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(t_1..t_N, P over pairs) for the curriculum's N(k), cached per N: N changes rarely."""
        N = self.num_steps(step)
        key = (N, device)
        if key not in self._grids:
            c = self.cfg
            t = karras_sigmas(N, self.noise.eps, self.noise.T, c.rho)
            if self.boundaries is not None:
                t = with_boundaries(t, self.boundaries)
            p = index_probs(t, c.scale_distribution, c.p_mean, c.p_std)
            if c.encode_mass:
                p = self.with_encode_mass(t, p, c.encode_mass)
            self._grids[key] = (_upload(t.float(), device), _upload(p.float(), device))
        return self._grids[key]

    def pair(self, x0: torch.Tensor, step: int, labels=None):
        """Sample (t_n, t_{n+1}, x_n, x_{n+1}) as in Algorithm 1."""
        t, p = self.grid(step, x0.device)
        n = sample_indices(p, x0.shape[0])
        shape = (-1,) + (1,) * (x0.ndim - 1)
        t_n, t_n1 = t[n], t[n + 1]
        z = torch.randn_like(x0)
        x_n = x0 + t_n.view(shape) * z
        x_n1 = x_n + (t_n1 - t_n).view(shape) * (x_n - x0) / t_n.view(shape)  # Euler step with the one-sample score
        return t_n, t_n1, x_n, x_n1

    def weight(self, t_n: torch.Tensor, t_n1: torch.Tensor) -> torch.Tensor:
        return 1.0 / (t_n1 - t_n) if self.cfg.weighting == "inverse-dt" else torch.ones_like(t_n)

    def online_and_target(self, x_n, x_n1, t_n, t_n1):
        raise NotImplementedError

    def at_boundaries(self, target, x_tg, t_tg):
        return target

    def with_encode_mass(self, t: torch.Tensor, p: torch.Tensor, mass: float) -> torch.Tensor:
        """P moved by `mass` onto the pairs starting at the levels encoding evaluates (eps, inner boundaries):
        encoding reads f only there, while a fine grid gives each of them 1/(N-1) of the pairs."""
        levels = t[:1] if self.boundaries is None else self.boundaries[:-1].to(t)
        starts = (t[:-1, None] == levels[None]).any(1)
        return (1 - mass) * p + mass * starts.to(p) / starts.sum()

    # Scale that brings both outputs to unit scale before d, so that the pseudo-Huber c means what iCT tuned.
    output_scale = 1.0

    def __call__(self, model: nn.Module, target_model: nn.Module, x0: torch.Tensor, labels, step: int) -> torch.Tensor:
        t_n, t_n1, x_n, x_n1 = self.pair(x0, step, labels)
        (x_on, t_on), (x_tg, t_tg) = self.online_and_target(x_n, x_n1, t_n, t_n1)
        with torch.no_grad(), _replay_rng(x0.device):
            target = target_model(x_tg, t_tg, labels).float()
        target = self.at_boundaries(target, x_tg, t_tg)
        online = model(x_on, t_on, labels).float()
        d = self.distance(online * self.output_scale, target * self.output_scale)
        return self.weight(t_n, t_n1) * d


class CTInversionLoss(ConsistencyPairLoss):
    """Algorithm 1: the higher noise level x_{n+1} is the target, f(x_T, T) = x_T anchors the chain.

    A K-segment noiser (noise.segments) has a boundary condition at every s_k: a pair ending on a
    boundary takes x_{n+1} itself as its target, since f(x, s_k) already maps on to s_{k+1}.
    """

    def __init__(self, cfg: ObjectiveConfig, total_steps: int, data_dim: int, noise: NoiseLevels = STANDARD_NOISE):
        super().__init__(cfg, total_steps, data_dim, noise)
        self.output_scale = 1.0 / math.sqrt(noise.T**2 + noise.sigma_data**2)
        segments = getattr(noise, "segments", 1)
        if segments > 1:
            self.boundaries = segment_boundaries(segments, noise.eps, noise.T, cfg.rho)
        self._inner: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def online_and_target(self, x_n, x_n1, t_n, t_n1):
        return (x_n, t_n), (x_n1, t_n1)

    def at_boundaries(self, target, x_tg, t_tg):
        if self.boundaries is None:
            return target
        key = (t_tg.device, t_tg.dtype)
        if key not in self._inner:  # uploaded once: a copy from host memory each step would wait for the GPU
            self._inner[key] = self.boundaries[1:-1].to(t_tg)
        on_boundary = (t_tg[:, None] == self._inner[key][None]).any(1)
        return torch.where(on_boundary.view((-1,) + (1,) * (target.ndim - 1)), x_tg.to(target.dtype), target)

    def segment_stops(self, t: torch.Tensor) -> torch.Tensor:
        """For each pair start n, the grid index of the next boundary above t_n (N-1, i.e. T, with one segment)."""
        is_stop = torch.zeros(len(t), dtype=torch.bool, device=t.device)
        is_stop[-1] = True
        if self.boundaries is not None:
            is_stop |= (t[:, None] == self.boundaries.to(t)[None]).any(1)
        stops = torch.nonzero(is_stop).flatten()
        n = torch.arange(len(t) - 1, device=t.device)
        return stops[torch.searchsorted(stops, n, right=True)]


class CTLoss(ConsistencyPairLoss):
    """Consistency training: the lower noise level x_n is the target, f(x_eps, eps) = x_eps anchors it."""

    def online_and_target(self, x_n, x_n1, t_n, t_n1):
        return (x_n1, t_n1), (x_n, t_n)


class EDMLoss:
    """EDM: lambda(t) ||D(x0 + t n, t) - x0||^2 with ln t ~ N(P_mean, P_std^2), lambda = (t^2 + σ_d^2)/(t σ_d)^2."""

    def __init__(self, cfg: ObjectiveConfig, total_steps: int, data_dim: int, noise: NoiseLevels = STANDARD_NOISE):
        self.cfg, self.noise = cfg, noise

    def num_steps(self, step: int) -> int:
        return 0

    def __call__(self, model: nn.Module, target_model: nn.Module, x0: torch.Tensor, labels, step: int) -> torch.Tensor:
        c, sigma_data = self.cfg, self.noise.sigma_data
        t = lognormal_sigmas(x0.shape[0], c.p_mean, c.p_std, device=x0.device)
        x_t = x0 + t.view((-1,) + (1,) * (x0.ndim - 1)) * torch.randn_like(x0)
        weight = (t**2 + sigma_data**2) / (t * sigma_data) ** 2
        D = model(x_t, t, labels).float()
        return weight * (D - x0).flatten(1).pow(2).mean(1)


class CDInversionLoss(CTInversionLoss):
    """Distillation for the inverse direction: x_{n+1} is a step of the PF-ODE up from x_n with a trained
    diffusion denoiser D, Euler x_{n+1} = x_n + (t_{n+1} - t_n)(x_n - D(x_n, t_n))/t_n or Heun, instead of
    Algorithm 1's one-sample estimate (x_n - x0)/t_n. Lower variance, at the cost of needing D (iCD).

    With teacher_steps k the pair is (t_n, t_m), m = n + k, reached by k teacher steps along the grid, so
    that the boundary condition crosses k intervals per alignment; m stops at the next segment boundary.
    """

    def __init__(self, cfg: ObjectiveConfig, total_steps: int, data_dim: int, teacher: nn.Module | None = None,
                 noise: NoiseLevels = STANDARD_NOISE):
        super().__init__(cfg, total_steps, data_dim, noise)
        if teacher is None:
            raise UserError("cd-inversion needs --teacher: a trained diffusion-model (edm) run")
        self.teacher = teacher
        self._stops: dict[tuple[int, torch.device], torch.Tensor] = {}

    def pair(self, x0: torch.Tensor, step: int, labels=None):
        t, p = self.grid(step, x0.device)
        key = (len(t), x0.device)
        if key not in self._stops:
            self._stops[key] = self.segment_stops(t)
        n = sample_indices(p, x0.shape[0])
        m = torch.minimum(n + self.cfg.teacher_steps, self._stops[key][n])
        x_n = x0 + t[n].view((-1,) + (1,) * (x0.ndim - 1)) * torch.randn_like(x0)
        x = x_n
        with torch.no_grad():
            for j in range(self.cfg.teacher_steps):  # a pair that has reached t_m steps by zero
                a, b = t[torch.minimum(n + j, m)], t[torch.minimum(n + j + 1, m)]
                x = ode_step(self.teacher, x, a, b, labels, self.cfg.teacher_solver)
        return t[n], t[m], x_n, x


LOSSES = {"ct-inversion": CTInversionLoss, "cd-inversion": CDInversionLoss, "ct": CTLoss, "edm": EDMLoss}


def build_objective(cfg: ObjectiveConfig, total_steps: int, data_dim: int, teacher: nn.Module | None = None,
                    noise: NoiseLevels = STANDARD_NOISE):
    """The loss of `cfg`; `noise` (sigma_data, eps, T) is the trained model's, e.g. a run's ModelConfig."""
    if cfg.name == "cd-inversion":
        return CDInversionLoss(cfg, total_steps, data_dim, teacher, noise)
    return LOSSES[cfg.name](cfg, total_steps, data_dim, noise)
