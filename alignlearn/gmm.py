"""Ground truth shaped like images: a Gaussian mixture in pixel space fitted to the embedded digits.

One component per class: the class's mean, its sample covariance plus FLOOR^2 I, the class frequency as
weight. With S_k = U_k diag(lam_k) U_k^T (lam_k including the floor), the noised density is
p_t(x) = sum_k pi_k N(x; mu_k, S_k + t^2 I) and

    E[x0 | x_t, k] = mu_k + U_k diag(lam_k / (lam_k + t^2)) U_k^T (x_t - mu_k),
    D(x_t, t)      = sum_k w_k(x_t, t) E[x0 | x_t, k],  w = softmax_k(log pi_k + log N(x_t; mu_k, S_k + t^2 I)).

A class label makes w one-hot, and the conditional flow from level a to b is closed-form:
x_b - mu = U diag(sqrt((lam + b^2) / (lam + a^2))) U^T (x_a - mu). The unconditional endpoint is
integrated (RK4 in s = ln t, where dx/ds = x - D(x, t)), its error bounded by halving the step.

The digits are upsampled 8x8 images, so each class covariance has rank at most 64 of 256: every
component is stored as its rank-r eigenbasis plus the isotropic floor, which is exact and fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf

from .schedule import EPS, T_MAX

FLOOR = 0.02  # std of the variance floor: about the size of fine image detail
PRINCIPAL_FACTOR = 4.0  # principal subspace: mixture-covariance eigenvalues above 4 FLOOR^2
SAMPLE_SEED = 0
TRAIN_SAMPLES, TEST_SAMPLES = 8000, 2000


@dataclass
class GaussianMixture:
    """Components k: weight pi[k], mean mu[k] (D,), eigenbasis U[k] (D, r) with eigenvalues lam[k] (r,) above
    the floor variance floor2, which holds in the complement of U[k]. Float64 throughout."""

    pi: torch.Tensor
    mu: torch.Tensor
    U: list[torch.Tensor]
    lam: list[torch.Tensor]
    floor2: float
    shape: tuple[int, ...]

    @classmethod
    def fit(cls, images: torch.Tensor, labels: torch.Tensor, num_classes: int, floor: float = FLOOR) -> GaussianMixture:
        x = images.double().flatten(1)
        pi, mu, U, lam = [], [], [], []
        for k in range(num_classes):
            xk = x[labels == k]
            m = xk.mean(0)
            cov = (xk - m).T @ (xk - m) / (len(xk) - 1)  # the sample covariance
            evals, evecs = torch.linalg.eigh(cov)
            keep = evals > 1e-9 * evals.max()  # the class's span; the rest is the floor alone
            pi.append(len(xk) / len(x))
            mu.append(m)
            U.append(evecs[:, keep].contiguous())
            lam.append(evals[keep] + floor**2)
        return cls(torch.tensor(pi, dtype=torch.float64), torch.stack(mu), U, lam, floor**2, tuple(images.shape[1:]))

    @property
    def dim(self) -> int:
        return self.mu.shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.pi)

    def __post_init__(self):
        # The bases padded to one rank r and laid side by side, so that a batch needs two matrix products:
        # U (D, K r), lam (K, r), real columns mask (K, r); padded columns are zero and contribute nothing.
        r = max(len(lam) for lam in self.lam)
        U = torch.zeros(self.num_classes, self.dim, r, dtype=torch.float64)
        self._lam = torch.full((self.num_classes, r), self.floor2, dtype=torch.float64)
        self._mask = torch.zeros(self.num_classes, r, dtype=torch.bool)
        for k, (u, lam) in enumerate(zip(self.U, self.lam)):
            U[k, :, : len(lam)], self._lam[k, : len(lam)], self._mask[k, : len(lam)] = u, lam, True
        self._U = U.permute(1, 0, 2).reshape(self.dim, -1)
        self._muU = torch.einsum("kd,kdr->kr", self.mu, U)  # each mean in its own class's basis
        self._rank = self._mask.sum(1).double()

    def denoiser(self, x: torch.Tensor, t: torch.Tensor | float, labels: torch.Tensor | None = None) -> torch.Tensor:
        """E[x0 | x_t] (or E[x0 | x_t, label]; a label equal to num_classes is the null label: the mixture).

        With v = x - mu_k, c = U_k^T v and a = floor^2 / (floor^2 + t^2), each component's mean is
        mu_k + a v + U_k ((lam / (lam + t^2) - a) c), and ||v - U_k c||^2 = ||v||^2 - ||c||^2.
        """
        flat = x.double().flatten(1)
        B, K = len(flat), self.num_classes
        t2 = torch.as_tensor(t, dtype=torch.float64, device=x.device).expand(B).reshape(B, 1, 1) ** 2
        c = (flat @ self._U).view(B, K, -1) - self._muU[None]  # (B, K, r)
        v2 = (flat**2).sum(1, keepdim=True) - 2 * flat @ self.mu.T + (self.mu**2).sum(1)[None]  # ||x - mu_k||^2
        c2 = (c**2).sum(2)
        lam, tt = self._lam[None], t2[:, :, 0]
        maha = (c**2 / (lam + t2)).sum(2) + (v2 - c2).clamp(min=0) / (self.floor2 + tt)
        logdet = (torch.log(lam + t2) * self._mask[None]).sum(2) + (self.dim - self._rank[None]) * torch.log(self.floor2 + tt)
        w = torch.softmax(torch.log(self.pi)[None] - 0.5 * (maha + logdet), dim=1)  # (B, K); constants cancel
        if labels is not None:
            given = (labels < K)[:, None]
            w = torch.where(given, nnf.one_hot(labels.clamp(max=K - 1), K).double(), w)
        a = self.floor2 / (self.floor2 + tt)  # (B, 1)
        coef = w[:, :, None] * c * (lam / (lam + t2) - a[:, :, None])
        out = a * flat + (1 - a) * (w @ self.mu) + coef.reshape(B, -1) @ self._U.T
        return out.view(x.shape).to(x.dtype)

    def conditional_flow(self, x_a: torch.Tensor, a: float, b: float, labels: torch.Tensor) -> torch.Tensor:
        """The exact PF-ODE map from level a to b under each image's own component (closed form)."""
        flat, out = x_a.double().flatten(1), torch.empty(len(x_a), self.dim, dtype=torch.float64)
        for k in range(self.num_classes):
            rows = labels == k
            v = flat[rows] - self.mu[k]
            c = v @ self.U[k]
            scale = torch.sqrt((self.lam[k] + b**2) / (self.lam[k] + a**2))
            rest_scale = math.sqrt((self.floor2 + b**2) / (self.floor2 + a**2))
            out[rows] = self.mu[k] + (c * scale) @ self.U[k].T + rest_scale * (v - c @ self.U[k].T)
        return out.view(x_a.shape).to(x_a.dtype)

    def flow(self, x_a: torch.Tensor, a: float, b: float, steps: int = 256, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The PF-ODE map from level a to b: RK4 on dx/ds = x - D(x, e^s), s = ln t, in float64."""
        x = x_a.double()
        s, h = math.log(a), (math.log(b) - math.log(a)) / steps

        def f(x, s):
            return x - self.denoiser(x, math.exp(s), labels)

        for _ in range(steps):
            k1 = f(x, s)
            k2 = f(x + h / 2 * k1, s + h / 2)
            k3 = f(x + h / 2 * k2, s + h / 2)
            k4 = f(x + h * k3, s + h)
            x, s = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), s + h
        return x.to(x_a.dtype)

    def exact_endpoint(self, x0: torch.Tensor, labels: torch.Tensor | None = None, eps: float = EPS, T: float = T_MAX,
                       steps: int = 256) -> tuple[torch.Tensor, float]:
        """(x_T of each clean image taken as x_eps, the solver's error bound: the largest relative change of an
        endpoint when the step is halved; 0 for the closed-form conditional flow). Float64."""
        if labels is not None:
            return self.conditional_flow(x0.double(), eps, T, labels), 0.0
        coarse, fine = self.flow(x0, eps, T, steps), self.flow(x0, eps, T, 2 * steps)
        change = ((fine - coarse).flatten(1).norm(dim=1) / fine.flatten(1).norm(dim=1)).max().item()
        return fine.double(), change

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n images (float32, the digits' shape) and their components as labels."""
        labels = torch.multinomial(self.pi, n, replacement=True, generator=generator)
        x = torch.empty(n, self.dim, dtype=torch.float64)
        for k in range(self.num_classes):
            rows = labels == k
            m = int(rows.sum())
            span = torch.randn(m, len(self.lam[k]), generator=generator, dtype=torch.float64)
            white = torch.randn(m, self.dim, generator=generator, dtype=torch.float64)
            rest = white - (white @ self.U[k]) @ self.U[k].T  # floor noise in the complement of the span
            x[rows] = self.mu[k] + (span * self.lam[k].sqrt()) @ self.U[k].T + math.sqrt(self.floor2) * rest
        return x.view(n, *self.shape).float(), labels

    def covariance(self) -> torch.Tensor:
        """The mixture's covariance sum_k pi_k (S_k + mu_k mu_k^T) - mean mean^T."""
        mean = (self.pi[:, None] * self.mu).sum(0)
        cov = -torch.outer(mean, mean)
        for k in range(self.num_classes):
            S = (self.U[k] * (self.lam[k] - self.floor2)) @ self.U[k].T + self.floor2 * torch.eye(self.dim, dtype=torch.float64)
            cov += self.pi[k] * (S + torch.outer(self.mu[k], self.mu[k]))
        return cov

    def principal_basis(self) -> torch.Tensor:
        """(D, r): eigenvectors of the mixture covariance with eigenvalue above PRINCIPAL_FACTOR floor^2."""
        return principal_basis_of(self.covariance(), self.floor2)


def principal_basis_of(cov: torch.Tensor, floor2: float = FLOOR**2) -> torch.Tensor:
    evals, evecs = torch.linalg.eigh(cov.double())
    return evecs[:, evals > PRINCIPAL_FACTOR * floor2].contiguous()


_DIGITS_GMM: GaussianMixture | None = None


def digits_mixture() -> GaussianMixture:
    """The mixture fitted to all 1,797 embedded digits as `--data digits` prepares them (cached)."""
    global _DIGITS_GMM
    if _DIGITS_GMM is None:
        from .data import load_digits

        train, test = load_digits()
        images, labels = torch.cat([train.images, test.images]), torch.cat([train.labels, test.labels])
        _DIGITS_GMM = GaussianMixture.fit(images, labels, 10)
    return _DIGITS_GMM


EXACT = {"gmm-digits": digits_mixture}  # data sets whose PF-ODE endpoint is known


def exact_mixture(data_name: str) -> GaussianMixture | None:
    """The exact model behind a data set, or None when its PF-ODE endpoint is not known."""
    return EXACT[data_name]() if data_name in EXACT else None
