"""Tiny noiser runs (unconditional and class-conditional) and their ONNX exports, shared by the export tests."""

import pytest

from alignlearn.export.build import export_run
from alignlearn.trainer import train

from ..core.helpers import digits, tiny_config


@pytest.fixture(scope="session")
def noiser_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_runs")
    out = {}
    for name, cond in (("uncond", False), ("cond", True)):
        train(tiny_config("ct-inversion", steps=20, class_cond=cond), root / name, show_progress=False, data=digits())
        out[name] = root / name
    return out


@pytest.fixture(scope="session")
def onnx_files(noiser_runs, tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    return {name: export_run(run, root / f"{name}.onnx", log=lambda s: None) for name, run in noiser_runs.items()}
