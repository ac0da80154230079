"""The embedded runtime: 1-NFE encoding with numpy plus ONNX Runtime or TensorRT.

    from alignlearn.export.runtime import Encoder
    enc = Encoder("noiser.onnx")             # or an .engine, or a training run folder
    latents = enc.encode(images_uint8_nhwc)  # (N, C, H, W) float32, x_T = f(x, eps)

Running an ONNX file or a TensorRT engine does not import torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from alignlearn.errors import UserError

from .metadata import KEY, EncoderMeta

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
ORT_PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
RANGE_SLACK = 1e-3


class EncoderInputError(UserError, ValueError):
    """Images or labels that do not fit the model (shape, channels, dtype, range, NaN, labels)."""


def prepare_images(images, meta: EncoderMeta) -> np.ndarray:
    """uint8 [0, 255] or float [-1, 1], NCHW or NHWC (or one CHW/HWC image) -> float32 NCHW in [-1, 1]."""
    x = np.asarray(images)
    C, H, W = meta.image_shape
    if x.dtype == object or not (np.issubdtype(x.dtype, np.floating) or x.dtype == np.uint8):
        raise EncoderInputError(f"images must be uint8 (0..255) or float ([-1, 1]); got dtype {x.dtype}")
    if x.ndim == 2 and C == 1:
        x = x[None]
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise EncoderInputError(f"images must be (N, C, H, W) or (N, H, W, C); got shape {tuple(x.shape)}")
    if x.shape[1:] == (C, H, W):
        pass
    elif x.shape[1:] == (H, W, C):
        x = x.transpose(0, 3, 1, 2)
    elif x.shape[2:] == (H, W) or x.shape[1:3] == (H, W):
        got = x.shape[1] if x.shape[2:] == (H, W) else x.shape[3]
        raise EncoderInputError(f"the model takes {C} channel(s); the images have {got}")
    else:
        raise EncoderInputError(f"the model takes {H}x{W} images with {C} channel(s); got shape {tuple(x.shape)}")
    if len(x) == 0:
        raise EncoderInputError("no images given")
    if x.dtype == np.uint8:
        return (x.astype(np.float32) / 127.5 - 1.0).copy()
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise EncoderInputError("images contain NaN or Inf")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 - RANGE_SLACK or hi > 1 + RANGE_SLACK:
        raise EncoderInputError(f"float images must lie in [-1, 1] (the model's normalisation); got [{lo:.3g}, {hi:.3g}]; pass uint8 or rescale")
    return np.ascontiguousarray(x)


def prepare_labels(labels, n: int, meta: EncoderMeta) -> np.ndarray | None:
    """Labels for a class-conditional model; None there means the null label (unconditional)."""
    if meta.num_classes == 0:
        if labels is not None:
            raise EncoderInputError("this model is unconditional; do not pass labels")
        return None
    if labels is None:
        return np.full(n, meta.num_classes, dtype=np.int64)
    y = np.asarray(labels)
    if y.ndim == 0:
        y = np.full(n, int(y), dtype=np.int64)
    if y.ndim != 1 or len(y) != n:
        raise EncoderInputError(f"got {y.size} labels for {n} images")
    if not np.issubdtype(y.dtype, np.integer):
        raise EncoderInputError(f"labels must be integers; got dtype {y.dtype}")
    if y.min() < 0 or y.max() > meta.num_classes:
        raise EncoderInputError(f"labels must lie in [0, {meta.num_classes}] ({meta.num_classes} is the null label)")
    return y.astype(np.int64)


def read_onnx_meta(path: Path):
    """(session-ready bytes are not needed) Metadata of an alignlearn ONNX file, or a clear error."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ORT raises its own types for bad files
        raise UserError(f"{path} is not a valid ONNX file (truncated or corrupt?): {str(e).splitlines()[0][:200]}") from None
    props = session.get_modelmeta().custom_metadata_map
    return _meta_from_text(props.get(KEY), path)


def _meta_from_text(text: str | None, path: Path) -> EncoderMeta:
    if text is None:
        raise UserError(f"{path} is not an alignlearn encoder export (no '{KEY}' metadata)")
    try:
        return EncoderMeta.from_json(text)
    except (ValueError, TypeError, KeyError) as e:
        raise UserError(f"{path} is not an alignlearn encoder export: {e}") from None


def check_graph_against_meta(inputs: dict, meta: EncoderMeta, path: Path) -> None:
    """The graph's inputs must be what its metadata promises: the image shape (any batch), labels iff classes."""
    images = inputs.get("images")
    if images is None or [d if isinstance(d, int) else None for d in images[1:]] != list(meta.image_shape):
        raise UserError(f"{path}: its metadata says images of shape {tuple(meta.image_shape)} but its graph takes "
                        f"{images}; the file was altered or is not an alignlearn export")
    if ("labels" in inputs) != bool(meta.num_classes):
        raise UserError(f"{path}: its metadata says {meta.num_classes} classes but its graph "
                        f"{'takes' if 'labels' in inputs else 'takes no'} labels; the file was altered")


def cuda_device_count() -> int:
    """CUDA devices the driver reports (0 without a driver), read through libcuda without torch."""
    import ctypes

    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        try:
            lib = ctypes.CDLL("nvcuda.dll")
        except (OSError, AttributeError):
            return 0
    count = ctypes.c_int(0)
    if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def ort_providers() -> list[str]:
    """TensorRT EP, CUDA EP, CPU EP, in that order, among those this ONNX Runtime has and this machine can run.

    onnxruntime-gpu lists the GPU providers even on machines without a GPU, where asking
    for them only prints errors before falling back to the CPU.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    gpu = cuda_device_count() > 0
    return [p for p in ORT_PROVIDER_ORDER if p in available and (gpu or p == "CPUExecutionProvider")]


class _OrtBackend:
    name = "onnxruntime"

    def __init__(self, path: Path, meta: EncoderMeta, providers: list[str] | None):
        import onnxruntime as ort

        self.providers = providers or ort_providers()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=self.providers)
        except Exception as e:  # noqa: BLE001
            raise UserError(f"ONNX Runtime could not load {path}: {str(e).splitlines()[0][:200]}") from None
        self.providers = self.session.get_providers()
        self.max_batch = None
        check_graph_against_meta({i.name: i.shape for i in self.session.get_inputs()}, meta, path)

    def run(self, x: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        feeds = {"images": x}
        if labels is not None:
            feeds["labels"] = labels
        return self.session.run(["latents"], feeds)[0]


class _TensorRTBackend:
    name = "tensorrt"

    def __init__(self, path: Path, meta: EncoderMeta):
        from .tensorrt import import_tensorrt

        trt = import_tensorrt()
        self._cuda = _Cuda()
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise UserError(f"TensorRT could not load {path} (built for another GPU or TensorRT version?)")
        self.context = self.engine.create_execution_context()
        self.max_batch = int(self.engine.get_tensor_profile_shape("images", 0)[2][0])
        self.min_batch = int(self.engine.get_tensor_profile_shape("images", 0)[0][0])
        self.providers = [f"TensorRT {trt.__version__}"]
        self._buffers: dict[str, tuple[int, int]] = {}

    def _device(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self._cuda.free(ptr)
            ptr = self._cuda.malloc(nbytes)
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, x: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        if len(x) < self.min_batch:
            raise EncoderInputError(f"this engine's profile starts at batch {self.min_batch}; got {len(x)} images")
        out = np.empty_like(x)
        host = {"images": x, "latents": out}
        if labels is not None:
            host["labels"] = labels
        for name, arr in host.items():
            ptr = self._device(name, arr.nbytes)
            if name != "latents":
                self.context.set_input_shape(name, arr.shape)
                self._cuda.to_device(ptr, arr)
            self.context.set_tensor_address(name, ptr)
        if not self.context.execute_async_v3(self._cuda.stream):
            raise RuntimeError("TensorRT execution failed")
        self._cuda.to_host(out, self._buffers["latents"][0])
        return out


class _Cuda:
    """The few CUDA runtime calls the TensorRT backend needs: cuda-python, else torch's allocator."""

    def __init__(self):
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            try:
                from cuda import cudart
            except ImportError:
                cudart = None
        self.cudart = cudart
        if cudart is not None:
            self.stream = int(self._check(cudart.cudaStreamCreate()))
        else:
            import torch  # only when cuda-python is missing

            self._torch, self._tensors = torch, {}
            self._stream = torch.cuda.Stream()
            self.stream = self._stream.cuda_stream

    @staticmethod
    def _check(result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise RuntimeError(f"CUDA error {err}")
        return rest[0] if rest else None

    def malloc(self, nbytes: int) -> int:
        if self.cudart is not None:
            return int(self._check(self.cudart.cudaMalloc(nbytes)))
        t = self._torch.empty(nbytes, dtype=self._torch.uint8, device="cuda")
        self._tensors[t.data_ptr()] = t
        return t.data_ptr()

    def free(self, ptr: int) -> None:
        if self.cudart is not None:
            self._check(self.cudart.cudaFree(ptr))
        else:
            self._tensors.pop(ptr, None)

    def to_device(self, ptr: int, arr: np.ndarray) -> None:
        if self.cudart is not None:
            kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            self._check(self.cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, kind, self.stream))
        else:
            src = self._torch.from_numpy(arr.view(np.uint8).reshape(-1))
            with self._torch.cuda.stream(self._stream):
                self._tensors[ptr][: arr.nbytes].copy_(src, non_blocking=False)

    def to_host(self, out: np.ndarray, ptr: int) -> None:
        if self.cudart is not None:
            kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            self._check(self.cudart.cudaMemcpyAsync(out.ctypes.data, ptr, out.nbytes, kind, self.stream))
            self._check(self.cudart.cudaStreamSynchronize(self.stream))
        else:
            self._stream.synchronize()
            out.view(np.uint8).reshape(-1)[:] = self._tensors[ptr][: out.nbytes].cpu().numpy()


class _TorchBackend:
    name = "torch"

    def __init__(self, path: Path, device: str | None):
        import torch

        from alignlearn.models import load_model

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.cfg = load_model(path, device=self.device)
        if self.model.kind != "noiser":
            raise UserError(f"{path} holds a {self.model.kind} model, not a noiser")
        self.providers, self.max_batch = [f"torch {torch.__version__} ({self.device})"], None

    def run(self, x: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        from alignlearn.samplers import encode

        torch = self.torch
        with torch.no_grad():
            xt = torch.from_numpy(x).to(self.device)
            y = torch.from_numpy(labels).to(self.device) if labels is not None else None
            return encode(self.model, xt, eps=self.model.eps, labels=y).float().cpu().numpy()


def _meta_from_run(path: Path) -> EncoderMeta:
    from alignlearn.models import load_run_config

    from .metadata import meta_for

    return meta_for(load_run_config(path))


class Encoder:
    """A noiser that maps images to latents x_T in one network evaluation."""

    def __init__(self, path: str | Path, backend: str = "auto", *, providers: list[str] | None = None,
                 batch_size: int = 256, device: str | None = None):
        path = Path(path)
        if backend not in BACKENDS:
            raise UserError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        if not path.exists():
            raise UserError(f"{path} does not exist")
        kind = "run" if path.is_dir() else ("engine" if path.suffix in (".engine", ".plan") else "onnx")
        if backend == "auto":
            backend = {"run": "torch", "engine": "tensorrt", "onnx": "onnxruntime"}[kind]
        wanted = {"torch": "run", "tensorrt": "engine", "onnxruntime": "onnx"}[backend]
        if kind != wanted:
            raise UserError(f"backend {backend} needs a {'run folder' if wanted == 'run' else '.' + wanted + ' file'}; got {path}")
        if kind == "onnx":
            self.meta = read_onnx_meta(path)
            self._backend = _OrtBackend(path, self.meta, providers)
        elif kind == "engine":
            sidecar = Path(str(path) + ".json")
            if not sidecar.is_file():
                raise UserError(f"{path} has no metadata sidecar {sidecar.name}; is it an alignlearn engine?")
            self.meta = _meta_from_text(sidecar.read_text(), sidecar)
            self._backend = _TensorRTBackend(path, self.meta)
        else:
            self.meta = _meta_from_run(path)
            self._backend = _TorchBackend(path, device)
        self.path, self.backend = path, self._backend.name
        self.batch_size = min(batch_size, self._backend.max_batch or batch_size)

    @property
    def providers(self) -> list[str]:
        return list(self._backend.providers)

    def encode(self, images, labels=None) -> np.ndarray:
        """Latents x_T = f(x, eps) as float32 (N, C, H, W); large inputs run in batches."""
        x = prepare_images(images, self.meta)
        y = prepare_labels(labels, len(x), self.meta)
        out = []
        for i in range(0, len(x), self.batch_size):
            sl = slice(i, i + self.batch_size)
            out.append(self._backend.run(np.ascontiguousarray(x[sl]), None if y is None else np.ascontiguousarray(y[sl])))
        return np.concatenate(out)

    def __repr__(self) -> str:
        return f"Encoder({str(self.path)!r}, backend={self.backend!r}, providers={self.providers}, meta={json.loads(self.meta.to_json())})"
