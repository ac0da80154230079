"""Run folders and checkpoints: safetensors weights plus JSON, written atomically.

RUN/
  config.json            the resolved run configuration (model, objective, data, training)
  metrics.jsonl          one JSON line per logging interval
  samples/*.png          periodic sample / encode grids
  checkpoints/step_XXXXXXXX/{model,ema,target,optimizer}.safetensors + state.json
  checkpoints/latest.json  {"path": "step_XXXXXXXX"}, replaced atomically after each save
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import UserError

CONFIG = "config.json"
CKPT_DIR = "checkpoints"
LATEST = "latest.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, fsync it, then rename over it (never a half-written file)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 is for secrets; these are ordinary files
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


TEMPORARY_CHECKPOINT = ".step_"  # the prefix of a checkpoint being written (save_checkpoint)


def remove_stale_temporaries(run_dir: Path) -> None:
    """Checkpoint folders a kill or a full disk left half-written (this tool's own naming only)."""
    root = Path(run_dir) / CKPT_DIR
    for p in root.glob(f"{TEMPORARY_CHECKPOINT}*") if root.is_dir() else ():
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def read_json(path: Path) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is corrupt: {e}") from None


def flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state as flat tensors (safetensors) + JSON for its hyper-parameters."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def _cpu(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


def save_checkpoint(run_dir: Path, step: int, *, model, ema, optimizer, target=None, state: dict, keep: int = 2) -> Path:
    """Write checkpoint `step` into a temporary folder, rename it into place, then point latest.json at it."""
    root = Path(run_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    final = root / name
    pointer = root / LATEST
    if final.is_dir() and _named(pointer) == name:
        return final  # this step is saved already, and latest.json names it: never remove that folder
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
        _write_checkpoint(tmp, model=model, ema=ema, optimizer=optimizer, target=target, state={**state, "step": step})
    except (OSError, SafetensorError) as e:  # a full disk, a read-only or vanished folder: the last checkpoint stays
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        kept = f"; {pointer} still names {_named(pointer)}" if _named(pointer) else ""
        raise UserError(f"cannot write checkpoint {name} in {root}: {getattr(e, 'strerror', None) or e}{kept}") from None
    if final.exists():  # a complete copy that latest.json does not name (a crash between rename and pointer)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    write_json_atomic(pointer, {"path": name})
    old = sorted(p for p in root.glob("step_*") if p.is_dir())
    for p in old[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
    return final


def _named(pointer: Path) -> str | None:
    """The checkpoint folder latest.json names, or None (no file, or not a pointer)."""
    try:
        name = json.loads(pointer.read_text()).get("path")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def _write_checkpoint(tmp: Path, *, model, ema, optimizer, target, state: dict) -> None:
    """Every file of a checkpoint into tmp, each fsynced, with the SHA-256 of each weights file in state.json."""
    os.chmod(tmp, 0o777 & ~_umask())
    save_file(_cpu(model.state_dict()), str(tmp / "model.safetensors"))
    save_file(_cpu(ema.module.state_dict()), str(tmp / "ema.safetensors"))
    if target is not None:
        save_file(_cpu(target.module.state_dict()), str(tmp / "target.safetensors"))
    opt_tensors, opt_meta = flatten_optimizer(optimizer)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    sums = {f.name: sha256(f) for f in sorted(tmp.glob("*.safetensors"))}
    write_json_atomic(tmp / "state.json", {**state, "optimizer": opt_meta, "sha256": sums})
    for f in tmp.iterdir():  # the data on disk before any name points at it; ordinary file modes
        os.chmod(f, 0o666 & ~_umask())
        with open(f, "rb") as handle:
            os.fsync(handle.fileno())
    _fsync_dir(tmp)


def latest_checkpoint(run_dir: Path) -> Path:
    """The folder latest.json points to; one clear error if the run has none or it is damaged."""
    run_dir = Path(run_dir)
    if (run_dir / "state.json").is_file():  # a checkpoint folder given directly
        return run_dir
    if not run_dir.exists():
        raise UserError(f"{run_dir} does not exist")
    pointer = run_dir / CKPT_DIR / LATEST
    if not pointer.is_file():
        raise UserError(f"{run_dir} holds no checkpoint (no {CKPT_DIR}/{LATEST}); is it an alignlearn run folder?")
    name = _named(pointer)
    if name is None or not name.startswith("step_") or "/" in name:
        raise UserError(f"{pointer} is corrupt: it names no checkpoint folder")
    path = run_dir / CKPT_DIR / name
    if not (path / "state.json").is_file():
        raise UserError(f"checkpoint {path} is missing or incomplete")
    verify_checkpoint(path)
    return path


def sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_checkpoint(path: Path) -> None:
    """Each weights file against the SHA-256 its state.json recorded (checkpoints written before 0.2.0 have none)."""
    state = read_json(path / "state.json")
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or state["step"] < 0:
        raise UserError(f"{path / 'state.json'} is corrupt: no valid step")
    for name, expected in (state.get("sha256") or {}).items():
        f = path / name
        if not f.is_file():
            raise UserError(f"checkpoint {path} is incomplete: {name} is missing")
        if sha256(f) != expected:
            raise UserError(f"{f} is corrupt: its SHA-256 differs from the one recorded when it was saved")


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise UserError(f"{path} not found") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path} is corrupt: {e}") from None


def load_weights(module: torch.nn.Module, path: Path) -> None:
    """Load a safetensors state dict strictly; a mismatch is the user's (wrong file), not ours."""
    sd = load_tensors(path)
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(f"{path} does not fit this model: {first}") from None


def pack_run(run_dir: Path, out_dir: Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """A small copy of a run for transport: config.json and the EMA weights in `dtype`, loadable as a run.

    Training state (optimizer, raw weights) is left out, so a packed run cannot be resumed.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    src = latest_checkpoint(run_dir)
    dst = out_dir / CKPT_DIR / src.name
    dst.mkdir(parents=True, exist_ok=True)
    ema = load_tensors(src / "ema.safetensors")
    save_file({k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in ema.items()}, str(dst / "ema.safetensors"))
    state = read_json(src / "state.json")
    write_json_atomic(dst / "state.json", {"step": state["step"], "packed": str(dtype).replace("torch.", ""),
                                           "sha256": {"ema.safetensors": sha256(dst / "ema.safetensors")}})
    write_json_atomic(out_dir / CKPT_DIR / LATEST, {"path": src.name})
    shutil.copyfile(run_dir / CONFIG, out_dir / CONFIG)
    return out_dir
