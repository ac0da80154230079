"""CIFAR-10 from a data directory, without a network: torchvision's original batches, or the JPEG copy.

Read in this order from --data-dir: torchvision's `cifar-10-batches-py/` (the original files), then
`train.npz` / `test.npz` of the JPEG copy (every image a 32x32 JPEG of quality 75: `jpeg` bytes
concatenated, `offsets`, `labels`), decoded once per process. Which copy was read travels with the data
(ImageData.source) into every run's config.json and probe report, so the two are never confused.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch

from .errors import UserError

ORIGINAL = "CIFAR-10 (torchvision's original batches)"
JPEG_COPY = "CIFAR-10 (JPEG copy)"
_DECODED: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # per process: (path, mtime, size) -> arrays


def _read_original(data_dir: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    import torchvision.datasets as tvd

    try:
        ds = tvd.CIFAR10(str(data_dir), train=train, download=False)  # checks the files' checksums
    except RuntimeError as e:
        raise UserError(f"{data_dir / 'cifar-10-batches-py'}: {e}") from None
    return np.asarray(ds.data).transpose(0, 3, 1, 2).copy(), np.asarray(ds.targets, dtype=np.int64)


def _read_jpeg_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N x 3 x 32 x 32, int64 labels) from one .npz of the JPEG copy; any inconsistency is one error."""
    from PIL import Image, UnidentifiedImageError

    key = (path.resolve(), path.stat().st_mtime_ns, path.stat().st_size)
    if key in _DECODED:
        return _DECODED[key]
    try:
        with np.load(path, allow_pickle=False) as f:
            jpeg, offsets, labels = f["jpeg"], f["offsets"], f["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot read {path}: {type(e).__name__}: {str(e)[:120]} (a truncated or foreign file?)") from None
    n = len(labels)
    if offsets.shape != (n + 1,) or offsets[0] != 0 or offsets[-1] != len(jpeg) or np.any(np.diff(offsets) <= 0):
        raise UserError(f"{path} is inconsistent: its offsets do not index its {len(jpeg)} JPEG bytes for {n} images")
    if n == 0 or labels.max() > 9:
        raise UserError(f"{path} holds no CIFAR-10 labels (0-9)")
    images = np.empty((n, 32, 32, 3), dtype=np.uint8)
    for i in range(n):
        try:
            with Image.open(io.BytesIO(jpeg[offsets[i] : offsets[i + 1]].tobytes())) as im:
                images[i] = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise UserError(f"{path}: image {i} is not a 32x32 JPEG ({type(e).__name__})") from None
    _DECODED[key] = (images.transpose(0, 3, 1, 2).copy(), labels.astype(np.int64))
    return _DECODED[key]


def load_cifar10_arrays(data_dir: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], str] | None:
    """((train images, labels), (test images, labels), source) from data_dir, or None when neither copy is there."""
    original = data_dir / "cifar-10-batches-py"
    if (original / "data_batch_1").is_file() and (original / "test_batch").is_file():
        return _read_original(data_dir, True), _read_original(data_dir, False), ORIGINAL
    if (data_dir / "train.npz").is_file() and (data_dir / "test.npz").is_file():
        return _read_jpeg_npz(data_dir / "train.npz"), _read_jpeg_npz(data_dir / "test.npz"), JPEG_COPY
    return None


def to_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(images).float() / 127.5 - 1.0, torch.from_numpy(labels)
