"""Every flag that makes no sense is refused before anything is written: exit 2, one `error:` line."""

import os
import subprocess
import sys

import pytest

from .helpers import assert_one_error_line, run_cli

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

BAD_TRAIN_FLAGS = [
    (["--steps", "0"], "--steps"),
    (["--time-budget", "nan"], "--time-budget"),
    (["--time-budget", "inf"], "--time-budget"),
    (["--time-budget", "-5"], "--time-budget"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--target-ema", "1.5"], "--target-ema"),
    (["--seed", "-1"], "--seed"),
    (["--s1", "-3"], "--s1"),
    (["--image-size", "-8"], "--image-size"),
    (["--image-size", "0"], "--image-size"),
    (["--grad-clip", "nan"], "--grad-clip"),
    (["--p-std", "0"], "--p-std"),
    (["--batch-size", "0"], "--batch-size"),
    (["--stop-after", "0"], "--stop-after"),
]


@pytest.mark.parametrize("flags,needle", BAD_TRAIN_FLAGS, ids=[" ".join(f) for f, _ in BAD_TRAIN_FLAGS])
def test_bad_train_flag(tmp_path, flags, needle):
    out = tmp_path / "run"
    assert_one_error_line(run_cli("train", "--out", out, *flags), needle)
    assert not out.exists()  # nothing written


def test_the_console_script_exits_2_with_one_line(tmp_path):
    """The same path as a subprocess, once: what a shell sees."""
    proc = subprocess.run([sys.executable, "-m", "alignlearn", "train", "--out", str(tmp_path / "r"), "--steps", "0"],
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert_one_error_line(proc, "--steps")


def test_encode_refuses_a_zero_batch_and_an_existing_names_file(tmp_path):
    (tmp_path / "x.names.txt").write_text("kept\n")
    for args, needle in ((["--batch-size", "0", "--out", str(tmp_path / "y.npy")], "--batch-size"),
                         (["--out", str(tmp_path / "x.npy")], "x.names.txt exists")):
        assert_one_error_line(run_cli("encode", tmp_path / "m.onnx", tmp_path, *args), needle)
    assert (tmp_path / "x.names.txt").read_text() == "kept\n" and not (tmp_path / "x.npy").exists()


def test_image_folders_follow_links_take_the_common_size_and_refuse_bombs(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from alignlearn.data import load_folder
    from alignlearn.errors import UserError

    elsewhere = tmp_path / "elsewhere" / "b"
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    elsewhere.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(tmp_path / "imgs" / "a" / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(elsewhere / f"{i}.png")
    (tmp_path / "imgs" / "b").symlink_to(elsewhere, target_is_directory=True)  # a linked class folder is followed
    (tmp_path / "imgs" / "b" / "loop").symlink_to(tmp_path / "imgs", target_is_directory=True)  # a cycle ends
    Image.fromarray(rng.integers(0, 255, (256, 256), dtype=np.uint8)).save(tmp_path / "imgs" / "a" / "big.png")
    train, test = load_folder(tmp_path / "imgs")
    assert len(train) + len(test) == 17 and train.shape == (1, 16, 16) and train.num_classes == 2  # the common size
    assert "resized by more than 2x to 16x16" in capsys.readouterr().err
    Image.MAX_IMAGE_PIXELS, old = 1000, Image.MAX_IMAGE_PIXELS  # a decompression bomb, as far as Pillow can tell
    try:
        with pytest.raises(UserError, match="cannot read image"):
            load_folder(tmp_path / "imgs")
    finally:
        Image.MAX_IMAGE_PIXELS = old
