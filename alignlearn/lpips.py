"""LPIPS (Zhang et al. 2018, v0.1) through torchmetrics' modules, with weights that can be found offline.

Weights come from, in order: an explicit file (`--lpips-weights FILE`, or the ALIGNLEARN_LPIPS_WEIGHTS
environment variable), a safetensors file of the "alex" network with torchvision's AlexNet keys
(`features.{0,3,6,8,10}.*`) and the five linear heads (`lin.{0..4}.weight`); then torchvision's ImageNet
backbone from the torch hub cache or a download, with torchmetrics' bundled heads. Inputs are images in
[-1, 1]; grey images are repeated to three channels, images under 32 pixels a side upsampled to 32.
Nothing is faked: without weights LPIPS is unavailable.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch

from .errors import UserError

ENV = "ALIGNLEARN_LPIPS_WEIGHTS"
NETS = ("alex", "vgg")
# torchvision's AlexNet.features index of each convolution -> the torchmetrics Alexnet slice that holds it
_ALEX_SLICES = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}


class LpipsUnavailable(Exception):
    """No weights for LPIPS here; the message says why."""


def weights_file(explicit: str | Path | None = None) -> Path | None:
    path = explicit or os.environ.get(ENV) or None
    if path is None:
        return None
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"LPIPS weights {path} do not exist" + ("" if explicit else f" (from ${ENV})"))
    return path


def _from_file(path: Path) -> torch.nn.Module:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from torchmetrics.functional.image.lpips import _LPIPS

    net = _LPIPS(pretrained=False, net="alex", pnet_rand=True, use_dropout=False)  # random backbone: no download
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise UserError(f"cannot read LPIPS weights {path}: {e}") from None
    state = {}
    for key, value in tensors.items():
        parts = key.split(".")
        if parts[0] == "features" and int(parts[1]) in _ALEX_SLICES:
            state[f"net.slice{_ALEX_SLICES[int(parts[1])]}.{parts[1]}.{parts[2]}"] = value
        elif parts[0] == "lin":
            state[f"lin{parts[1]}.model.0.{parts[2]}"] = value
    expected = {k for k in net.state_dict() if k.startswith("net.") or (k.startswith("lin") and not k.startswith("lins."))}
    if set(state) != expected:
        raise UserError(f"{path} is not an LPIPS alex weights file (expected torchvision AlexNet features and lin.0-4)")
    net.load_state_dict(state, strict=False)  # lins.* alias lin0-4; the scaling layer's constants are buffers
    return net.eval().requires_grad_(False)


def _from_torchvision(net: str) -> torch.nn.Module:
    from urllib.parse import urlparse

    from torchvision.models import AlexNet_Weights, VGG16_Weights

    url = urlparse((AlexNet_Weights if net == "alex" else VGG16_Weights).DEFAULT.url)
    if not (Path(torch.hub.get_dir()) / "checkpoints" / Path(url.path).name).is_file():
        try:  # asked offline, torchvision prints a "Downloading" line before it fails: ask first
            socket.getaddrinfo(url.hostname, 443)
        except OSError as e:
            raise LpipsUnavailable(f"no --lpips-weights or ${ENV}, {net} weights not cached and {url.hostname} "
                                   f"unreachable ({e.strerror or e})") from None
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10)
    try:
        from torchmetrics.functional.image.lpips import _LPIPS

        return _LPIPS(pretrained=True, net=net).eval().requires_grad_(False)
    except Exception as e:  # noqa: BLE001 - weights that cannot be had mean "unavailable", never a fake
        raise LpipsUnavailable(f"torchvision could not provide the {net} weights: {type(e).__name__}") from None
    finally:
        socket.setdefaulttimeout(old)


def load_lpips(net: str = "alex", weights: str | Path | None = None) -> tuple[torch.nn.Module, str]:
    """(the LPIPS network, where its weights came from); LpipsUnavailable when there are none."""
    if net not in NETS:
        raise UserError(f"unknown LPIPS network {net!r}; choose from {', '.join(NETS)}")
    path = weights_file(weights)
    if path is not None:
        if net != "alex":
            raise UserError(f"LPIPS weights files hold the alex network; --lpips-net {net} needs torchvision's weights")
        return _from_file(path), f"alex, weights from {path}"
    return _from_torchvision(net), f"{net}, torchvision ImageNet weights"


MIN_SIZE = 32  # AlexNet's pooling needs at least 32 pixels a side


def lpips_per_image(net: torch.nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LPIPS of each image pair, images in [-1, 1]: grey repeated to RGB, images under 32 pixels a side
    (the 16x16 digits) upsampled bilinearly to 32 first, since AlexNet's pooling cannot take them."""
    def prepare(x):
        x = x.float().clamp(-1, 1)
        if min(x.shape[-2:]) < MIN_SIZE:
            scale = MIN_SIZE / min(x.shape[-2:])
            x = torch.nn.functional.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    net.to(a.device)
    return net(prepare(a), prepare(b), normalize=False).flatten()
