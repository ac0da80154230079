"""`alignlearn export`: run folder -> checked ONNX file [-> checked TensorRT engine]."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alignlearn.errors import UserError
from alignlearn.models import load_model
from alignlearn.timing import device_name

from .metadata import EncoderMeta, meta_for
from .onnx_export import ParityResult, check_parity, export_onnx, ort_runner, parity_table
from .tensorrt import BatchProfile, build_engine, compute_capability, engine_path, import_tensorrt, precision_plan, timing_cache_path, write_sidecar


@dataclass
class ExportResult:
    onnx: Path
    engine: Path | None = None
    onnx_parity: list[ParityResult] = field(default_factory=list)
    engine_parity: list[ParityResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def real_images(cfg, limit: int = 512) -> np.ndarray | None:
    """Held-out images of the run's data set for the parity check, or None where they cannot be loaded."""
    from alignlearn.data import load_data

    try:
        _, test = load_data(cfg.data.name, cfg.data.data_dir, cfg.data.image_size)
    except UserError:
        return None
    return test.images[:limit].numpy()


def _fail_if_bad(results: list[ParityResult], what: str, path: Path, log, fatal: bool = True) -> ParityResult | None:
    """Log the parity table; past the tolerance, remove `path` and stop (or, not `fatal`, return the worst row)."""
    log(f"parity of {what} against PyTorch (relative L2 error):\n{parity_table(results)}")
    bad = [r for r in results if not r.ok]
    if not bad:
        return None
    worst = max(bad, key=lambda r: r.vs_torch)
    if fatal:
        path.unlink(missing_ok=True)
        raise UserError(f"{what} differs from PyTorch beyond the tolerance {worst.tolerance:g} "
                        f"(batch {worst.batch}, {worst.source} inputs: {worst.vs_torch:.2e}); removed {path}")
    return worst


def export_run(run: str | Path, onnx_out: str | Path, *, trt: bool = False, precision: str = "fp32",
               batch: str = "1,256,1024", force: bool = False, log: Callable[[str], None] = print) -> ExportResult:
    noiser, cfg = load_model(run)
    if noiser.kind != "noiser":
        raise UserError(f"{run} holds a {noiser.kind} model; export takes a noiser (ct-inversion) run")
    profile = BatchProfile.parse(batch)
    plan = None
    if trt:
        trt_mod = import_tensorrt()  # fail before any work when TensorRT is missing
        plan = precision_plan(precision, int(trt_mod.__version__.split(".")[0]))
    onnx_precision = plan.onnx_precision if plan else precision
    meta = meta_for(cfg, onnx_precision)
    onnx_out = Path(onnx_out)
    if onnx_out.suffix != ".onnx":
        raise UserError(f"--onnx should name a .onnx file, got {onnx_out}")
    # TensorRT 10 builds fp16/bf16 engines from the fp32 graph with builder flags; that graph keeps the
    # exporter's InstanceNormalization, which TensorRT imports as its normalisation layer, rather than
    # reductions that its fp16 kernels could run (and overflow) in half precision.
    for_trt_flags = plan is not None and bool(plan.builder_flags)
    export_onnx(noiser, meta, onnx_out, onnx_precision, force=force, two_level_norms=not for_trt_flags)
    result = ExportResult(onnx_out)
    log(f"wrote {onnx_out} (opset 18, {onnx_precision}, dynamic batch, onnx.checker passed)")
    real = real_images(cfg)
    if real is None:
        result.notes.append("real images unavailable: parity checked on random inputs only")
    if onnx_precision == "bf16":
        result.notes.append("ONNX Runtime has no bf16 Conv kernels on the CPU: the bf16 graph is checked on its TensorRT engine")
    else:
        result.onnx_parity = check_parity(noiser, ort_runner(onnx_out), meta, real)
        # A TensorRT source file is not fatal: the engine built from it is checked at its own precision's tolerance.
        worst = _fail_if_bad(result.onnx_parity, "the ONNX export (ONNX Runtime CPU)", onnx_out, log, fatal=not for_trt_flags)
        if worst is not None:
            result.notes.append(f"{onnx_out} is the fp32 source of a {precision} TensorRT build; ONNX Runtime runs it "
                                f"{worst.vs_torch:.1e} from PyTorch (its normalisation sums); export without --trt for ONNX Runtime")
    if trt:
        result.engine = _build_and_check(noiser, meta, onnx_out, precision, profile, plan, real, force, log)
    for note in result.notes:
        log(f"note: {note}")
    return result


def _build_and_check(noiser, meta, onnx_out, precision, profile, plan, real, force, log) -> Path:
    from .runtime import Encoder

    trt = import_tensorrt()
    engine = engine_path(onnx_out, precision, profile, trt.__version__, compute_capability())
    if engine.exists() and not force:
        raise UserError(f"{engine} exists; pass --force to rebuild it")
    log(f"building {engine.name} (TensorRT {trt.__version__}, {precision}: "
        f"{'strongly typed' if plan.strongly_typed else 'builder flags ' + ','.join(plan.builder_flags) or 'fp32'}, "
        f"batch {profile.min}..{profile.max})")
    build_engine(onnx_out, engine, meta, profile, plan, cache=timing_cache_path(onnx_out))
    write_sidecar(engine, EncoderMeta.from_json(meta.to_json()), profile, precision, trt.__version__, device_name("cuda"))
    enc = Encoder(engine)
    engine_meta = EncoderMeta.from_json(meta.to_json())
    engine_meta.precision = precision
    batches = tuple(b for b in (profile.min, 7, min(64, profile.max)) if profile.min <= b <= profile.max)
    results = check_parity(noiser, lambda x, y: enc._backend.run(x, y), engine_meta, real, batches=batches)
    _fail_if_bad(results, "the TensorRT engine", engine, log)
    return engine
