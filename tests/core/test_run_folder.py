"""The run folder under signals and careless use: one save per step, SIGTERM saves, one writer at a time,
no half-written checkpoints left behind, no metrics rows logged twice."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import alignlearn.trainer as trainer
from alignlearn.errors import UserError
from alignlearn.runlock import RunLock
from alignlearn.trainer import TrainingStopped, read_metrics, train

from .helpers import assert_one_error_line, digits, run_cli, tiny_config

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def latest(run):
    return json.loads((run / "checkpoints" / "latest.json").read_text())["path"]


def test_a_stop_at_a_checkpoint_step_saves_that_step_once(tmp_path, monkeypatch):
    saves = []
    real_save = trainer.save_checkpoint
    monkeypatch.setattr(trainer, "save_checkpoint", lambda run, step, **kw: saves.append(step) or real_save(run, step, **kw))

    class StopAtFour(trainer._StopFlag):  # the signal arrives during step 4, a checkpoint step
        @property
        def set(self):
            return len(saves) >= 2

        @set.setter
        def set(self, value):
            pass

    monkeypatch.setattr(trainer, "_StopFlag", StopAtFour)
    cfg = tiny_config("ct-inversion", steps=50)
    cfg.train.ckpt_every, cfg.train.log_every = 2, 2
    with pytest.raises(TrainingStopped) as stopped:
        train(cfg, tmp_path / "run", show_progress=False, data=digits())
    assert saves == [2, 4] and stopped.value.exit_code == 130
    assert latest(tmp_path / "run") == "step_00000004" and (tmp_path / "run/checkpoints/step_00000004/state.json").is_file()


@pytest.mark.slow
def test_sigterm_saves_and_exits_143_with_one_line_and_resume_is_exact(tmp_path):
    run, reference = tmp_path / "run", tmp_path / "reference"
    args = ["--steps", "300", "--batch-size", "8", "--log-every", "1", "--ckpt-every", "100000", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "alignlearn", "train", "--out", str(run), *args],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 240
    while not ((run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().count("\n") >= 3):
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else "slow"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)  # a second signal changes nothing: the save completes
    out, err = proc.communicate(timeout=240)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert proc.returncode == 143 and len(lines) == 1 and lines[0].startswith("stopped: interrupted at step"), err
    step = int(lines[0].split("interrupted at step ")[1].split(";")[0])
    assert latest(run) == f"step_{step:08d}" and step < 300
    for folder, extra in ((run, ["--resume"]), (reference, [])):
        done = subprocess.run([sys.executable, "-m", "alignlearn", "train", "--out", str(folder), *args, *extra],
                              capture_output=True, text=True, timeout=300, env=ENV)
        assert done.returncode == 0, done.stderr
    weights = [(f / "checkpoints" / "step_00000300" / "model.safetensors").read_bytes() for f in (run, reference)]
    assert weights[0] == weights[1]  # the interrupted run, resumed, ends where an uninterrupted one does


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    train(tiny_config("ct-inversion", steps=2), run, show_progress=False, data=digits())
    holder = RunLock()
    holder.acquire(run)
    try:
        before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".alignlearn.lock"}
        with pytest.raises(UserError, match=f"in use by another alignlearn process \\(pid {os.getpid()} on "):
            train(tiny_config("ct-inversion", steps=4), run, resume=True, show_progress=False, data=digits())
        with pytest.raises(UserError, match="in use"):
            train(tiny_config("ct-inversion", steps=4), run, force=True, show_progress=False, data=digits())
        after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".alignlearn.lock"}
        assert before == after  # neither touched the run
    finally:
        holder.release()
    train(tiny_config("ct-inversion", steps=4), run, resume=True, show_progress=False, data=digits())  # free again


def test_half_written_checkpoints_are_cleared_and_metrics_not_logged_twice(tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config("ct-inversion", steps=20)
    cfg.train.ckpt_every, cfg.train.log_every = 10, 5
    train(cfg, run, show_progress=False, data=digits())
    # as if killed after step 20's checkpoint was written but before latest.json named it, and mid-save of another
    (run / "checkpoints" / "latest.json").write_text(json.dumps({"path": "step_00000010"}))
    (run / "checkpoints" / ".step_00000030.x1y2").mkdir()
    train(cfg, run, resume=True, show_progress=False, data=digits())
    assert not list((run / "checkpoints").glob(".step_*"))
    assert [r["step"] for r in read_metrics(run)] == [5, 10, 15, 20]
    assert latest(run) == "step_00000020"


def test_force_removes_only_what_alignlearn_wrote(tmp_path):
    from alignlearn.demo import run_demo

    foreign = tmp_path / "foreign"
    (foreign / "samples").mkdir(parents=True)
    (foreign / "config.json").write_text('{"learning_rate": 3}\n')
    (foreign / "metrics.jsonl").write_text("{}\n")
    (foreign / "samples" / "a.png").write_bytes(b"png")
    before = {p: p.read_bytes() for p in foreign.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match="not an alignlearn run's.*nothing was removed"):
        train(tiny_config("ct-inversion", steps=2), foreign, force=True, show_progress=False, data=digits())
    thesis = tmp_path / "thesis"
    (thesis / "src").mkdir(parents=True)
    (thesis / "thesis.tex").write_text("\\documentclass{article}\n")
    with pytest.raises(UserError, match="not a folder alignlearn demo wrote"):
        run_demo(thesis, steps=1, quick=True, force=True, log=lambda s: None)
    assert before == {p: p.read_bytes() for p in foreign.rglob("*") if p.is_file()}
    assert (thesis / "thesis.tex").is_file() and (thesis / "src").is_dir()


@pytest.mark.parametrize("damage", ["bit flip", "latest path 5", "latest null", "latest list", "negative step"])
def test_damaged_checkpoints_are_one_error_line_naming_the_file(tmp_path, damage):
    run = tmp_path / "run"
    train(tiny_config("ct-inversion", steps=2), run, show_progress=False, data=digits())
    ckpt = run / "checkpoints" / latest(run)
    pointer = run / "checkpoints" / "latest.json"
    if damage == "bit flip":  # in the tensor data, past the header: the file still parses
        data = bytearray((ckpt / "model.safetensors").read_bytes())
        data[-7] ^= 0x10
        (ckpt / "model.safetensors").write_bytes(bytes(data))
        needle = "model.safetensors is corrupt: its SHA-256"
    elif damage.startswith("latest"):
        pointer.write_text({"latest path 5": '{"path": 5}', "latest null": "null", "latest list": "[]"}[damage])
        needle = "latest.json is corrupt"
    else:
        state = json.loads((ckpt / "state.json").read_text())
        (ckpt / "state.json").write_text(json.dumps({**state, "step": -3}))
        needle = "no valid step"
    assert_one_error_line(run_cli("train", "--out", run, "--resume", "--steps", "4"), needle)


def test_a_full_disk_is_one_error_line_and_the_last_checkpoint_stays(tmp_path):
    import resource

    run = tmp_path / "run"
    train(tiny_config("ct-inversion", steps=2), run, show_progress=False, data=digits())

    def small_files():  # every file this process writes stops at 200 kB, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    proc = subprocess.run([sys.executable, "-m", "alignlearn", "train", "--out", str(run), "--resume", "--steps", "4"],
                          capture_output=True, text=True, timeout=300, env=ENV, preexec_fn=small_files)
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert "cannot write checkpoint step_00000004" in lines[0] and "still names step_00000002" in lines[0]
    assert latest(run) == "step_00000002" and not list((run / "checkpoints").glob(".step_*"))
    train(tiny_config("ct-inversion", steps=4), run, resume=True, show_progress=False, data=digits())  # room again


def test_an_unwritable_out_is_one_error_line(tmp_path):
    """A folder that cannot be made (here under a file: root may write anywhere, so no read-only folder would do)."""
    (tmp_path / "a_file").write_text("not a folder\n")
    with pytest.raises(UserError, match="cannot write to"):
        train(tiny_config("ct-inversion", steps=2), tmp_path / "a_file" / "run", show_progress=False, data=digits())


def test_checkpoint_files_have_ordinary_modes(tmp_path):
    run = tmp_path / "run"
    train(tiny_config("ct-inversion", steps=2), run, show_progress=False, data=digits())
    umask = os.umask(0)
    os.umask(umask)
    for f in (run / "checkpoints" / latest(run)).iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f
