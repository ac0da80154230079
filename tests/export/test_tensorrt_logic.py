"""The TensorRT path's decisions, tested without TensorRT; the build itself only where TensorRT exists."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from alignlearn.errors import UserError
from alignlearn.export.metadata import EncoderMeta
from alignlearn.export.tensorrt import BatchProfile, engine_path, precision_plan, sidecar_path, write_sidecar

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def test_batch_profile_parsing_and_shapes():
    p = BatchProfile.parse("1,256,1024")
    assert (p.min, p.opt, p.max) == (1, 256, 1024)
    assert BatchProfile.parse("8") == BatchProfile(8, 8, 8)
    assert p.shapes((3, 32, 32))["images"] == ((1, 3, 32, 32), (256, 3, 32, 32), (1024, 3, 32, 32))
    assert p.shapes((3, 32, 32))["labels"] == ((1,), (256,), (1024,))
    for bad in ("0,1,2", "4,2,8", "a,b,c", "1,2"):
        with pytest.raises(UserError):
            BatchProfile.parse(bad)


def test_precision_plans_for_tensorrt_10_and_11():
    # TensorRT 10 lowers an fp32 graph by builder flag; 11 only builds strongly typed graphs of the asked precision
    p10 = precision_plan("fp16", 10)
    assert p10.onnx_precision == "fp32" and p10.builder_flags == ("FP16",) and not p10.strongly_typed
    assert precision_plan("bf16", 10).builder_flags == ("BF16",)
    assert precision_plan("fp32", 10).builder_flags == ()
    assert precision_plan("fp16", 11) != p10 and precision_plan("fp16", 11).onnx_precision == "fp16"
    p11 = precision_plan("bf16", 11)
    assert p11.onnx_precision == "bf16" and p11.strongly_typed and p11.builder_flags == ()
    assert precision_plan("fp32", 11).onnx_precision == "fp32"
    with pytest.raises(UserError):
        precision_plan("int8", 10)
    with pytest.raises(UserError):
        precision_plan("fp16", 8)


def test_engine_file_naming_and_sidecar(tmp_path):
    e = engine_path(tmp_path / "noiser.onnx", "fp16", BatchProfile(1, 256, 1024), "10.13.0.35", "90")
    assert e.name == "noiser.fp16.b1-256-1024.sm90.trt10.engine"
    meta = EncoderMeta((1, 32, 32), 10, 0.002, 80.0, 0.5)
    path = write_sidecar(e, meta, BatchProfile(1, 256, 1024), "fp16", "10.13.0.35", "NVIDIA H100")
    assert path == sidecar_path(e)
    d = json.loads(path.read_text())
    assert d["precision"] == "fp16" and d["extra"]["batch_profile"] == [1, 256, 1024] and d["num_classes"] == 10
    assert EncoderMeta.from_json(path.read_text()).image_shape == (1, 32, 32)


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed: the missing-TensorRT message cannot be shown")
def test_trt_flag_without_tensorrt_is_one_clear_line(noiser_runs, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "alignlearn", "export", str(noiser_runs["uncond"]), "--onnx",
                           str(tmp_path / "n.onnx"), "--trt"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: TensorRT is not installed") and "pip install" in lines[0]
    assert not (tmp_path / "n.onnx").exists()  # it failed before doing any work


@pytest.fixture
def build_with_stub_trt10(monkeypatch, tmp_path):
    """export/build.py as it runs with TensorRT 10.9 installed, the engine build itself stubbed out."""
    import types

    from alignlearn.export import build

    monkeypatch.setattr(build, "import_tensorrt", lambda: types.SimpleNamespace(__version__="10.9.0"))
    monkeypatch.setattr(build, "_build_and_check", lambda *a, **k: tmp_path / "stub.engine")
    return build


@pytest.mark.parametrize("precision, instance_norm", [
    ("fp16", True),  # builder flags on the fp32 graph: TensorRT's own normalisation layer
    ("fp32", False),  # an fp32 engine and ONNX Runtime get the two-level GroupNorm
])
def test_graph_for_tensorrt_10_flags_keeps_instance_norm(noiser_runs, tmp_path, build_with_stub_trt10, precision, instance_norm):
    import onnx

    build = build_with_stub_trt10
    res = build.export_run(noiser_runs["cond"], tmp_path / "n.onnx", trt=True, precision=precision, log=lambda s: None)
    ops = {n.op_type for n in onnx.load(str(res.onnx)).graph.node}
    assert ("InstanceNormalization" in ops) == instance_norm and ("ReduceMean" in ops) != instance_norm
    assert res.onnx_parity and all(r.ok for r in res.onnx_parity)  # tiny model: both forms within 1e-5


def test_onnx_parity_miss_on_a_tensorrt_source_is_a_note_not_a_failure(noiser_runs, tmp_path, monkeypatch, build_with_stub_trt10):
    from alignlearn.export.onnx_export import ParityResult

    build = build_with_stub_trt10
    monkeypatch.setattr(build, "check_parity", lambda *a, **k: [ParityResult(7, "real", 3e-5, 3e-5, 4e-6, 1e-5)])
    res = build.export_run(noiser_runs["cond"], tmp_path / "n.onnx", trt=True, precision="fp16", log=lambda s: None)
    assert res.onnx.exists() and any("source of a fp16 TensorRT build" in n for n in res.notes)
    # without --trt the same miss is a loud failure that removes the file
    with pytest.raises(UserError, match="beyond the tolerance"):
        build.export_run(noiser_runs["cond"], tmp_path / "m.onnx", log=lambda s: None)
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.skipif(not HAS_TRT, reason="TensorRT is not installed (it cannot be installed on the CI machine)")
def test_tensorrt_build_and_parity(noiser_runs, tmp_path):
    from alignlearn.export.build import export_run

    res = export_run(noiser_runs["cond"], tmp_path / "n.onnx", trt=True, batch="1,8,64", log=print)
    assert res.engine.exists() and sidecar_path(res.engine).exists()
