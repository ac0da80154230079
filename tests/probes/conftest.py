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


def mismatched_runs(objective: str, root) -> tuple:
    """Two runs of `objective` that do not fit the digits models: one on 8x8 images, one on 5 classes."""
    import torch.nn.functional as nnf

    from alignlearn.config import TrainConfig, make_run_config
    from alignlearn.data import ImageData
    from alignlearn.objectives import ObjectiveConfig

    tr, te = digits()
    small = tuple(ImageData("digits8", nnf.avg_pool2d(d.images, 2), d.labels, 10) for d in (tr, te))
    five = tuple(ImageData("digits", d.images[d.labels < 5], d.labels[d.labels < 5], 5) for d in (tr, te))
    paths = (root / f"{objective}8", root / f"{objective}5")
    for path, data, cond in ((paths[0], small, False), (paths[1], five, True)):
        cfg = make_run_config(ObjectiveConfig(objective), TrainConfig(steps=2, batch_size=8, device="cpu", class_cond=cond),
                              data_name=data[0].name, shape=data[0].shape, num_classes=data[0].num_classes, preset="tiny")
        train(cfg, path, show_progress=False, data=data)
    return paths
