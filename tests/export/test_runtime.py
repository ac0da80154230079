import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from alignlearn.errors import UserError
from alignlearn.export.runtime import Encoder, EncoderInputError
from alignlearn.models import load_model

from ..core.helpers import digits


def test_runtime_runs_onnx_without_importing_torch(onnx_files):
    code = (
        "import sys, numpy as np\n"
        "from alignlearn.export.runtime import Encoder\n"
        f"enc = Encoder({str(onnx_files['cond'].onnx)!r})\n"
        "z = enc.encode(np.zeros((5, 16, 16, 1), np.uint8), labels=[0, 1, 2, 3, 4])\n"
        "assert z.shape == (5, 1, 16, 16) and z.dtype == np.float32\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok', enc.backend)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ok onnxruntime" in proc.stdout


def test_runtime_matches_pytorch_on_every_input_layout(noiser_runs, onnx_files):
    noiser, _ = load_model(noiser_runs["uncond"])
    enc = Encoder(onnx_files["uncond"].onnx)
    x = digits()[1].images[:9]
    u8 = ((x.numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    from_float = enc.encode(x.numpy())
    import torch

    with torch.no_grad():
        ref = noiser(x, torch.full((9,), 0.002)).numpy()
    assert np.linalg.norm(from_float - ref) / np.linalg.norm(ref) < 1e-4
    nchw = enc.encode(u8)
    nhwc = enc.encode(u8.transpose(0, 2, 3, 1))
    assert np.array_equal(nchw, nhwc)
    one = enc.encode(u8[0])  # a single CHW image
    assert one.shape == (1, 1, 16, 16) and np.allclose(one[0], nchw[0], atol=1e-4, rtol=1e-4)


def test_large_inputs_are_split_into_batches(onnx_files):
    enc = Encoder(onnx_files["uncond"].onnx, batch_size=7)
    x = np.random.default_rng(0).integers(0, 256, (30, 1, 16, 16)).astype(np.uint8)
    whole = Encoder(onnx_files["uncond"].onnx).encode(x)
    assert np.allclose(enc.encode(x), whole, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize(
    "images, labels, match",
    [
        (np.zeros((2, 3, 16, 16), np.float32), None, "channel"),
        (np.zeros((2, 1, 28, 28), np.float32), None, "16x16"),
        (np.full((2, 1, 16, 16), np.nan, np.float32), None, "NaN"),
        (np.full((2, 1, 16, 16), 3.0, np.float32), None, r"\[-1, 1\]"),
        (np.zeros((2, 1, 16, 16), np.int32), None, "dtype"),
        (np.zeros((0, 1, 16, 16), np.float32), None, "no images"),
        (np.zeros((3, 1, 16, 16), np.float32), [1, 2], "3 images"),
        (np.zeros((2, 1, 16, 16), np.float32), [1, 11], r"\[0, 10\]"),
    ],
)
def test_bad_inputs_give_clear_errors(onnx_files, images, labels, match):
    enc = Encoder(onnx_files["cond"].onnx)
    with pytest.raises(EncoderInputError, match=match):
        enc.encode(images, labels)


def test_labels_on_an_unconditional_model(onnx_files):
    with pytest.raises(EncoderInputError, match="unconditional"):
        Encoder(onnx_files["uncond"].onnx).encode(np.zeros((2, 1, 16, 16), np.float32), [1, 2])


def test_conditional_model_without_labels_uses_the_null_label(onnx_files):
    enc = Encoder(onnx_files["cond"].onnx)
    x = np.zeros((2, 1, 16, 16), np.float32)
    assert np.array_equal(enc.encode(x), enc.encode(x, [10, 10]))


def test_truncated_onnx_file(onnx_files, tmp_path):
    data = onnx_files["uncond"].onnx.read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a valid ONNX file"):
        Encoder(bad)


def test_onnx_file_that_is_not_an_alignlearn_export(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8  # loadable by older ONNX Runtime releases too
    path = tmp_path / "other.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UserError, match="not an alignlearn encoder export"):
        Encoder(path)


@pytest.mark.parametrize("edit", ["image shape", "classes"])
def test_metadata_that_disagrees_with_the_graph_is_refused(onnx_files, tmp_path, edit):
    model = onnx.load(str(onnx_files["cond"].onnx))
    entry = next(p for p in model.metadata_props if p.key == "alignlearn")
    meta = json.loads(entry.value)
    if edit == "image shape":
        meta["image_shape"] = [3, 32, 32]
    else:
        meta["num_classes"] = 0
    entry.value = json.dumps(meta)
    path = tmp_path / "altered.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UserError, match="metadata says .* graph"):
        Encoder(path)


def test_backend_choice_errors(onnx_files, noiser_runs, tmp_path):
    with pytest.raises(UserError, match="unknown backend"):
        Encoder(onnx_files["uncond"].onnx, backend="tvm")
    with pytest.raises(UserError, match="does not exist"):
        Encoder(tmp_path / "missing.onnx")
    with pytest.raises(UserError, match="needs a"):
        Encoder(onnx_files["uncond"].onnx, backend="tensorrt")
    torch_enc = Encoder(noiser_runs["uncond"])  # a run folder runs through PyTorch
    assert torch_enc.backend == "torch"
    ort_enc = Encoder(onnx_files["uncond"].onnx)
    x = np.random.default_rng(1).integers(0, 256, (4, 16, 16, 1)).astype(np.uint8)
    a, b = torch_enc.encode(x), ort_enc.encode(x)
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 1e-4


def test_encode_cli(onnx_files, tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(folder / f"{i}.png")
    np.save(tmp_path / "more.npy", np.zeros((2, 16, 16, 1), np.uint8))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "z.safetensors"
    proc = subprocess.run([sys.executable, "-m", "alignlearn", "encode", str(onnx_files["uncond"].onnx), str(folder),
                           str(tmp_path / "more.npy"), "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    from safetensors.numpy import load_file, safe_open

    z = load_file(str(out))["latents"]
    assert z.shape == (5, 1, 16, 16)
    with safe_open(str(out), "np") as f:
        assert len(json.loads(f.metadata()["inputs"])) == 5
    again = subprocess.run([sys.executable, "-m", "alignlearn", "encode", str(onnx_files["uncond"].onnx), str(folder),
                            "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode != 0 and "exists" in again.stderr and "Traceback" not in again.stderr
    bad = subprocess.run([sys.executable, "-m", "alignlearn", "encode", str(onnx_files["cond"].onnx), str(folder),
                          "--out", str(tmp_path / "b.npy"), "--label", "12"], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode != 0 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
