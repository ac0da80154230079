"""`alignlearn export | encode | bench`: plain typer commands that the top-level app registers."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer

from alignlearn.data import image_files
from alignlearn.errors import UserError


def export(
    run: Path = typer.Argument(..., help="A noiser (ct-inversion) run folder."),
    onnx: Path = typer.Option(..., "--onnx", help="Output ONNX file."),
    trt: bool = typer.Option(False, "--trt", help="Also build a TensorRT engine beside it (needs tensorrt and a GPU)."),
    precision: str = typer.Option("fp32", help="fp32 | fp16 | bf16"),
    batch: str = typer.Option("1,256,1024", help="TensorRT optimisation profile MIN,OPT,MAX."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
):
    """Export a noiser to ONNX (image in [-1, 1] -> latent x_T), check parity, optionally build TensorRT."""
    from .build import export_run

    result = export_run(run, onnx, trt=trt, precision=precision, batch=batch, force=force, log=typer.echo)
    typer.echo(f"exported {result.onnx}" + (f" and {result.engine}" if result.engine else ""))


def collect_inputs(inputs: list[Path]) -> tuple[list[np.ndarray], list[str]]:
    """Arrays and names from image files, folders of images and .npy files, in the order given."""
    from PIL import Image, UnidentifiedImageError

    arrays, names = [], []
    for p in inputs:
        if not p.exists():
            raise UserError(f"{p} does not exist")
        if p.suffix == ".npy":
            try:
                a = np.load(p, allow_pickle=False)
            except (ValueError, OSError) as e:
                raise UserError(f"cannot read {p}: {e}") from None
            arrays.append(a if a.ndim == 4 else a[None])
            names += [f"{p}[{i}]" for i in range(len(arrays[-1]))]
            continue
        files = image_files(p) if p.is_dir() else [p]
        if p.is_dir() and not files:
            raise UserError(f"{p} holds no images")
        for f in files:
            try:
                with Image.open(f) as im:
                    a = np.asarray(im.convert("L") if im.mode in ("L", "1", "I", "I;16") else im.convert("RGB"))
            except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
                raise UserError(f"cannot read image {f}: {e}") from None
            arrays.append((a[None, :, :, None] if a.ndim == 2 else a[None]).astype(np.uint8))
            names.append(str(f))
    return arrays, names


def encode(
    model: Path = typer.Argument(..., help="An .onnx file, a TensorRT .engine, or a noiser run folder."),
    inputs: List[Path] = typer.Argument(..., help="Image files, folders of images, or .npy arrays (uint8 or [-1, 1] floats)."),
    out: Path = typer.Option(..., "--out", help="latents.npy or latents.safetensors"),
    backend: str = typer.Option("auto", help="auto | tensorrt | onnxruntime | torch"),
    label: Optional[int] = typer.Option(None, help="One class label for every image (class-conditional models)."),
    labels: Optional[Path] = typer.Option(None, help="An .npy of per-image labels."),
    batch_size: int = typer.Option(256, help="Images per call."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out."),
):
    """Encode images into latents x_T in one network evaluation each."""
    from rich.progress import Progress

    from .runtime import Encoder, prepare_images

    if out.suffix not in (".npy", ".safetensors"):
        raise UserError(f"--out must end in .npy or .safetensors, got {out}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    names_file = out.with_suffix(".names.txt")
    for path in (out, names_file) if out.suffix == ".npy" else (out,):
        if path.exists() and not force:
            raise UserError(f"{path} exists; pass --force to overwrite it")
    if label is not None and labels is not None:
        raise UserError("give --label or --labels, not both")
    enc = Encoder(model, backend=backend, batch_size=batch_size)
    arrays, names = collect_inputs(inputs)
    # Shapes differ between files only if the inputs do; prepare each, then stack.
    x = np.concatenate([prepare_images(a, enc.meta) for a in arrays])
    y = np.load(labels, allow_pickle=False) if labels is not None else label
    chunks = []
    with Progress(transient=True) as progress:
        task = progress.add_task("encode", total=len(x))
        for i in range(0, len(x), batch_size):
            yi = y[i : i + batch_size] if isinstance(y, np.ndarray) else y
            chunks.append(enc.encode(x[i : i + batch_size], yi))
            progress.advance(task, len(chunks[-1]))
    latents = np.concatenate(chunks)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, latents)
        names_file.write_text("\n".join(names) + "\n")
    else:
        import json

        from safetensors.numpy import save_file

        save_file({"latents": latents}, str(out), metadata={"inputs": json.dumps(names), "model": str(model)})
    typer.echo(f"encoded {len(latents)} images with {enc.backend} ({', '.join(enc.providers)}) -> {out}")


def bench(
    noiser: Path = typer.Option(..., "--noiser", help="A noiser run folder, an .onnx file or a TensorRT .engine."),
    batches: str = typer.Option("1,256", help="Batch sizes to time."),
    device: str = typer.Option("auto", help="auto | cpu | cuda (for the torch backends)."),
    compile: bool = typer.Option(True, help="Include torch.compile."),
    compile_mode: Optional[str] = typer.Option(
        None, help="torch.compile mode: default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs  "
        "[default: reduce-overhead on GPUs, default on CPUs]"),
    trt: bool = typer.Option(False, "--trt", help="Include TensorRT (needs tensorrt and a GPU)."),
    onnx: bool = typer.Option(True, help="Include the ONNX export and ONNX Runtime (run folders)."),
    repeats: int = typer.Option(20, help="Timed calls per row (median)."),
    peak_tflops: Optional[float] = typer.Option(None, help="The device's measured bf16 matrix peak, for a fraction-of-peak column."),
    results: Optional[Path] = typer.Option(None, help="Append the rows to this folder of result records (results/)."),
):
    """Encoder throughput (img/s) and latency per backend available here."""
    from alignlearn.distributed import resolve_device

    from alignlearn.results import record_row

    from .bench import markdown, run_bench, tflops

    modes = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
    if compile_mode is not None and compile_mode not in modes:
        raise UserError(f"unknown --compile-mode {compile_mode!r}; choose from {', '.join(modes)}")
    try:
        sizes = [int(b) for b in batches.split(",")]
    except ValueError:
        raise UserError(f"--batches expects integers like 1,256, got {batches!r}") from None
    header = ["date", "device", "backend", "batch", "latency ms (median)", "img/s", "TFLOP/s (of peak)", "I/O", "command"]
    cmd = "`alignlearn " + shlex.join(sys.argv[1:]) + "`"  # the command as typed, to reproduce the row

    def record(r, info):  # each row is printed and lands in the records as soon as it is measured
        typer.echo(f"{r.backend}, batch {r.batch}: {r.latency_ms:.3f} ms, {r.img_per_s:,.0f} img/s", err=True)
        if results is not None:
            record_row(results, "encoder_backends", header,
                       [info["date"], info["device"], r.backend, str(r.batch), f"{r.latency_ms:.3f}", f"{r.img_per_s:,.0f}",
                        "{} ({})".format(*tflops(r, info, peak_tflops)), r.io, cmd])

    rows, info = run_bench(noiser, batches=sizes, device=str(resolve_device(device)), compile_=compile, trt=trt, onnx=onnx,
                           compile_mode=compile_mode,
                           repeats=repeats, log=lambda s: typer.echo(s, err=True), on_row=record)
    typer.echo(markdown(rows, info, peak_tflops))
