"""Small run configurations for the tests: tiny UNet, digits, a few steps."""

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
