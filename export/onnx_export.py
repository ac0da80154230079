"""Export a noiser to ONNX: image in [-1, 1] -> latent x_T = f(x, eps), preconditioning inside the graph."""

from __future__ import annotations

import contextlib
import copy
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from alignlearn import __version__
from alignlearn.errors import UserError
from alignlearn.networks.norm import replace_group_norms
from alignlearn.precond import Preconditioned
from alignlearn.samplers import encode, encode_levels

from .groupnorm import with_two_level_group_norms
from .metadata import EncoderMeta

OPSET = 18  # within 18..20: TensorRT 10 rejects opset 21's GroupNormalization
PRECISIONS = ("fp32", "fp16", "bf16")
TOLERANCE = {"fp32": 1e-5, "fp16": 1e-2, "bf16": 5e-2}  # relative L2 error against PyTorch fp32
MAX_BATCH = 1 << 16


class EncoderGraph(nn.Module):
    """The exported function: f(images, eps [, labels]); I/O in fp32 whatever the inner precision."""

    def __init__(self, noiser: Preconditioned, conditional: bool, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.noiser, self.conditional, self.dtype = noiser, conditional, dtype

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = images
        for level in encode_levels(self.noiser, self.noiser.eps):  # K evaluations for K segments, unrolled
            t = torch.full((images.shape[0],), level, dtype=torch.float32, device=images.device)
            x = self.noiser(x.to(self.dtype), t, labels if self.conditional else None)
        return x.float()


class _FP32GroupNorm(nn.Module):
    """GroupNorm kept in fp32 inside a reduced-precision graph (mixed-precision ONNX for strong typing)."""

    def __init__(self, gn: nn.GroupNorm):
        super().__init__()
        self.gn = gn.float()

    def forward(self, x):
        return self.gn(x.float()).to(x.dtype)


def reduced_precision_copy(noiser: Preconditioned, dtype: torch.dtype) -> Preconditioned:
    """A copy in fp16/bf16 whose normalisation layers compute in fp32."""
    return replace_group_norms(copy.deepcopy(noiser).to(dtype), _FP32GroupNorm)


def export_graph(noiser: Preconditioned, meta: EncoderMeta, precision: str, two_level_norms: bool = False) -> EncoderGraph:
    """The exported function; `two_level_norms` sums the fp32 graph's GroupNorm statistics in two levels
    (groupnorm.py), as the ONNX files for ONNX Runtime do. Without it, nn.GroupNorm: PyTorch's reference,
    and in the exported graph InstanceNormalization, which TensorRT imports as its normalisation layer
    (reduced precisions always: their GroupNorms are wrapped to compute in fp32)."""
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    if precision != "fp32":
        inner = reduced_precision_copy(noiser, dtype)
    elif two_level_norms:
        inner = with_two_level_group_norms(copy.deepcopy(noiser))
    else:
        inner = noiser
    return EncoderGraph(inner.eval(), meta.num_classes > 0, dtype).eval()


@dataclass
class ParityResult:
    """Relative L2 errors of the export against PyTorch (same precision) and against PyTorch fp64."""

    batch: int
    source: str  # "random" or "real"
    vs_torch: float
    vs_fp64: float
    torch_vs_fp64: float  # PyTorch's own error in this precision: the model's conditioning on these inputs
    tolerance: float

    @property
    def ok(self) -> bool:
        # On real images a noiser's map is steep (dx_T/dx ~ T/sigma), so PyTorch itself can sit above
        # the tolerance from the exact (fp64) answer; then the export passes if it is as exact as PyTorch.
        if self.vs_torch <= self.tolerance:
            return True
        return self.vs_fp64 <= max(self.tolerance, 2 * self.torch_vs_fp64)


def export_onnx(
    noiser: Preconditioned,
    meta: EncoderMeta,
    path: str | Path,
    precision: str = "fp32",
    *,
    force: bool = False,
    two_level_norms: bool = True,
) -> Path:
    """Write an ONNX file (dynamic batch, metadata embedded) and check it with onnx.checker."""
    import onnx

    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    path = Path(path)
    if path.exists() and not force:
        raise UserError(f"{path} exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = export_graph(noiser, meta, precision, two_level_norms=two_level_norms)

    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    example = (torch.rand(2, *meta.image_shape) * 2 - 1,)  # a batch of 2: 1 would be specialised
    shapes: dict = {"images": {0: batch}}
    names = ["images"]
    if meta.num_classes:
        example += (torch.zeros(2, dtype=torch.long),)
        shapes["labels"] = {0: batch}
        names.append("labels")
    tmp = path.with_name(f".{path.name}.tmp")
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*axis name.*")  # images and labels share one batch Dim on purpose
        program = torch.onnx.export(
            graph, example, dynamo=True, opset_version=OPSET, dynamic_shapes=shapes,
            input_names=names, output_names=["latents"], external_data=False, verbose=False,
        )
    model = program.model_proto
    meta.input_names, meta.precision, meta.alignlearn_version = tuple(names), precision, __version__
    for k, v in meta.props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp))
    os.replace(tmp, path)
    return path


def reference_latents(graph: EncoderGraph, images: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    with torch.no_grad():
        y = torch.from_numpy(labels) if labels is not None else None
        return graph(torch.from_numpy(images), y).double().numpy()


def fp64_latents(noiser: Preconditioned, images: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    model = copy.deepcopy(noiser).double()
    with torch.no_grad():
        y = torch.from_numpy(labels) if labels is not None else None
        return encode(model, torch.from_numpy(images).double(), eps=noiser.eps, labels=y).numpy()


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||b||, in float64."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def ort_runner(onnx_path: str | Path, providers: list[str] | None = None):
    """run(images, labels) -> latents through ONNX Runtime."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), opts, providers=providers or ["CPUExecutionProvider"])

    def run(x: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        feeds = {"images": x} if labels is None else {"images": x, "labels": labels}
        return session.run(["latents"], feeds)[0]

    return run


def check_parity(
    noiser: Preconditioned, run, meta: EncoderMeta, real: np.ndarray | None = None,
    batches: tuple[int, ...] = (1, 7, 64), seed: int = 0, tolerance: float | None = None,
) -> list[ParityResult]:
    """Compare run(images, labels) (ONNX Runtime, TensorRT) with PyTorch on random and real images."""
    rng = np.random.default_rng(seed)
    tolerance = TOLERANCE[meta.precision] if tolerance is None else tolerance
    graph = export_graph(noiser, meta, meta.precision)
    results = []
    for b in batches:
        sources = [("random", rng.uniform(-1, 1, size=(b, *meta.image_shape)).astype(np.float32))]
        if real is not None and len(real):
            idx = rng.choice(len(real), size=b, replace=len(real) < b)
            sources.append(("real", real[idx].astype(np.float32)))
        for name, x in sources:
            labels = rng.integers(0, meta.num_classes + 1, size=b).astype(np.int64) if meta.num_classes else None
            got = run(x, labels)
            ref = reference_latents(graph, x, labels)
            ref64 = fp64_latents(noiser, x, labels)
            results.append(ParityResult(b, name, rel_error(got, ref), rel_error(got, ref64), rel_error(ref, ref64), tolerance))
    return results


def parity_table(results: list[ParityResult]) -> str:
    rows = ["batch  inputs  vs torch  vs torch fp64  torch vs fp64  ok"]
    for r in results:
        rows.append(f"{r.batch:5d}  {r.source:6s}  {r.vs_torch:8.2e}  {r.vs_fp64:13.2e}  {r.torch_vs_fp64:13.2e}  {'yes' if r.ok else 'NO'}")
    return "\n".join(rows)
