"""CIFAR-10 runs through the CLI: train on the JPEG copy, reconstruct with the four pairings and LPIPS, and
one error line for RGB data given to a 1-channel model or a CIFAR noiser paired with a digits decoder."""

import pytest

from ..core.helpers import SHARED_LPIPS, assert_one_error_line, run_cli
from ..core.test_cifar10 import SHARED, needs_copy

LPIPS_WEIGHTS = SHARED_LPIPS / "lpips_alex.safetensors"


@pytest.fixture(scope="module")
def cifar_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar_runs")
    for role, objective in (("noiser", "ct-inversion"), ("cm", "ct"), ("dm", "edm")):
        proc = run_cli("train", "--data", "cifar10", "--data-dir", SHARED, "--preset", "tiny", "--objective", objective,
                       "--steps", "3", "--batch-size", "8", "--quiet", "--out", root / role)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return {role: root / role for role in ("noiser", "cm", "dm")}


@needs_copy
@pytest.mark.skipif(not LPIPS_WEIGHTS.is_file(), reason="../shared/lpips/lpips_alex.safetensors is not beside this checkout")
def test_probe_recon_on_cifar_runs_prints_the_four_pairings_with_lpips(cifar_runs, tmp_path):
    proc = run_cli("probe", "recon", "--noiser", cifar_runs["noiser"], "--cm", cifar_runs["cm"], "--dm", cifar_runs["dm"],
                   "--num-images", "8", "--batch-size", "8", "--lpips-weights", LPIPS_WEIGHTS, "--out", tmp_path / "recon")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "CIFAR-10 (JPEG copy), 8 held-out images" in proc.stdout
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in proc.stdout.splitlines() if line.startswith("| ")}
    for pairing in ("CT_Inv+CM", "CT_Inv+DM", "DDIM_Inv+DM", "DDIM_Inv+CM"):
        assert 0 < float(rows[pairing][4]) < 1  # the LPIPS column holds a number, not "unavailable"


@needs_copy
def test_rgb_data_given_to_a_one_channel_noiser_is_one_error_line(runs, tmp_path):
    proc = run_cli("probe", "recon", "--noiser", runs["noiser_uncond"], "--data", "cifar10", "--data-dir", SHARED,
                   "--num-images", "4", "--out", tmp_path / "recon")
    assert_one_error_line(proc, "data set cifar10 has images of shape (3, 32, 32); the models expect (1, 16, 16)")
    assert not (tmp_path / "recon").exists()


@needs_copy
def test_a_cifar_noiser_with_a_digits_decoder_is_one_error_line(cifar_runs, runs, tmp_path):
    proc = run_cli("probe", "recon", "--noiser", cifar_runs["noiser"], "--cm", runs["cm"], "--num-images", "4",
                   "--out", tmp_path / "recon")
    assert_one_error_line(proc, "--cm was trained on images of shape (1, 16, 16) but --noiser on (3, 32, 32)")
    assert not (tmp_path / "recon").exists()
