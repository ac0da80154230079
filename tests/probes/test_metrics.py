import socket

import pytest
import torch

from alignlearn.distances import make_distance
from alignlearn.errors import UserError
from alignlearn.probes.metrics import LPIPS, latent_agreement


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No cached torchvision weights and no name resolution, as on the machines without a network."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

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
