import socket

import pytest
import torch

from alignlearn.distances import make_distance
from alignlearn.errors import UserError
from alignlearn.probes.metrics import LPIPS, latent_agreement

from ..core.helpers import SHARED_LPIPS


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No cached torchvision weights and no name resolution, as on the machines without a network."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.delenv("ALIGNLEARN_LPIPS_WEIGHTS", raising=False)

    def no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)


def test_lpips_offline_is_unavailable_without_a_download_attempt(offline, capsys):
    lpips = LPIPS()
    assert not lpips.available and "unreachable" in lpips.reason and "download.pytorch.org" in lpips.reason
    assert lpips(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)) is None  # never a made-up value
    assert "Downloading" not in capsys.readouterr().err


def test_lpips_distance_offline_is_one_clear_error(offline):
    with pytest.raises(UserError, match="LPIPS distance unavailable .*unreachable.*use pseudo-huber"):
        make_distance("lpips", 256)


def test_latent_agreement_on_known_geometry():
    z = torch.randn(8, 1, 4, 4)
    same, flipped = latent_agreement(z, z), latent_agreement(-z, z)
    assert same == {"relative_l2": 0.0, "cosine": 1.0}
    assert abs(flipped["relative_l2"] - 2) < 1e-12 and abs(flipped["cosine"] + 1) < 1e-12
    a, b = torch.zeros(2, 4), torch.zeros(2, 4)
    a[:, 0], b[:, 1] = 3.0, 4.0  # orthogonal: ||a - b|| = 5, ||b|| = 4
    assert latent_agreement(a, b) == {"relative_l2": 1.25, "cosine": 0.0}


def reference_ssim(a, b, data_range=1.0, k1=0.01, k2=0.03, size=11, sigma=1.5):
    """Wang et al. (2004): Gaussian-weighted means, population (co)variances; the map averaged over the whole
    image with reflection-padded borders, as torchmetrics does (scikit-image averages the interior only)."""
    import numpy as np
    from scipy.signal import correlate2d

    r = np.arange(size) - size // 2
    w = np.exp(-(r**2) / (2 * sigma**2))
    w = np.outer(w, w) / np.outer(w, w).sum()
    f = lambda x: correlate2d(np.pad(x, size // 2, mode="reflect"), w, mode="valid")  # noqa: E731
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_a, mu_b = f(a), f(b)
    va, vb, cov = f(a * a) - mu_a**2, f(b * b) - mu_b**2, f(a * b) - mu_a * mu_b
    return float((((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))).mean())


def test_ssim_is_the_conventional_one_on_zero_one_images():
    """Images in [-1, 1] are compared as [0, 1] images with data range 1, as the report and its peers do."""
    from alignlearn.probes.metrics import ssim

    g = torch.Generator().manual_seed(0)
    target = torch.rand(1, 1, 24, 24, generator=g) * 2 - 1
    pred = (target + 0.3 * torch.randn(1, 1, 24, 24, generator=g)).clamp(-1, 1)
    expected = reference_ssim(((pred[0, 0] + 1) / 2).double().numpy(), ((target[0, 0] + 1) / 2).double().numpy())
    assert abs(ssim(pred, target) - expected) < 1e-4
    assert ssim(target, target) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.skipif(not (SHARED_LPIPS / "lpips_alex.safetensors").is_file(),
                    reason="../shared/lpips (offline LPIPS alex weights) is not beside this checkout")
def test_lpips_alex_from_the_offline_weights_reproduces_the_reference_distances():
    import numpy as np
    from PIL import Image

    def image(name):
        a = np.asarray(Image.open(SHARED_LPIPS / name).convert("RGB"), dtype=np.float32)
        return torch.from_numpy(a).permute(2, 0, 1)[None] / 127.5 - 1

    lpips = LPIPS(weights=str(SHARED_LPIPS / "lpips_alex.safetensors"))
    assert lpips.available and "lpips_alex.safetensors" in lpips.source
    ref, p0, p1 = image("ex_ref.png"), image("ex_p0.png"), image("ex_p1.png")
    assert abs(lpips(ref, p0) - 0.7219) < 1e-3 and abs(lpips(ref, p1) - 0.1376) < 1e-3  # the LPIPS repository's
    assert lpips(p0, ref) == pytest.approx(lpips(ref, p0), abs=1e-6)  # symmetric
    assert lpips(ref, ref) == 0.0
    grey = ref.mean(1, keepdim=True)  # 1 channel: repeated to RGB, the same as the RGB grey image
    assert lpips(grey, p0.mean(1, keepdim=True)) == pytest.approx(lpips(grey.expand(-1, 3, -1, -1), p0.mean(1, keepdim=True).expand(-1, 3, -1, -1)), abs=1e-6)
    small = torch.rand(2, 1, 16, 16) * 2 - 1  # digits-sized images are upsampled to 32 first
    assert lpips(small, small) == 0.0 and lpips(small, -small) > 0


def test_a_bad_lpips_weights_file_is_one_clear_error(tmp_path, monkeypatch):
    from alignlearn.lpips import load_lpips

    with pytest.raises(UserError, match="do not exist"):
        load_lpips(weights=tmp_path / "none.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="cannot read LPIPS weights"):
        load_lpips(weights=tmp_path / "bad.safetensors")
    monkeypatch.setenv("ALIGNLEARN_LPIPS_WEIGHTS", str(tmp_path / "gone.safetensors"))
    with pytest.raises(UserError, match="ALIGNLEARN_LPIPS_WEIGHTS"):
        load_lpips()
