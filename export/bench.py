"""`alignlearn bench`: encoder throughput and latency per backend available on this machine."""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alignlearn.errors import UserError
from alignlearn.timing import device_name, median_seconds


@dataclass
class BenchRow:
    backend: str
    batch: int
    latency_ms: float  # median per call
    img_per_s: float
    io: str  # "device" (inputs already on the device) or "host" (numpy in, numpy out)
    note: str = ""


def _torch_runners(run: Path, device: str, compile_: bool, batches: list[int], compile_mode: str | None = None):
    import torch

    from alignlearn.models import load_model
    from alignlearn.samplers import encode_levels

    model, cfg = load_model(run, device=device)
    shape = tuple(cfg.data.shape)
    conditional = int(cfg.model.backbone.get("num_classes", 0)) > 0
    on_gpu = device.startswith("cuda")
    if on_gpu:
        model = model.to(memory_format=torch.channels_last)
    precision = "bf16 autocast" if on_gpu else "fp32"
    levels = encode_levels(model, model.eps)

    def make(fn):
        def for_batch(b):
            x = torch.rand(b, *shape, device=device) * 2 - 1
            if on_gpu:
                x = x.contiguous(memory_format=torch.channels_last)
            ts = [torch.full((b,), level, device=device) for level in levels]
            y = torch.zeros(b, dtype=torch.long, device=device) if conditional else None

            def call():
                with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=on_gpu):
                    z = x
                    for t in ts:  # one evaluation per segment (samplers.encode)
                        z = fn(z, t, y)
                    return z

            return call

        return for_batch

    runners = [(f"torch eager ({precision})", make(model), "device", "")]
    if compile_:
        # reduce-overhead replays CUDA graphs: no launch cost at batch 1
        mode = compile_mode or ("reduce-overhead" if on_gpu else "default")
        compiled = torch.compile(model, mode=mode, dynamic=False)
        runners.append((f"torch compiled ({precision}, {mode})", make(compiled), "device", "first calls compile"))
    return runners, cfg, forward_flops(model, shape, conditional)


def forward_flops(model, shape, conditional: bool) -> int:
    """FLOPs of one image's encoding (one forward pass per segment), counted by torch.utils.flop_counter."""
    import torch

    from alignlearn.samplers import encode
    from torch.utils.flop_counter import FlopCounterMode

    p = next(model.parameters())
    x = torch.zeros(2, *shape, device=p.device)
    y = torch.zeros(2, dtype=torch.long, device=p.device) if conditional else None
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        encode(model, x, eps=model.eps, labels=y)
    return fc.get_total_flops() // 2


def _ort_runners(onnx_path: Path, shape, conditional: bool):
    import onnxruntime as ort

    from .runtime import ort_providers

    out = []
    for provider in ort_providers():
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(str(onnx_path), opts, providers=[provider])
        except Exception as e:  # noqa: BLE001 - a listed provider can still fail to initialise
            out.append((f"onnxruntime {provider}", None, "host", f"unavailable: {str(e).splitlines()[0][:80]}"))
            continue
        if session.get_providers()[0] != provider:
            continue  # ORT fell back to another provider: that row is measured separately

        def for_batch(b, session=session):
            feeds = {"images": np.random.default_rng(0).uniform(-1, 1, (b, *shape)).astype(np.float32)}
            if conditional:
                feeds["labels"] = np.zeros(b, dtype=np.int64)
            return lambda: session.run(["latents"], feeds)

        out.append((f"onnxruntime {provider.replace('ExecutionProvider', '')}", for_batch, "host", ""))
    return out


def _trt_runner(engine: Path, shape, conditional: bool):
    from .runtime import Encoder

    enc = Encoder(engine, backend="tensorrt")

    def for_batch(b):
        x = np.random.default_rng(0).uniform(-1, 1, (b, *shape)).astype(np.float32)
        y = np.zeros(b, dtype=np.int64) if conditional else None
        return lambda: enc._backend.run(x, y)

    return (f"tensorrt ({enc.meta.precision})", for_batch, "host", "")


def run_bench(noiser: str | Path, *, batches=(1, 256), device: str = "cpu", compile_: bool = True, warmup: int = 5,
              repeats: int = 20, ddim_steps: int = 30, trt: bool = False, onnx: bool = True,
              compile_mode: str | None = None, log=print, on_row=None) -> tuple[list[BenchRow], dict]:
    """Time every backend available for `noiser`; `onnx=False` leaves out export and ONNX Runtime (for a
    run folder, when only the torch backends matter: large models on a CPU provider take minutes).
    `on_row(row, info)` sees each row as soon as it is measured, so a run cut short keeps what it timed."""
    path = Path(noiser)
    if not path.exists():
        raise UserError(f"{path} does not exist")
    rows: list[BenchRow] = []
    runners, shape, conditional, flops = [], None, False, None
    with tempfile.TemporaryDirectory() as tmp:
        if path.is_dir():
            t_runners, cfg, flops = _torch_runners(path, device, compile_, list(batches), compile_mode)
            shape, conditional = tuple(cfg.data.shape), int(cfg.model.backbone.get("num_classes", 0)) > 0
            runners += t_runners
            if onnx or trt:
                from .build import export_run

                onnx_path = Path(tmp) / "noiser.onnx"
                export_run(path, onnx_path, batch=f"1,{max(batches)},{max(batches)}", trt=trt, log=lambda s: None)
            if onnx:
                runners += _ort_runners(onnx_path, shape, conditional)
            if trt:
                engines = list(Path(tmp).glob("*.engine"))
                runners.append(_trt_runner(engines[0], shape, conditional))
        elif path.suffix == ".onnx":
            from .runtime import read_onnx_meta

            meta = read_onnx_meta(path)
            shape, conditional = meta.image_shape, meta.num_classes > 0
            runners += _ort_runners(path, shape, conditional)
        elif path.suffix in (".engine", ".plan"):
            from .runtime import _meta_from_text

            meta = _meta_from_text(Path(str(path) + ".json").read_text(), path)
            shape, conditional = meta.image_shape, meta.num_classes > 0
            runners.append(_trt_runner(path, shape, conditional))
        else:
            raise UserError(f"{path}: give a run folder, an .onnx file or a TensorRT .engine")
        info = {"device": device_name(device), "nfe_ratio": f"{ddim_steps}:1 (DDIM inversion {ddim_steps} NFE vs CT-Inversion 1 NFE)",
                "shape": shape, "date": str(dt.date.today()), "flops_per_image": flops}
        for name, for_batch, io, note in runners:
            for b in batches:
                if for_batch is None:
                    rows.append(BenchRow(name, b, float("nan"), float("nan"), io, note))
                else:
                    log(f"timing {name} at batch {b}")
                    ms = 1e3 * median_seconds(for_batch(b), device if io == "device" else "cpu", warmup, repeats, min_seconds=0.2)
                    rows.append(BenchRow(name, b, ms, 1e3 * b / ms, io, note))
                if on_row is not None:
                    on_row(rows[-1], info)
    return rows, info


def tflops(row: BenchRow, info: dict, peak_tflops: float | None = None) -> tuple[str, str]:
    """Achieved TFLOP/s of a row and its fraction of the given peak ("n/a" without FLOPs or peak)."""
    if not info.get("flops_per_image") or row.img_per_s != row.img_per_s:
        return "n/a", "n/a"
    achieved = info["flops_per_image"] * row.img_per_s / 1e12
    return f"{achieved:.3g}", (f"{100 * achieved / peak_tflops:.1f}%" if peak_tflops else "n/a")


def markdown(rows: list[BenchRow], info: dict, peak_tflops: float | None = None) -> str:
    gf = f"{info['flops_per_image'] / 1e9:.3f} GFLOP per image" if info.get("flops_per_image") else "FLOPs not counted"
    lines = [f"Device: {info['device']}; image shape {tuple(info['shape'])}; {gf}; NFE ratio {info['nfe_ratio']}.", "",
             "| backend | batch | latency (ms, median) | img/s | TFLOP/s | of peak | I/O | note |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tf, frac = tflops(r, info, peak_tflops)
        lines.append(f"| {r.backend} | {r.batch} | {r.latency_ms:.3f} | {r.img_per_s:,.0f} | {tf} | {frac} | {r.io} | {r.note} |")
    return "\n".join(lines) + "\n"
