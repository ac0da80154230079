import json
import os
import subprocess
import sys

import pytest

from alignlearn.errors import UserError
from alignlearn.probes.recon import run_recon

from ..core.helpers import digits


@pytest.mark.slow
def test_recon_cli_end_to_end(runs, tmp_path):
    out = tmp_path / "recon"
    proc = subprocess.run(
        [sys.executable, "-m", "alignlearn", "probe", "recon", "--noiser", str(runs["noiser"]), "--cm", str(runs["cm"]),
         "--dm", str(runs["dm"]), "--ddim-steps", "8", "--dm-steps", "8", "--num-images", "48", "--batch-size", "16",
         "--refine", "3", "--out", str(out), "--device", "cpu"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    names = [r["pairing"] for r in report["pairings"]]
    assert names == ["CT_Inv+CM", "CT_Inv+DM", "DDIM_Inv+DM", "DDIM_Inv+CM", "Prior+CM", "Prior+DM", "CT_Inv+refine3+CM"]
    nfe = {r["pairing"]: (r["encode_nfe"], r["decode_nfe"]) for r in report["pairings"]}
    assert nfe["CT_Inv+CM"] == (1, 1) and nfe["DDIM_Inv+DM"] == (8, 8) and nfe["CT_Inv+refine3+CM"] == (7, 1)
    assert nfe["Prior+CM"] == (0, 1)
    # the baseline's latents are N(0, T^2 I), whatever the image
    prior = report["latents"]["Prior"]
    assert abs(prior["std_over_T"] - 1) < 0.05 and abs(prior["noise_std_over_T"] - 1) < 0.05 and abs(prior["mean"]) < 2
    # every other latent against the DM's own inversion; unrelated draws are orthogonal to it
    assert set(report["against_ddim"]) == {"CT_Inv", "Prior", "CT_Inv+refine3"}
    assert abs(report["against_ddim"]["Prior"]["cosine"]) < 0.05 and report["against_ddim"]["Prior"]["relative_l2"] > 1
    for r in report["pairings"]:
        assert r["psnr"] > 0 and -1 <= r["ssim"] <= 1 and r["total_s_per_batch"] > 0
    # DDIM inversion and DM decoding with the same steps nearly invert each other, whatever the training:
    # the diffusion decoder must read that latent far better than a fresh one
    psnr = {r["pairing"]: r["psnr"] for r in report["pairings"]}
    assert psnr["DDIM_Inv+DM"] > psnr["Prior+DM"] + 3
    assert report["lpips"].startswith(("available", "unavailable"))
    assert set(report["latents"]) >= {"CT_Inv", "DDIM_Inv"}
    assert (out / "recon_grid.png").stat().st_size > 1000
    md = (out / "report.md").read_text()
    assert "| CT_Inv+CM | 1 + 1 |" in md and "DDIM_Inv+DM" in md


def test_missing_models_are_skipped_with_a_note(runs, tmp_path):
    report = run_recon(noiser=runs["noiser"], cm=runs["cm"], num_images=16, batch_size=16, out_dir=tmp_path, timing_repeats=1)
    assert [r["pairing"] for r in report["pairings"]] == ["CT_Inv+CM", "Prior+CM"]
    assert {s["pairing"] for s in report["skipped"]} == {"CT_Inv+DM", "DDIM_Inv+DM", "DDIM_Inv+CM"}
    assert all("--dm" in s["reason"] for s in report["skipped"])


def test_refinement_lowers_the_reconstruction_error(runs, tmp_path):
    report = run_recon(noiser=runs["noiser"], cm=runs["cm"], refine=20, refine_lr=1.0, num_images=32, batch_size=32,
                       out_dir=tmp_path, timing_repeats=1)
    rows = {r["pairing"]: r for r in report["pairings"]}
    base, refined = rows["CT_Inv+CM"], rows["CT_Inv+refine20+CM"]
    assert refined["psnr"] > base["psnr"]


def test_mismatched_models_are_refused(runs, tmp_path):
    # a noiser trained on 16x16 digits and denoisers trained on 8x8 images or on 5 classes
    from .conftest import mismatched_runs

    cm8, cm5 = mismatched_runs("ct", tmp_path)
    with pytest.raises(UserError, match="shape"):
        run_recon(noiser=runs["noiser"], cm=cm8, out_dir=tmp_path / "o")
    with pytest.raises(UserError, match="classes"):
        run_recon(noiser=runs["noiser"], cm=cm5, out_dir=tmp_path / "o")


def test_wrong_kind_and_missing_files(runs, tmp_path):
    with pytest.raises(UserError, match="expected noiser"):
        run_recon(noiser=runs["cm"], out_dir=tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        run_recon(noiser=tmp_path / "nope", out_dir=tmp_path)
    with pytest.raises(UserError, match="at least one"):
        run_recon(out_dir=tmp_path)


def test_empty_split_is_refused(runs, tmp_path, monkeypatch):
    import alignlearn.probes.loading as loading

    tr, te = digits()
    empty = type(te)(te.name, te.images[:0], te.labels[:0], te.num_classes)
    monkeypatch.setattr(loading, "load_data", lambda *a, **k: (tr, empty))
    with pytest.raises(UserError, match="empty"):
        run_recon(noiser=runs["noiser"], cm=runs["cm"], out_dir=tmp_path)
