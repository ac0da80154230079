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
