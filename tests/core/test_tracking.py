"""--log tensorboard: the event files hold what metrics.jsonl holds, read back with TensorBoard's own reader."""

import pytest

from alignlearn.errors import UserError
from alignlearn.trainer import read_metrics, train
from alignlearn.tracking import make_tracker

from .helpers import digits, tiny_config


def test_tensorboard_scalars_equal_the_metrics_file(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config("ct-inversion", steps=12)
    cfg.train.log, cfg.train.log_every, cfg.train.sample_every = "tensorboard", 4, 8
    train(cfg, tmp_path / "run", show_progress=False, data=digits())
    rows = read_metrics(tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"scalars": 0, "images": 0}).Reload()
    for name in ("loss", "lr", "img_per_s", "N", "grad_norm"):
        logged = events.Scalars(f"train/{name}")
        assert [e.step for e in logged] == [r["step"] for r in rows] == [4, 8, 12]
        for e, r in zip(logged, rows):
            assert e.value == pytest.approx(r[name], rel=1e-6)  # event files hold float32
    assert all(r["grad_norm"] > 0 for r in rows)
    assert [e.step for e in events.Images("samples")] == [8, 12]  # the preview grids, as in samples/


def test_unknown_sink_is_refused(tmp_path):
    with pytest.raises(UserError, match="unknown --log"):
        make_tracker("wandb-ish", tmp_path)
