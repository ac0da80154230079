"""Features of images from a noiser: its latents x_T, or pooled activations of a named block.

`NoiserFeatures` wraps them as a scikit-learn transformer, so a user can write
Pipeline([("features", NoiserFeatures("runs/noiser")), ("clf", LogisticRegression())]).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin

from alignlearn.errors import UserError
from alignlearn.models import load_model
from alignlearn.precond import Preconditioned
from alignlearn.samplers import encode

DEFAULT_BLOCK = "mid.res.1"  # the last ResBlock at the lowest resolution


def feature_network(model: Preconditioned) -> torch.nn.Module:
    """The network whose blocks are named: the backbone, or the diffusion network a warm-started one wraps
    (networks/warm_start.py), so `mid.res.1` names the same block either way."""
    return getattr(model.backbone, "inner", model.backbone)


def block_names(model: Preconditioned) -> list[str]:
    """Blocks whose pooled output can serve as features (names relative to feature_network)."""
    from alignlearn.networks.unet import AttnBlock, ResBlock

    return [name for name, m in feature_network(model).named_modules() if isinstance(m, (ResBlock, AttnBlock, torch.nn.Linear))]


@torch.no_grad()
def noiser_features(model: Preconditioned, images: torch.Tensor, labels: torch.Tensor | None, kind: str = "latent",
                    block: str = DEFAULT_BLOCK, batch_size: int = 256) -> np.ndarray:
    """(N, D) features: flattened latents f(x, eps), or the spatial mean of `block`'s output at t = eps."""
    if kind not in ("latent", "features"):
        raise UserError(f"unknown feature kind {kind!r}; choose latent or features")
    module = None
    if kind == "features":
        modules = {name: m for name, m in feature_network(model).named_modules() if name in block_names(model)}
        if block not in modules:
            raise UserError(f"unknown block {block!r}; choose from {', '.join(block_names(model))}")
        module = modules[block]
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device)
        y = labels[i : i + batch_size].to(device) if labels is not None else None
        if module is None:
            out.append(encode(model, x, eps=model.eps, labels=y).flatten(1).float().cpu())
            continue
        captured = []
        hook = module.register_forward_hook(lambda m, inp, o, sink=captured: sink.append(o))
        try:
            encode(model, x, eps=model.eps, labels=y)
        finally:
            hook.remove()
        h = captured[-1]
        out.append((h.mean(dim=(2, 3)) if h.ndim == 4 else h.flatten(1)).float().cpu())
    return torch.cat(out).numpy()


class NoiserFeatures(TransformerMixin, BaseEstimator):
    """scikit-learn transformer: images (N, C, H, W) or flattened (N, C*H*W), in [-1, 1] -> noiser features."""

    def __init__(self, run=None, kind: str = "latent", block: str = DEFAULT_BLOCK, device: str = "cpu", batch_size: int = 256):
        self.run, self.kind, self.block, self.device, self.batch_size = run, kind, block, device, batch_size

    def fit(self, X, y=None):
        self.model_, cfg = load_model(self.run, device=self.device)
        if self.model_.kind != "noiser":
            raise UserError(f"{self.run} holds a {self.model_.kind} model, not a noiser")
        self.shape_ = tuple(cfg.data.shape)
        return self

    def transform(self, X):
        x = torch.as_tensor(np.asarray(X, dtype=np.float32))
        if x.ndim == 2:
            x = x.reshape(-1, *self.shape_)
        if tuple(x.shape[1:]) != self.shape_:
            raise UserError(f"expected images of shape {self.shape_} (or flattened), got {tuple(x.shape[1:])}")
        return noiser_features(self.model_, x, None, self.kind, self.block, self.batch_size)
