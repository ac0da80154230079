"""Experiment tracking beside metrics.jsonl (which stays the source of truth): `--log tensorboard`.

A tracker receives each metrics row and each preview grid the trainer writes. TensorBoard event files go to
RUN/tensorboard/; open them with `tensorboard --logdir RUN/tensorboard`.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError

SINKS = ("none", "tensorboard")


class NullTracker:
    def scalars(self, step: int, values: dict) -> None:
        pass

    def image(self, step: int, tag: str, path: Path) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker(NullTracker):
    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--log tensorboard needs the tensorboard package: pip install 'alignlearn[tensorboard]'") from None
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def scalars(self, step: int, values: dict) -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"train/{name}", value, global_step=step)
        self.writer.flush()

    def image(self, step: int, tag: str, path: Path) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as im:
            self.writer.add_image(tag, np.asarray(im.convert("RGB")), global_step=step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def make_tracker(sink: str, run_dir: Path, enabled: bool = True):
    """The tracker for --log (a no-op on processes that do not write logs)."""
    if sink not in SINKS:
        raise UserError(f"unknown --log {sink!r}; choose from {', '.join(SINKS)}")
    return TensorBoardTracker(run_dir) if sink == "tensorboard" and enabled else NullTracker()
