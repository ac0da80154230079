"""TensorRT engine build from an alignlearn ONNX export (TensorRT 10.x and 11.x Python API).

The decisions around the TensorRT calls (precision plan, optimisation profile,
file names, metadata sidecar) are plain functions, tested without TensorRT.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from alignlearn.errors import UserError

from .metadata import EncoderMeta

INSTALL_HINT = "TensorRT is not installed: pip install 'alignlearn[trt]' (NVIDIA's tensorrt wheels, Linux or Windows with a CUDA GPU)"
WORKSPACE_BYTES = 4 << 30


@dataclass(frozen=True)
class BatchProfile:
    min: int
    opt: int
    max: int

    @classmethod
    def parse(cls, text: str) -> BatchProfile:
        """'MIN,OPT,MAX' (or one number for all three)."""
        try:
            parts = [int(p) for p in text.split(",")]
        except ValueError:
            raise UserError(f"--batch expects MIN,OPT,MAX integers, got {text!r}") from None
        if len(parts) == 1:
            parts *= 3
        if len(parts) != 3:
            raise UserError(f"--batch expects MIN,OPT,MAX, got {text!r}")
        p = cls(*parts)
        if not 1 <= p.min <= p.opt <= p.max:
            raise UserError(f"--batch needs 1 <= MIN <= OPT <= MAX, got {text!r}")
        return p

    def shapes(self, image_shape: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], ...]]:
        """(min, opt, max) shapes of each input for IOptimizationProfile.set_shape."""
        shapes = {"images": tuple((b, *image_shape) for b in (self.min, self.opt, self.max))}
        shapes["labels"] = tuple((b,) for b in (self.min, self.opt, self.max))
        return shapes


@dataclass(frozen=True)
class PrecisionPlan:
    """How to get an engine of the asked precision from this TensorRT version.

    TensorRT 10 (weak typing): the fp32 ONNX plus the FP16/BF16 builder flag.
    TensorRT 11 removed those flags: every network is strongly typed, so reduced
    precision must be in the graph, from a mixed-precision ONNX whose
    normalisation layers stay fp32.
    """

    onnx_precision: str
    strongly_typed: bool
    builder_flags: tuple[str, ...]


def precision_plan(precision: str, trt_major: int) -> PrecisionPlan:
    if precision not in ("fp32", "fp16", "bf16"):
        raise UserError(f"unknown precision {precision!r}; choose fp32, fp16 or bf16")
    if trt_major < 10:
        raise UserError(f"TensorRT {trt_major}.x is not supported; install TensorRT 10 or newer")
    if trt_major >= 11:
        return PrecisionPlan(precision, True, ())
    if precision == "fp32":
        return PrecisionPlan("fp32", False, ())
    return PrecisionPlan("fp32", False, (precision.upper(),))


def engine_path(onnx_path: str | Path, precision: str, profile: BatchProfile, trt_version: str, compute_capability: str) -> Path:
    """NAME.fp16.b1-256-1024.sm90.trt10.engine beside the ONNX file: engines are not portable."""
    p = Path(onnx_path)
    major = trt_version.split(".")[0]
    return p.with_name(f"{p.stem}.{precision}.b{profile.min}-{profile.opt}-{profile.max}.sm{compute_capability}.trt{major}.engine")


def sidecar_path(engine: str | Path) -> Path:
    return Path(str(engine) + ".json")


def timing_cache_path(onnx_path: str | Path) -> Path:
    return Path(onnx_path).with_name("tensorrt.timing.cache")


def write_sidecar(engine: Path, meta: EncoderMeta, profile: BatchProfile, precision: str, trt_version: str, device: str) -> Path:
    meta.precision = precision
    meta.extra = {**meta.extra, "batch_profile": [profile.min, profile.opt, profile.max], "tensorrt": trt_version, "device": device}
    path = sidecar_path(engine)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(json.loads(meta.to_json()), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return trt


def build_engine(onnx_path: Path, engine: Path, meta: EncoderMeta, profile: BatchProfile, plan: PrecisionPlan, *, cache: Path | None = None) -> Path:
    """Parse the ONNX file, build a serialized engine with one optimisation profile, keep the timing cache."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if plan.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    opt_profile = builder.create_optimization_profile()
    shapes = profile.shapes(meta.image_shape)
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        opt_profile.set_shape(name, *shapes[name])
    config.add_optimization_profile(opt_profile)
    timing_cache = config.create_timing_cache(cache.read_bytes() if cache is not None and cache.exists() else b"")
    config.set_timing_cache(timing_cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError("TensorRT failed to build the engine (see its log above)")
    tmp = engine.with_name(f".{engine.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(serialized)
    os.replace(tmp, engine)
    if cache is not None:
        with open(cache, "wb") as f:
            f.write(timing_cache.serialize())
    return engine


def compute_capability() -> str:
    """'90' for an H100; from the CUDA runtime without torch when possible."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            cudart = None
    if cudart is not None:
        err, major = cudart.cudaDeviceGetAttribute(cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor, 0)
        err2, minor = cudart.cudaDeviceGetAttribute(cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor, 0)
        if int(err) == 0 and int(err2) == 0:
            return f"{major}{minor}"
    import torch

    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return f"{major}{minor}"
    raise UserError("no CUDA GPU is visible; a TensorRT engine is built on the GPU it will run on")
