"""The fidelity probe against known answers: an exact noiser scores ~0, the identity map ~1."""

import dataclasses
import json
import math

import pytest
import torch

import alignlearn.probes.fidelity as fidelity
from alignlearn.config import TrainConfig, make_run_config
from alignlearn.data import load_data
from alignlearn.gmm import digits_mixture
from alignlearn.objectives import ObjectiveConfig
from alignlearn.trainer import train

from ..core.helpers import assert_one_error_line, run_cli


class ExactNoiser(torch.nn.Module):
    """f(x_t, t) = x_T along the mixture's own PF-ODE (closed form under a label, RK4 on the probe's grid)."""

    def __init__(self, gmm, eps, T, steps, kind="exact"):
        super().__init__()
        self.gmm, self.eps, self.T, self.steps, self.mode = gmm, eps, T, steps, kind
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # the probe reads the device from a parameter

    def forward(self, x, t, labels=None):
        if self.mode == "identity":
            return x
        a = float(t[0])
        if labels is not None:
            return self.gmm.conditional_flow(x.double(), a, self.T, labels).float()
        n = round(self.steps * (math.log(self.T) - math.log(a)) / (math.log(self.T) - math.log(self.eps)))
        return self.gmm.flow(x, a, self.T, max(n, 1)).float()


@pytest.fixture(scope="module")
def gmm_noisers(tmp_path_factory):
    root = tmp_path_factory.mktemp("gmm_runs")
    data = load_data("gmm-digits")
    out = {}
    for name, cond in (("cond", True), ("uncond", False)):
        cfg = make_run_config(ObjectiveConfig("ct-inversion"), TrainConfig(steps=2, batch_size=8, device="cpu", class_cond=cond),
                              data_name="gmm-digits", shape=data[0].shape, num_classes=10, preset="tiny")
        train(cfg, root / name, show_progress=False, data=data)
        out[name] = root / name
    return out


def with_model(monkeypatch, mode, steps):
    import alignlearn.probes.loading as loading

    real = loading.load_role

    def load_role(path, role, kind, device, expected=None):
        loaded = real(path, role, kind, device, expected)
        if loaded is not None and role == "noiser":
            loaded = dataclasses.replace(loaded, model=ExactNoiser(digits_mixture(), loaded.model.eps, loaded.model.T, steps, mode))
        return loaded

    monkeypatch.setattr(loading, "load_role", load_role)


@pytest.mark.parametrize("cond", ["cond", "uncond"])
def test_an_exact_noiser_scores_zero_and_the_identity_one(gmm_noisers, tmp_path, monkeypatch, cond):
    with_model(monkeypatch, "exact", 128)
    report = fidelity.run_fidelity(gmm_noisers[cond], num_images=12, ref_steps=128, batch_size=12, out_dir=tmp_path / "exact")
    rows = {r["encoder"]: r for r in report["rows"]}
    assert report["exact"] and rows["CT_Inv"]["rel_l2_p90"] < 1e-3 and rows["CT_Inv"]["cosine_p10"] > 0.999999
    assert rows["CT_Inv"]["principal_rel_l2_median"] < 1e-3 and rows["CT_Inv"]["off_subspace_median"] < 1e-3
    assert all(p["rel_l2_p90"] < 1e-3 for p in report["trajectory"])  # exact at every level, not only at eps
    if cond == "uncond":
        assert 0 < report["reference_error_max"] < 1e-4  # RK4 at 128 steps against 64
    # DDIM inversion with the exact denoiser: only its discretisation error, shrinking with the steps
    ddim = [rows[f"DDIM_Inv {k}, exact denoiser"]["rel_l2_median"] for k in (10, 30, 100)]
    assert ddim[0] > ddim[1] > ddim[2] > rows["CT_Inv"]["rel_l2_median"]
    with_model(monkeypatch, "identity", 32)
    report = fidelity.run_fidelity(gmm_noisers[cond], num_images=12, ref_steps=32, batch_size=12, out_dir=tmp_path / "id")
    ident = report["rows"][0]
    assert abs(ident["rel_l2_median"] - 1) < 0.01  # ||x0 - x_T*|| / ||x_T*||: x0 is tiny beside x_T*
    text = (tmp_path / "id" / "report.md").read_text()
    assert "| CT_Inv | 1 |" in text and (tmp_path / "id" / "fidelity_trajectory.png").stat().st_size > 1000


@pytest.mark.slow
def test_fidelity_cli_with_a_diffusion_model_reference(runs, tmp_path):
    out = tmp_path / "fid"
    proc = run_cli("probe", "fidelity", "--noiser", runs["noiser"], "--dm", runs["dm"], "--num-images", "16",
                   "--ref-steps", "200", "--batch-size", "16", "--out", out, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert not report["exact"] and "Heun" in report["reference"] and report["conditional"]
    names = [r["encoder"] for r in report["rows"]]
    assert names == ["CT_Inv", "DDIM_Inv 10, diffusion model", "DDIM_Inv 30, diffusion model",
                     "DDIM_Inv 100, diffusion model", "DDIM_Inv 30 against DDIM_Inv 200 (noise floor)"]
    rows = {r["encoder"]: r for r in report["rows"]}
    # the reference integrates the same DM's ODE: DDIM through it converges to it as its steps grow
    assert rows["DDIM_Inv 100, diffusion model"]["rel_l2_median"] < rows["DDIM_Inv 10, diffusion model"]["rel_l2_median"]
    assert report["reference_error_max"] < rows["DDIM_Inv 100, diffusion model"]["rel_l2_median"]
    assert len(report["trajectory"]) == 8 and "| CT_Inv | 1 |" in proc.stdout


def assert_refused(args, *needles, out=None):
    proc = run_cli("probe", "fidelity", *args)
    for n in needles:
        assert_one_error_line(proc, n)
    assert out is None or not out.exists()  # nothing written


def test_bad_inputs_are_one_error_line_and_write_nothing(runs, gmm_noisers, tmp_path):
    out = tmp_path / "never"
    # a data set with no exact endpoint and no --dm
    assert_refused(["--noiser", str(runs["noiser"]), "--out", str(out)], "no exact PF-ODE", "--dm", out=out)
    # a diffusion model passed as the noiser
    assert_refused(["--noiser", str(runs["dm"]), "--out", str(out)], "expected noiser", out=out)
    # a noiser passed as the diffusion model; too few reference steps
    assert_refused(["--noiser", str(gmm_noisers["cond"]), "--dm", str(runs["noiser_uncond"]), "--out", str(out)],
                   "expected edm", out=out)
    assert_refused(["--noiser", str(runs["noiser"]), "--dm", str(runs["dm"]), "--ref-steps", "50", "--out", str(out)],
                   "--ref-steps", out=out)


def test_noiser_and_dm_of_other_shapes_or_classes_are_refused(runs, tmp_path):
    from alignlearn.errors import UserError

    from ..core.helpers import digits
    from .conftest import mismatched_runs

    dm8, dm5 = mismatched_runs("edm", tmp_path)
    with pytest.raises(UserError, match="shape"):
        fidelity.run_fidelity(runs["noiser"], dm8, out_dir=tmp_path / "o")
    with pytest.raises(UserError, match="classes"):
        fidelity.run_fidelity(runs["noiser"], dm5, out_dir=tmp_path / "o")
    tr, te = digits()
    cfg_u = make_run_config(ObjectiveConfig("edm"), TrainConfig(steps=2, batch_size=8, device="cpu"), data_name="digits",
                            shape=tr.shape, num_classes=10, preset="tiny")
    train(cfg_u, tmp_path / "dm_uncond", show_progress=False, data=(tr, te))
    with pytest.raises(UserError, match="class-conditional"):  # the label's ODE needs a DM that knows the label
        fidelity.run_fidelity(runs["noiser"], tmp_path / "dm_uncond", out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()
