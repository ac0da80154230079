"""Fault injection: a training process killed (SIGKILL) at each point of the checkpoint save path, or
interrupted twice in quick succession, leaves latest.json naming a complete, verifying checkpoint, and
--resume then ends with the weights of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from alignlearn.checkpoint import latest_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TRAIN = ["train", "--steps", "6", "--ckpt-every", "2", "--log-every", "2", "--batch-size", "16", "--quiet"]

# A child process that kills itself at one point of save_checkpoint for step 4 (monkeypatched, no product hook).
CHILD = r"""
import os, signal, sys
import alignlearn.checkpoint as ck
point = sys.argv.pop(1)
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
write, replace, rmtree = ck._write_checkpoint, ck.os.replace, ck.shutil.rmtree
def _write(tmp, **kw):
    if point == "mid-write" and kw["state"]["step"] == 4:
        (tmp / "model.safetensors").write_bytes(b"half")
        die()
    write(tmp, **kw)
    if point == "written" and kw["state"]["step"] == 4:
        die()
def _replace(src, dst, *a):
    replace(src, dst, *a)
    if point == "renamed" and str(dst).endswith("step_00000004"):
        die()
    if point == "pointed" and str(dst).endswith("latest.json") and "step_00000004" in open(dst).read():
        die()
def _rmtree(path, *a, **k):
    if point == "pruning" and str(path).endswith("step_00000002"):
        die()
    rmtree(path, *a, **k)
ck._write_checkpoint, ck.os.replace, ck.shutil.rmtree = _write, _replace, _rmtree
from alignlearn.cli import main
sys.argv = ["alignlearn"] + sys.argv[1:]
main()
"""


def alignlearn(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "alignlearn", *args], capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("reference") / "run"
    assert alignlearn(*TRAIN, "--out", str(run)).returncode == 0
    return (latest_checkpoint(run) / "model.safetensors").read_bytes()


def assert_recovers(run, uninterrupted):
    ckpt = latest_checkpoint(run)  # names a complete checkpoint whose files match their recorded SHA-256
    assert (ckpt / "state.json").is_file()
    resumed = alignlearn(*TRAIN, "--out", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert (latest_checkpoint(run) / "model.safetensors").read_bytes() == uninterrupted
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]  # no step logged twice


@pytest.mark.slow
@pytest.mark.parametrize("point", ["mid-write", "written", "renamed", "pointed", "pruning"])
def test_sigkill_in_the_save_path(tmp_path, uninterrupted, point):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", CHILD, point, *TRAIN, "--out", str(run)], capture_output=True,
                          text=True, timeout=300, env=ENV)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert_recovers(run, uninterrupted)


@pytest.mark.slow
def test_two_quick_interrupts(tmp_path):
    run, reference = tmp_path / "run", tmp_path / "reference"
    args = ["train", "--steps", "300", "--batch-size", "8", "--log-every", "1", "--ckpt-every", "100000", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "alignlearn", *args, "--out", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    while not (run / "metrics.jsonl").is_file():
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)  # the second Ctrl-C does not cut the save short
    _, err = proc.communicate(timeout=300)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert proc.returncode == 130 and len(lines) == 1 and lines[0].startswith("stopped: interrupted"), err
    assert (latest_checkpoint(run) / "state.json").is_file()
    assert alignlearn(*args, "--out", str(run), "--resume").returncode == 0
    assert alignlearn(*args, "--out", str(reference)).returncode == 0
    weights = [(latest_checkpoint(f) / "model.safetensors").read_bytes() for f in (run, reference)]
    assert weights[0] == weights[1]  # resumed, it ends where the uninterrupted run does
