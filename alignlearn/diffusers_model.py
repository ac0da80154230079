"""A pretrained diffusers model (UNet2DModel + a DDPM-family scheduler) as this toolkit's VE denoiser D(x, sigma).

Wherever a diffusion-model run is accepted (--dm, --decoder, --teacher), a diffusers folder is too: what
`DDPMPipeline.save_pretrained` writes (model_index.json, unet/, scheduler/), or a UNet2DModel folder with its
scheduler_config.json beside it or in scheduler/. k-diffusion's wrappers of external models are the pattern.

The identities. A VP model sees x_vp = sqrt(abar) x0 + sqrt(1 - abar) n at discrete timestep t; with
sigma = sqrt((1 - abar) / abar) the VE point is x = x_vp / sqrt(abar) = x0 + sigma n, so
    x_vp = x / sqrt(1 + sigma^2)                          (input scaling: abar = 1 / (1 + sigma^2))
    t(sigma): linear interpolation of the timestep in log sigma over the model's table
    epsilon:  D = x - sigma eps_hat
    v:        D = a x_vp - (sigma a) v_hat,  a = sqrt(abar) = 1 / sqrt(1 + sigma^2)   (v = a n - sigma a x0)
    sample:   D = x0_hat
An Euler step of dx/dsigma = (x - D) / sigma between two table levels is then exactly a deterministic DDIM
step (eta = 0) between those timesteps. The model's noise range [sigma(0), sigma(last)] becomes its eps and T.
The scheduler's clipping and thresholding are sampling choices, not part of the model, and are not applied.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .errors import UserError
from .objectives import ObjectiveConfig

SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "DDIMInverseScheduler", "PNDMScheduler")  # one alphas_cumprod recipe
PREDICTIONS = ("epsilon", "v_prediction", "sample")


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _folders(path: Path) -> tuple[Path, Path] | None:
    """(the UNet's folder, the scheduler's folder) of a diffusers model at path, or None when it is not one."""
    unet = path / "unet" if (path / "unet" / "config.json").is_file() else path
    cfg = _read(unet / "config.json")
    if not (path / "model_index.json").is_file() and not (cfg and "_class_name" in cfg):
        return None
    sched = path / "scheduler" if (path / "scheduler" / "scheduler_config.json").is_file() else unet
    return unet, sched


def is_diffusers_model(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and _folders(path) is not None


class DiffusersDenoiser(nn.Module):
    """D(x, sigma) of a VP epsilon-, v- or x0-prediction UNet2DModel, per the identities above."""

    kind = "edm"

    def __init__(self, unet: nn.Module, alphas_cumprod: torch.Tensor, prediction_type: str, sigma_data: float = 0.5):
        super().__init__()
        if prediction_type not in PREDICTIONS:
            raise UserError(f"prediction type {prediction_type!r} is not supported; choose from {', '.join(PREDICTIONS)}")
        abar = alphas_cumprod.double()
        if not bool((abar > 0).all() and (abar < 1).all()):
            raise UserError("the scheduler's alphas_cumprod must lie strictly in (0, 1) (zero-terminal-SNR schedules "
                            "have no finite T)")
        self.unet, self.prediction_type, self.sigma_data = unet, prediction_type, float(sigma_data)
        sigmas = ((1 - abar) / abar).sqrt()
        self.register_buffer("log_sigmas", sigmas.log().float(), persistent=False)
        self.eps, self.T = float(sigmas[0]), float(sigmas[-1])

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """The (fractional) timestep of each sigma: linear in log sigma between table entries, clamped to the table."""
        log_sigma = sigma.float().log()
        low = (log_sigma[None, :] >= self.log_sigmas[:, None]).sum(0).sub(1).clamp(0, len(self.log_sigmas) - 2)
        lo, hi = self.log_sigmas[low], self.log_sigmas[low + 1]
        w = ((log_sigma - lo) / (hi - lo)).clamp(0, 1)
        return low.float() + w

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, labels: torch.Tensor | None = None) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32).expand(x.shape[0])
        s = sigma.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        a = 1 / torch.sqrt(1 + s**2)
        out = self.unet(x * a, self.sigma_to_t(sigma)).sample.to(x.dtype)
        if self.prediction_type == "epsilon":
            return x - s * out
        if self.prediction_type == "v_prediction":
            return a * (a * x) - (s * a) * out
        return out


def load_diffusers(path: str | Path, device="cpu") -> tuple[DiffusersDenoiser, RunConfig]:
    """The adapter around a diffusers folder, in eval mode, and a run config that describes it."""
    path = Path(path)
    folders = _folders(path) if path.is_dir() else None
    if folders is None:
        raise UserError(f"{path} is not a diffusers model folder (no model_index.json, unet/ or UNet2DModel config.json)")
    try:
        import diffusers
    except ImportError:
        raise UserError(f"{path} is a diffusers model; install the extra: pip install 'alignlearn[diffusers]'") from None
    unet_dir, sched_dir = folders
    unet_cfg, sched_cfg = _read(unet_dir / "config.json"), _read(sched_dir / "scheduler_config.json")
    if unet_cfg is None or unet_cfg.get("_class_name") != "UNet2DModel":
        found = unet_cfg.get("_class_name") if unet_cfg else "nothing readable"
        raise UserError(f"{unet_dir / 'config.json'} holds {found}; only UNet2DModel is supported")
    if sched_cfg is None:
        raise UserError(f"{path} has no readable scheduler_config.json (beside the UNet or in scheduler/)")
    if sched_cfg.get("_class_name") not in SCHEDULERS:
        raise UserError(f"scheduler {sched_cfg.get('_class_name')!r} is not supported; choose from {', '.join(SCHEDULERS)}")
    prediction = sched_cfg.get("prediction_type", "epsilon")  # checked by DiffusersDenoiser
    if unet_cfg.get("num_class_embeds") or unet_cfg.get("class_embed_type"):
        raise UserError(f"{path} is class-conditional; only unconditional diffusers models are supported")
    try:
        scheduler = getattr(diffusers, sched_cfg["_class_name"]).from_config(sched_cfg)
        unet = diffusers.UNet2DModel.from_pretrained(str(unet_dir), low_cpu_mem_usage=False)  # no accelerate needed
    except (OSError, ValueError, NotImplementedError, KeyError) as e:
        raise UserError(f"cannot load the diffusers model in {path}: {type(e).__name__}: {str(e).splitlines()[0][:160]}") from None
    model = DiffusersDenoiser(unet.requires_grad_(False), scheduler.alphas_cumprod, prediction).to(device).eval()
    size = unet.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    shape = (int(unet.config.in_channels), int(h), int(w))
    cfg = RunConfig(ModelConfig("edm", {"arch": "diffusers", "path": str(path), "num_classes": 0,
                                        "prediction_type": prediction, "scheduler": sched_cfg["_class_name"]},
                                sigma_data=model.sigma_data, eps=model.eps, T=model.T),
                    ObjectiveConfig("edm"), DataConfig(name="", shape=shape), TrainConfig())
    return model, cfg
