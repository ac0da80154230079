"""Small run configurations for the tests: tiny UNet, digits, a few steps; benchmark scripts as modules."""

import contextlib
import importlib.util
import io
import sys
from pathlib import Path
from types import SimpleNamespace

from alignlearn.config import TrainConfig, make_run_config
from alignlearn.data import load_data
from alignlearn.objectives import ObjectiveConfig

_DIGITS = None
# the offline LPIPS weights beside the checkout (../shared/lpips): tests that need them skip without them
SHARED_LPIPS = Path(__file__).resolve().parents[3] / "shared" / "lpips"


def digits():
    global _DIGITS
    if _DIGITS is None:
        _DIGITS = load_data("digits")
    return _DIGITS


def tiny_config(objective="ct-inversion", steps=40, batch_size=32, class_cond=False, preset="tiny", **obj_kw):
    train, _ = digits()
    obj = ObjectiveConfig(objective, **obj_kw)
    tc = TrainConfig(steps=steps, batch_size=batch_size, lr=1e-3, warmup=10, class_cond=class_cond,
                     log_every=10, ckpt_every=1000, sample_every=1000, device="cpu")
    return make_run_config(obj, tc, data_name="digits", shape=train.shape, num_classes=train.num_classes, preset=preset)


BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(*args) -> SimpleNamespace:
    """`alignlearn ARGS` in this process, through the console script's main(): returncode, stdout, stderr.
    Cheaper than a subprocess by the cost of importing torch; a test that needs a real process (signals,
    torchrun, what a shell sees) starts one itself."""
    from alignlearn.cli import main

    out, err, argv, code = io.StringIO(), io.StringIO(), sys.argv, 0
    sys.argv = ["alignlearn", *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = argv
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())

def assert_one_error_line(proc, needle: str) -> None:
    """Exit 2 and one `error:` line naming `needle`, no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
