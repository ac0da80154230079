"""What reduced precision buys ONNX Runtime's CPU provider for a noiser, and what it costs the latents.

    python benchmarks/cpu_precision.py --noiser RUN --batch 64 --results results

One process, side by side at one batch size: PyTorch eager fp32 (the baseline), PyTorch eager
with bf16 autocast (oneDNN's AMX / AVX-512 bf16 path, where the CPU has one), and ONNX Runtime on
the fp32 export, the fp16 export (GroupNorms kept in fp32) and an int8 export (static QDQ
quantisation of convolutions and matrix products, calibrated on the run's training images).
Each row: median img/s after warm-up (interleaved rounds), speed against eager fp32, and the relative L2 error of the
latents against PyTorch fp64 on held-out images of the run's data set (PyTorch fp32's own error is
the first row's) and, with --cm / --dm, the PSNR of those latents decoded by the paired consistency
model (1 step) and diffusion model (30 Euler steps), which says what the error costs a user.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from alignlearn.data import load_data
from alignlearn.export.build import export_run
from alignlearn.export.onnx_export import fp64_latents, ort_runner, rel_error
from alignlearn.models import load_model
from alignlearn.probes.loading import load_role
from alignlearn.probes.metrics import psnr
from alignlearn.probes.recon import decoders
from alignlearn.samplers import encode
from alignlearn.results import record_row
from alignlearn.timing import device_name, median_seconds


def quantize_int8(fp32_onnx: Path, out: Path, calibration: np.ndarray, labels: np.ndarray | None, batch: int = 32) -> Path:
    """Static int8 QDQ quantisation (per-channel weights, uint8 activations) with ONNX Runtime's tool."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            feeds = []
            for i in range(0, len(calibration), batch):
                f = {"images": calibration[i : i + batch]}
                if labels is not None:
                    f["labels"] = labels[i : i + batch]
                feeds.append(f)
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    quantize_static(str(fp32_onnx), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv", "MatMul", "Gemm"])
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--noiser", required=True, type=Path, help="a noiser (ct-inversion) run folder")
    p.add_argument("--cm", type=Path, default=None, help="a paired consistency-model run: decode the latents, report PSNR")
    p.add_argument("--dm", type=Path, default=None, help="a paired diffusion-model (edm) run: decode the latents, report PSNR")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--calibration-images", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5, help="timed calls per round (median)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median of the rounds' medians)")
    p.add_argument("--results", type=Path, default=None, help="append the rows to this folder of result records (results/)")
    a = p.parse_args(argv)

    noiser, cfg = load_model(a.noiser)
    train_set, test_set = load_data(cfg.data.name, cfg.data.data_dir, cfg.data.image_size)
    conditional = int(cfg.model.backbone.get("num_classes", 0)) > 0
    rng = np.random.default_rng(0)
    x = test_set.images[: a.batch].numpy().astype(np.float32)
    y = test_set.labels[: a.batch].numpy().astype(np.int64) if conditional else None
    calib = train_set.images[: a.calibration_images].numpy().astype(np.float32)
    calib_y = rng.integers(0, cfg.data.num_classes + 1, len(calib)).astype(np.int64) if conditional else None
    exact = fp64_latents(noiser, x, y)
    cm = load_role(a.cm, "cm", "cm", "cpu", expected="a consistency model (ct) run")
    dm = load_role(a.dm, "dm", "edm", "cpu", expected="a diffusion model (edm) run")
    sides = decoders(cm, dm, dm_steps=30, dm_solver="euler")

    def decoded_psnr(latents: np.ndarray) -> dict[str, str]:
        z = torch.from_numpy(np.ascontiguousarray(latents, dtype=np.float32))
        labels = torch.from_numpy(y) if y is not None else None
        with torch.no_grad():
            return {k: f"{psnr(side.fn(z, labels), torch.from_numpy(x)):.2f}" for k, side in sides.items()}

    xt, yt = torch.from_numpy(x), (torch.from_numpy(y) if conditional else None)
    def eager(bf16: bool):
        def call():
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                return encode(noiser, xt, eps=noiser.eps, labels=yt).float().numpy()
        return call

    def onnxruntime(path: Path):
        run = ort_runner(path)
        return lambda: run(x, y)

    candidates = [("torch eager fp32", eager(False)), ("torch eager bf16 autocast", eager(True))]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for precision in ("fp32", "fp16"):
            path = export_run(a.noiser, tmp / f"{precision}.onnx", precision=precision, log=lambda s: None).onnx
            candidates.append((f"onnxruntime CPU {precision}", onnxruntime(path)))
        int8 = quantize_int8(tmp / "fp32.onnx", tmp / "int8.onnx", calib, calib_y)
        candidates.append(("onnxruntime CPU int8 (QDQ, static)", onnxruntime(int8)))

        # Timed in interleaved rounds, so a slow spell of a shared machine falls on every backend alike.
        outputs = {name: fn() for name, fn in candidates}
        seconds: dict[str, list[float]] = {name: [] for name, _ in candidates}
        for _ in range(a.rounds):
            for name, fn in candidates:
                seconds[name].append(median_seconds(fn, "cpu", warmup=2, repeats=a.repeats))
        rows = []
        for name, _ in candidates:
            ips = a.batch / statistics.median(seconds[name])
            error, decoded = rel_error(outputs[name], exact), decoded_psnr(outputs[name])
            rows.append((name, ips, error, decoded))
            print(f"{name}: {ips:.1f} img/s, latents {error:.2e} from fp64, decoded PSNR {decoded}", file=sys.stderr)

    base = rows[0][1]
    device, date = device_name("cpu"), str(dt.date.today())
    cmd = "`python " + shlex.join(["benchmarks/cpu_precision.py", *(argv if argv is not None else sys.argv[1:])]) + "`"
    header = ["date", "device", "model", "backend", "batch", "img/s (median)", "vs torch eager fp32",
              "latents: relative error from fp64 (held-out images)", "PSNR decoded by CM (1 step)", "PSNR decoded by DM (30 Euler steps)", "command"]
    model = f"{cfg.model.preset} noiser ({cfg.data.name}, {a.noiser.name})"
    print("| " + " | ".join(header[2:-1]) + " |\n|" + "---|" * (len(header) - 3))
    for name, ips, err, decoded in rows:
        cells = [date, device, model, name, str(a.batch), f"{ips:.1f}", f"{ips / base:.2f}x", f"{err:.2e}",
                 decoded.get("CM", "n/a"), decoded.get("DM", "n/a"), cmd]
        print("| " + " | ".join(cells[2:-1]) + " |")
        if a.results is not None:
            record_row(a.results, "cpu_precision", header, cells)


if __name__ == "__main__":
    main()
