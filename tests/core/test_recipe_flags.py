"""--segments, --init-from and --teacher exact from the command line: working runs, and one `error:` line,
exit 2 and nothing written for each mistake (run in-process: the same main() as the console script)."""

import json
import shutil

import pytest
import torch

from alignlearn.models import load_model
from alignlearn.trainer import train

from .helpers import assert_one_error_line, digits, run_cli, tiny_config


def assert_refused(out, *args, needle):
    assert_one_error_line(run_cli("train", "--out", out, "--quiet", *args), needle)
    assert not out.exists()


@pytest.fixture(scope="module")
def dm_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dm")
    train(tiny_config("edm", steps=2), root / "dm", show_progress=False, data=digits())
    train(tiny_config("edm", steps=2, class_cond=True), root / "dm_cond", show_progress=False, data=digits())
    shutil.copytree(root / "dm", root / "dm_8px")
    cfg = json.loads((root / "dm_8px" / "config.json").read_text())
    cfg["data"]["shape"] = [1, 8, 8]
    (root / "dm_8px" / "config.json").write_text(json.dumps(cfg))
    return root


def test_init_from_starts_the_noiser_as_the_diffusion_models_euler_step(tmp_path, dm_runs):
    out = tmp_path / "noiser"
    proc = run_cli("train", "--out", out, "--quiet", "--init-from", dm_runs / "dm", "--steps", "2", "--lr", "1e-12",
                   "--segments", "2")
    assert proc.returncode == 0, proc.stderr
    noiser, cfg = load_model(out, weights="model")
    dm, _ = load_model(dm_runs / "dm")
    assert cfg.model.backbone["arch"] == "euler-step" and cfg.model.segments == 2
    x, t = digits()[1].images[:4], torch.tensor([0.002, 0.5, 3.0, 20.0])
    with torch.no_grad():
        f, D = noiser(x, t), dm(x, t)
    s = noiser.segment_end(t).view(-1, 1, 1, 1)
    euler = x + (s - t.view(-1, 1, 1, 1)) * (x - D) / t.view(-1, 1, 1, 1)
    assert torch.allclose(f, euler, rtol=1e-4, atol=1e-4)  # two steps at lr 1e-12 move nothing measurable

    from alignlearn.export.build import export_run  # the warm-start backbone exports like any other

    result = export_run(out, tmp_path / "warm.onnx", log=lambda s: None)
    assert result.onnx_parity and all(r.ok for r in result.onnx_parity)


@pytest.mark.parametrize("case", ["shape", "classes", "kind"])
def test_init_from_a_mismatched_run_is_refused(tmp_path, dm_runs, case):
    source = {"shape": dm_runs / "dm_8px", "classes": dm_runs / "dm_cond", "kind": None}[case]
    if case == "kind":
        source = tmp_path / "noiser"
        train(tiny_config("ct-inversion", steps=1), source, show_progress=False, data=digits())
    needle = {"shape": "shape", "classes": "classes", "kind": "diffusion (edm)"}[case]
    assert_refused(tmp_path / "r", "--init-from", str(source), needle=needle)


@pytest.mark.parametrize("flags,needle", [(["--segments", "0"], "--segments"), (["--segments", "41", "--s1", "40"], "--segments"),
                                          (["--segments", "2", "--objective", "edm"], "noisers"),
                                          (["--objective", "cd-inversion", "--teacher", "exact"], "gmm-digits"),
                                          (["--objective", "cd-inversion", "--teacher", "exact", "--teacher-solver", "rk4"], "solver"),
                                          (["--objective", "cd-inversion", "--teacher", "exact", "--teacher-steps", "0"], "--teacher-steps")])
def test_bad_recipe_flags_are_refused(tmp_path, flags, needle):
    assert_refused(tmp_path / "r", *flags, needle=needle)


def test_teacher_of_another_shape_is_refused(tmp_path, dm_runs):
    assert_refused(tmp_path / "r", "--objective", "cd-inversion", "--teacher", str(dm_runs / "dm_8px"),
                   needle="shape")


def test_exact_teacher_trains_on_gmm_digits(tmp_path):
    proc = run_cli("train", "--out", tmp_path / "r", "--quiet", "--data", "gmm-digits", "--objective", "cd-inversion",
                   "--teacher", "exact", "--teacher-solver", "heun", "--teacher-steps", "3", "--segments", "2",
                   "--steps", "3", "--s1", "20")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
