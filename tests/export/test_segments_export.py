"""A K-segment noiser exports as one graph with K evaluations; the metadata says K."""

import numpy as np
import onnx
import torch

from alignlearn.config import TrainConfig, make_run_config
from alignlearn.export.build import export_run
from alignlearn.export.metadata import KEY, EncoderMeta
from alignlearn.export.runtime import Encoder
from alignlearn.models import load_model
from alignlearn.objectives import ObjectiveConfig
from alignlearn.samplers import encode
from alignlearn.trainer import train

from ..core.helpers import digits


def test_three_segment_noiser_exports_and_matches_pytorch(tmp_path):
    train_set, test_set = digits()
    tc = TrainConfig(steps=6, batch_size=16, warmup=2, log_every=3, ckpt_every=1000, sample_every=1000, device="cpu")
    cfg = make_run_config(ObjectiveConfig("ct-inversion", s1=40), tc, data_name="digits", shape=train_set.shape,
                          num_classes=train_set.num_classes, preset="tiny", segments=3)
    train(cfg, tmp_path / "run", show_progress=False, data=(train_set, test_set))
    noiser, _ = load_model(tmp_path / "run")
    assert noiser.segments == 3

    result = export_run(tmp_path / "run", tmp_path / "enc.onnx", log=lambda s: None)
    assert result.onnx_parity and all(r.ok for r in result.onnx_parity)
    props = {p.key: p.value for p in onnx.load(str(result.onnx)).metadata_props}
    assert EncoderMeta.from_json(props[KEY]).segments == 3 and props["segments"] == "3"

    uint8 = np.round((test_set.images[:5].permute(0, 2, 3, 1).numpy() + 1) * 127.5).astype(np.uint8)
    images = torch.from_numpy(uint8).permute(0, 3, 1, 2).float() / 127.5 - 1  # the runtime's normalisation
    with torch.no_grad():
        expect = encode(noiser, images, eps=noiser.eps).numpy()
    got = Encoder(result.onnx, backend="onnxruntime").encode(uint8)
    assert np.linalg.norm(got - expect) <= 1e-5 * np.linalg.norm(expect)
    # three evaluations, not one: the one-step map of the same network differs
    with torch.no_grad():
        one_step = noiser(images, torch.full((5,), noiser.eps)).numpy()
    assert np.linalg.norm(one_step - expect) > 1e-3 * np.linalg.norm(expect)


def test_metadata_of_earlier_exports_reads_as_one_segment():
    meta = EncoderMeta((1, 16, 16), 0, 0.002, 80.0, 0.5)
    d = meta.to_json().replace(', "segments": 1', "")
    assert '"segments"' not in d and EncoderMeta.from_json(d).segments == 1
