"""CIFAR-10 without a network: the JPEG copy in ../shared/data/cifar10-jpeg, named wherever it is used."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from alignlearn.cifar10 import JPEG_COPY
from alignlearn.data import load_data
from alignlearn.errors import UserError

from .helpers import assert_one_error_line, run_cli

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-jpeg"
needs_copy = pytest.mark.skipif(not (SHARED / "train.npz").is_file(),
                                reason="../shared/data/cifar10-jpeg (the CIFAR-10 JPEG copy) is not beside this checkout")


@needs_copy
def test_the_jpeg_copy_loads_as_cifar10():
    train, test = load_data("cifar10", SHARED)
    assert (len(train), len(test)) == (50_000, 10_000) and train.shape == (3, 32, 32) and train.num_classes == 10
    assert np.bincount(train.labels.numpy()).tolist() == [5000] * 10 and np.bincount(test.labels.numpy()).tolist() == [1000] * 10
    mean = ((train.images + 1) / 2).mean(dim=(0, 2, 3)).numpy()
    assert np.abs(mean - np.array([0.4913, 0.4821, 0.4465])).max() < 1e-3
    assert train.source == test.source == JPEG_COPY


@needs_copy
def test_a_truncated_or_tampered_copy_is_one_error(tmp_path):
    shutil.copy(SHARED / "test.npz", tmp_path / "test.npz")
    data = (SHARED / "train.npz").read_bytes()
    (tmp_path / "train.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cannot read .*train.npz"):
        load_data("cifar10", tmp_path)
    with np.load(SHARED / "test.npz") as f:
        arrays = dict(f)
    arrays["offsets"] = arrays["offsets"].copy()
    arrays["offsets"][5] = arrays["offsets"][4]  # an image of zero bytes
    np.savez(tmp_path / "train.npz", **arrays)
    with pytest.raises(UserError, match="inconsistent"):
        load_data("cifar10", tmp_path)


def test_nothing_readable_is_one_error_line(tmp_path):
    proc = run_cli("train", "--data", "cifar10", "--data-dir", tmp_path, "--out", tmp_path / "run")
    assert_one_error_line(proc, "cifar-10-batches-py")
    assert not (tmp_path / "run").exists()


@needs_copy
def test_a_run_names_the_copy_it_was_trained_on(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("train", "--data", "cifar10", "--data-dir", SHARED, "--preset", "tiny", "--steps", "3",
                   "--batch-size", "8", "--quiet", "--out", run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((run / "config.json").read_text())["data"]["source"] == JPEG_COPY
