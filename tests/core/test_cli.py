"""The command line: one clear error line and a non-zero exit for user mistakes, never a traceback."""

import json
import os
import subprocess
import sys

import pytest

from alignlearn.trainer import train

from .helpers import digits, run_cli, tiny_config

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def assert_clean_error(proc, *needles):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def a_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "run"
    train(tiny_config("ct-inversion", steps=4), path, show_progress=False, data=digits())
    return path


def test_unknown_dataset(tmp_path):
    assert_clean_error(run_cli("train", "--out", str(tmp_path / "r"), "--data", "imagenet"), "unknown dataset", "imagenet")


def test_missing_data_directory(tmp_path):
    assert_clean_error(run_cli("train", "--out", str(tmp_path / "r"), "--data", "mnist", "--data-dir", str(tmp_path / "nope")), "does not exist")


def test_image_folder_without_images(tmp_path):
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    (tmp_path / "imgs" / "a" / "notes.txt").write_text("not an image")
    assert_clean_error(run_cli("train", "--out", str(tmp_path / "r"), "--data", f"folder:{tmp_path / 'imgs'}"), "no images")


def test_corrupt_checkpoint_on_resume(tmp_path, a_run):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(a_run, run)
    ckpt = run / "checkpoints" / json.loads((run / "checkpoints/latest.json").read_text())["path"]
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 3])
    assert_clean_error(run_cli("train", "--out", str(run), "--resume", "--steps", "8"), "corrupt")


def test_resume_without_a_run(tmp_path):
    assert_clean_error(run_cli("train", "--out", str(tmp_path / "none"), "--resume"), "cannot resume")


def test_out_folder_with_another_run_is_not_overwritten(a_run):
    before = {p: p.read_bytes() for p in a_run.rglob("*") if p.is_file()}
    assert_clean_error(run_cli("train", "--out", str(a_run), "--steps", "2"), "already holds a run", "--force")
    after = {p: p.read_bytes() for p in a_run.rglob("*") if p.is_file()}
    assert before == after


def test_unknown_recipe_option(tmp_path):
    assert_clean_error(run_cli("train", "--out", str(tmp_path / "r"), "--weighting", "cubic"), "unknown weighting")


def test_cuda_graphs_refused_where_they_cannot_run(tmp_path):
    out = tmp_path / "r"
    assert_clean_error(run_cli("train", "--out", str(out), "--cuda-graphs"), "--cuda-graphs needs --compile")
    assert_clean_error(run_cli("train", "--out", str(out), "--compile", "--cuda-graphs", "--device", "cpu"),
                       "--cuda-graphs needs a CUDA device")
    assert not (out / "config.json").exists()  # a refused command leaves no run behind


def test_resuming_a_cuda_graph_run_on_a_cpu_says_where_to_resume(tmp_path, a_run):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(a_run, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["train"].update(compile=True, cuda_graphs=True, device="cpu")
    (run / "config.json").write_text(json.dumps(cfg))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert_clean_error(run_cli("train", "--out", str(run), "--resume", "--steps", "8"), "resume it on a GPU")
    assert before == {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}  # the run is untouched


def test_train_and_force_replace(tmp_path):
    out = tmp_path / "r"
    ok = run_cli("train", "--out", str(out), "--steps", "3", "--batch-size", "8", "--quiet")
    assert ok.returncode == 0, ok.stderr
    assert "trained 3 steps" in ok.stdout
    again = run_cli("train", "--out", str(out), "--steps", "2", "--batch-size", "8", "--quiet", "--force")
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "checkpoints/latest.json").read_text())["path"] == "step_00000002"
    assert not (out / "checkpoints/step_00000003").exists()


def test_help_shows_recipe_defaults():
    out = run_cli("train", "--help")
    assert out.returncode == 0
    for s in ("--step-schedule", "--scale-distribution", "--distance", "--weighting", "--target", "pseudo-huber"):
        assert s in out.stdout


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path):
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "alignlearn", "train", "--out", str(out), "--steps", "6", "--batch-size", "16",
         "--device", "cpu", "--quiet", "--log-every", "3"],
        capture_output=True, text=True, timeout=300, env=ENV,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [p.name for p in (out / "checkpoints").glob("step_*")] == ["step_00000006"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6]  # written once, by rank 0
    assert proc.stdout.count("trained 6 steps") == 1


def test_cd_inversion_teacher_errors(tmp_path, a_run):
    assert_clean_error(run_cli("train", "--out", str(tmp_path / "r"), "--objective", "cd-inversion"), "--teacher")
    # a noiser is not a diffusion model
    assert_clean_error(run_cli("train", "--out", str(tmp_path / "r2"), "--objective", "cd-inversion", "--teacher", str(a_run)), "edm")
    # a refused start leaves no run behind: the corrected command needs no --force
    assert not (tmp_path / "r" / "config.json").exists() and not (tmp_path / "r2" / "config.json").exists()
    assert run_cli("train", "--out", str(tmp_path / "r"), "--steps", "2", "--quiet").returncode == 0
