"""Tiny trained runs on digits, shared by the probe tests (seconds of CPU training each)."""

import pytest

from alignlearn.trainer import train

from ..core.helpers import digits, tiny_config


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe_runs")
    out = {}
    for name, objective in (("noiser", "ct-inversion"), ("cm", "ct"), ("dm", "edm")):
        cfg = tiny_config(objective, steps=30, batch_size=32, class_cond=True)
        train(cfg, root / name, show_progress=False, data=digits())
        out[name] = root / name
    cfg = tiny_config("ct-inversion", steps=30, batch_size=32)
    train(cfg, root / "noiser_uncond", show_progress=False, data=digits())
    out["noiser_uncond"] = root / "noiser_uncond"
    return out
