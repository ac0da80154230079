"""Small run configurations for the tests: tiny UNet, digits, a few steps; benchmark scripts as modules."""

import importlib.util
from pathlib import Path

from alignlearn.config import TrainConfig, make_run_config
from alignlearn.data import load_data
from alignlearn.objectives import ObjectiveConfig

_DIGITS = None


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
