import onnx
import pytest

from alignlearn.errors import UserError
from alignlearn.export.build import export_run, meta_for
from alignlearn.export.metadata import KEY, EncoderMeta
from alignlearn.export.onnx_export import check_parity, ort_runner
from alignlearn.models import load_model

from ..core.helpers import digits


@pytest.mark.parametrize("name", ["uncond", "cond"])
def test_onnx_parity_at_several_batch_sizes(noiser_runs, onnx_files, name):
    noiser, cfg = load_model(noiser_runs[name])
    meta = meta_for(cfg, "fp32")
    results = check_parity(noiser, ort_runner(onnx_files[name].onnx), meta, real=digits()[1].images.numpy(), batches=(1, 3, 7, 64))
    assert {r.batch for r in results} == {1, 3, 7, 64} and {r.source for r in results} == {"random", "real"}
    assert all(r.ok for r in results), [(r.batch, r.source, r.vs_torch, r.vs_fp64, r.torch_vs_fp64) for r in results]
    # on random inputs the fp32 graph matches PyTorch to well under 1e-5
    assert max(r.vs_torch for r in results if r.source == "random") < 1e-5
    # the export's own parity report ran and passed
    assert onnx_files[name].onnx_parity and all(r.ok for r in onnx_files[name].onnx_parity)


@pytest.mark.parametrize("name", ["uncond", "cond"])
def test_onnx_file_structure_and_metadata(onnx_files, name):
    model = onnx.load(str(onnx_files[name].onnx))
    onnx.checker.check_model(model)
    assert 18 <= model.opset_import[0].version <= 20
    inputs = [i.name for i in model.graph.input]
    assert inputs == (["images", "labels"] if name == "cond" else ["images"])
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # dynamic batch
    props = {p.key: p.value for p in model.metadata_props}
    meta = EncoderMeta.from_json(props[KEY])
    assert meta.image_shape == (1, 16, 16) and meta.num_classes == (10 if name == "cond" else 0)
    assert meta.eps == 0.002 and meta.T == 80.0 and meta.sigma_data == 0.5 and meta.alignlearn_version
    assert props["image_shape"] == "1,16,16" and props["channels"] == "1"
    # the decoder's upsampling exports as one Resize (training uses a broadcast, networks/unet.py)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Resize") == 1


def test_fp16_export_is_mixed_precision_and_checked(noiser_runs, tmp_path):
    res = export_run(noiser_runs["uncond"], tmp_path / "n16.onnx", precision="fp16", log=lambda s: None)
    model = onnx.load(str(res.onnx))
    types = {init.data_type for init in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types  # weights in half
    assert all(r.ok for r in res.onnx_parity)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # I/O stays fp32


def test_export_refuses_overwrite_and_wrong_models(noiser_runs, onnx_files, tmp_path):
    with pytest.raises(UserError, match="exists"):
        export_run(noiser_runs["uncond"], onnx_files["uncond"].onnx, log=lambda s: None)
    with pytest.raises(UserError, match="precision"):
        export_run(noiser_runs["uncond"], tmp_path / "x.onnx", precision="int4", log=lambda s: None)
    with pytest.raises(UserError, match=".onnx"):
        export_run(noiser_runs["uncond"], tmp_path / "x.bin", log=lambda s: None)


def test_parity_failure_is_loud(noiser_runs, tmp_path):
    noiser, cfg = load_model(noiser_runs["uncond"])
    res = export_run(noiser_runs["uncond"], tmp_path / "ok.onnx", log=lambda s: None)
    run = ort_runner(res.onnx)
    broken = check_parity(noiser, lambda x, y: run(x, y) * 1.001, meta_for(cfg, "fp32"), batches=(2,))
    assert not any(r.ok for r in broken)
