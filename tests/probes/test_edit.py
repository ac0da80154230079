import json

import pytest
import torch

from alignlearn.errors import UserError
from alignlearn.probes.edit import decode, load_decoder, run_edit
from alignlearn.probes.loading import load_role
from alignlearn.samplers import cm_sample, encode


def test_edit_probe_writes_grid_and_metrics(runs, tmp_path):
    report = run_edit(runs["noiser"], runs["cm"], guidance=[1.0, 2.0], per_class=1, judge_epochs=2, out_dir=tmp_path)
    assert (tmp_path / "edit_grid.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "edit.json").read_text())
    assert [r["guidance"] for r in saved["sweep"]] == [1.0, 2.0]
    for r in saved["sweep"]:
        assert 0 <= r["conversion_success"] <= 1 and -1 <= r["ssim_same_class"] <= 1
    assert 0 <= report["judge_test_accuracy"] <= 1 and report["sources"] == 10
    assert "| 2 |" in (tmp_path / "edit.md").read_text()
    # the floor: fresh latents decoded to the same targets at the grid's guidance
    prior = saved["prior"]
    assert prior["guidance"] == 1.0 and 0 <= prior["conversion_success"] <= 1 and -1 <= prior["ssim_across_targets"] <= 1
    assert prior != {**saved["sweep"][0], "guidance": 1.0}  # other latents, other scores
    assert "| 1, prior latents |" in (tmp_path / "edit.md").read_text()


def test_target_equal_to_source_is_the_reconstruction(runs):
    n = load_role(runs["noiser"], "noiser", "noiser", "cpu")
    dec = load_decoder(runs["cm"], "cpu")
    from ..core.helpers import digits

    x0, y0 = digits()[1].images[:6], digits()[1].labels[:6]
    z = encode(n.model, x0, labels=y0)
    edited = decode(dec, z, y0, guidance=1.0, steps=10)
    recon = cm_sample(dec.model, z, [dec.model.T], labels=y0)
    assert torch.equal(edited, recon)


def test_edit_errors(runs, tmp_path):
    with pytest.raises(UserError, match="unconditional"):
        run_edit(runs["noiser_uncond"], runs["cm"], out_dir=tmp_path)
    with pytest.raises(UserError, match="out of range"):
        run_edit(runs["noiser"], runs["cm"], guidance=[-1.0], out_dir=tmp_path)
    with pytest.raises(UserError, match="out of range"):
        run_edit(runs["noiser"], runs["cm"], guidance=[100.0], out_dir=tmp_path)
    with pytest.raises(UserError, match="expected a consistency"):
        run_edit(runs["noiser"], runs["noiser"], out_dir=tmp_path)
    with pytest.raises(UserError, match="not classes"):
        run_edit(runs["noiser"], runs["cm"], targets=[11], out_dir=tmp_path)


def test_decoder_of_another_shape_or_class_count(runs, tmp_path):
    import torch.nn.functional as nnf

    from alignlearn.config import TrainConfig, make_run_config
    from alignlearn.data import ImageData
    from alignlearn.objectives import ObjectiveConfig
    from alignlearn.trainer import train

    from ..core.helpers import digits

    tr, te = digits()
    small = tuple(ImageData("digits8", nnf.avg_pool2d(d.images, 2), d.labels, 10) for d in (tr, te))
    cfg = make_run_config(ObjectiveConfig("ct"), TrainConfig(steps=2, batch_size=8, device="cpu", class_cond=True),
                          data_name="digits8", shape=small[0].shape, num_classes=10, preset="tiny")
    train(cfg, tmp_path / "cm8", show_progress=False, data=small)
    with pytest.raises(UserError, match="shape"):
        run_edit(runs["noiser"], tmp_path / "cm8", out_dir=tmp_path / "o")
    five = tuple(ImageData("digits", d.images[d.labels < 5], d.labels[d.labels < 5], 5) for d in (tr, te))
    cfg5 = make_run_config(ObjectiveConfig("edm"), TrainConfig(steps=2, batch_size=8, device="cpu", class_cond=True),
                           data_name="digits", shape=five[0].shape, num_classes=5, preset="tiny")
    train(cfg5, tmp_path / "dm5", show_progress=False, data=five)
    with pytest.raises(UserError, match="classes"):
        run_edit(runs["noiser"], tmp_path / "dm5", out_dir=tmp_path / "o")


def test_edit_cli_error_is_one_line(runs, tmp_path):
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "alignlearn", "probe", "edit", "--noiser", str(runs["noiser_uncond"]),
                           "--decoder", str(runs["cm"]), "--out", str(tmp_path / "e"), "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unconditional" in lines[0]


def test_refined_latents_edit_closer_to_the_source(runs, tmp_path):
    plain = run_edit(runs["noiser"], runs["cm"], per_class=1, judge_epochs=1, targets=[0, 1, 2], out_dir=tmp_path / "a")
    refined = run_edit(runs["noiser"], runs["cm"], per_class=1, judge_epochs=1, targets=[0, 1, 2], out_dir=tmp_path / "b",
                       refine=10)
    assert refined["refine"] == 10 and "refined 10 steps" in (tmp_path / "b" / "edit.md").read_text()
    assert refined["sweep"][0]["ssim_same_class"] > plain["sweep"][0]["ssim_same_class"]
    with pytest.raises(UserError, match="diffusion model"):
        run_edit(runs["noiser"], runs["dm"], refine=5, out_dir=tmp_path / "c")
    with pytest.raises(UserError, match="positive"):
        run_edit(runs["noiser"], runs["cm"], refine=-1, out_dir=tmp_path / "c")


def test_edit_with_a_diffusion_decoder_records_its_steps(runs, tmp_path):
    report = run_edit(runs["noiser"], runs["dm"], guidance=[1.25], per_class=1, targets=[0, 1], dm_steps=3, judge_epochs=1,
                      out_dir=tmp_path)
    assert report["decoder"] == "edm" and report["dm_steps"] == 3
    assert "decoder edm (3 Euler steps)" in (tmp_path / "edit.md").read_text()
    assert 0 <= report["sweep"][0]["conversion_success"] <= 1


def test_multistep_consistency_decoding_renoises_and_validates_its_levels(runs, tmp_path):
    n = load_role(runs["noiser"], "noiser", "noiser", "cpu")
    dec = load_decoder(runs["cm"], "cpu")
    from ..core.helpers import digits

    x0, y0 = digits()[1].images[:4], digits()[1].labels[:4]
    z = encode(n.model, x0, labels=y0)
    two = decode(dec, z, y0, 1.0, 10, cm_mid=[2.0], generator=torch.Generator().manual_seed(0))
    first = cm_sample(dec.model, z, [dec.model.T], labels=y0)
    renoised = first + (2.0**2 - dec.model.eps**2) ** 0.5 * torch.randn(first.shape, generator=torch.Generator().manual_seed(0))
    expected = dec.model(renoised, torch.full((4,), 2.0), y0)
    assert torch.allclose(two, expected, atol=1e-6)  # Song et al.'s multistep sampling, step by step
    report = run_edit(runs["noiser"], runs["cm"], per_class=1, targets=[0, 1], judge_epochs=1, cm_mid=[2.0], out_dir=tmp_path)
    assert report["cm_sigmas"] == [dec.model.T, 2.0] and "(2 steps at t = 80, 2)" in (tmp_path / "edit.md").read_text()
    for bad in ([100.0], [2.0, 5.0], [0.001]):
        with pytest.raises(UserError, match="must decrease strictly"):
            run_edit(runs["noiser"], runs["cm"], cm_mid=bad, out_dir=tmp_path / "b")
    with pytest.raises(UserError, match="diffusion model"):
        run_edit(runs["noiser"], runs["dm"], cm_mid=[2.0], out_dir=tmp_path / "b")
