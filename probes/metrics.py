"""Image and latent metrics: PSNR and SSIM (torchmetrics), LPIPS when its weights are found, latent statistics."""

from __future__ import annotations

import math

import numpy as np
import torch

from alignlearn.lpips import LpipsUnavailable, load_lpips, lpips_per_image


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR over the batch, images in [-1, 1] (data range 2)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(pred.float().clamp(-1, 1), target.float(), data_range=2.0, dim=(1, 2, 3), reduction="elementwise_mean"))


def ssim(pred: torch.Tensor, target: torch.Tensor, reduction: str = "elementwise_mean"):
    """SSIM of [-1, 1] images computed on [0, 1] (data range 1), the convention of the report and of
    torchmetrics' users: SSIM's stabilising constants assume that range, and on [-1, 1] it reads higher.
    11x11 Gaussian window, sigma 1.5; images smaller than the window use the largest odd window that fits.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    k = min(11, (min(pred.shape[-2:]) - 1) | 1)
    out = structural_similarity_index_measure(
        (pred.float().clamp(-1, 1) + 1) / 2, (target.float() + 1) / 2, gaussian_kernel=True, sigma=1.5, kernel_size=k,
        data_range=1.0, reduction=reduction,
    )
    return float(out) if reduction != "none" else out


class LPIPS:
    """LPIPS v0.1 (alex by default) when its weights can be found (alignlearn.lpips); `available` says whether,
    `source` where they came from, `reason` why not."""

    def __init__(self, net: str = "alex", weights: str | None = None):
        self.available, self._net, self.source, self.reason = False, None, "", ""
        try:
            self._net, self.source = load_lpips(net, weights)
            self.available = True
        except LpipsUnavailable as e:
            self.reason = str(e)

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> float | None:
        if not self.available:
            return None  # never a made-up value
        with torch.no_grad():
            return float(lpips_per_image(self._net, pred, target).mean())

    def describe(self) -> str:
        return f"available ({self.source})" if self.available else f"unavailable ({self.reason})"


def latent_stats(latents: torch.Tensor, T: float, images: torch.Tensor | None = None, max_values: int = 5000) -> dict:
    """Mean, std/T and a normality test (D'Agostino-Pearson) of latent/T. Descriptive only: the exact PF-ODE
    puts no latent energy where clean data never varies, so std/T = 1 is no target for clean images.

    With `images`, also the std of (latent - x0)/T, the noise the latent adds to its image.
    """
    from scipy import stats

    v = (latents.float() / T).flatten().cpu().numpy()
    sub = np.random.default_rng(0).choice(v, size=min(max_values, v.size), replace=False)
    test = stats.normaltest(sub) if sub.size >= 20 else None
    out = {
        "mean": float(v.mean() * T),
        "std_over_T": float(v.std()),
        "normaltest_stat": float(test.statistic) if test is not None else math.nan,
        "normaltest_p": float(test.pvalue) if test is not None else math.nan,
        "values_tested": int(sub.size),
    }
    if images is not None:
        out["noise_std_over_T"] = float(((latents.float() - images.float().to(latents.device)) / T).std())
    return out


def latent_agreement(latents: torch.Tensor, reference: torch.Tensor) -> dict:
    """How close latents are to reference latents of the same images: ||z - z_ref|| / ||z_ref|| over the set, and the
    mean per-image cosine similarity (0 for unrelated N(0, T^2 I) draws, 1 for the same direction)."""
    a, b = latents.flatten(1).double(), reference.flatten(1).double()
    return {"relative_l2": float((a - b).norm() / b.norm()),
            "cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=1).mean())}
