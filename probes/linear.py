"""Linear probes: how much of an image's class its features carry (standardise + logistic regression).

Rows: raw pixels, the noiser's latents x_T, the noiser's pooled block features,
the same architecture with random weights, and DDIM-inversion latents when a
diffusion model is given. Class-conditional models encode with the null label,
so no feature sees the class it is probed for.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from alignlearn.errors import UserError
from alignlearn.models import build_model
from alignlearn.samplers import ddim_invert
from alignlearn.schedule import karras_sigmas

from .features import DEFAULT_BLOCK, noiser_features
from .loading import evaluation_split, load_noiser_and_dm


def probe_accuracy(X: np.ndarray, y: np.ndarray, seeds: int, test_size: float = 0.2) -> list[float]:
    """Held-out accuracy of standardise + logistic regression on `seeds` stratified splits."""
    accs = []
    for seed in range(seeds):
        tr, te = next(StratifiedShuffleSplit(n_splits=1, test_size=test_size, random_state=seed).split(X, y))
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        clf.fit(X[tr], y[tr])
        accs.append(float(clf.score(X[te], y[te])))
    return accs


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_linear(noiser, dm=None, *, data=None, data_dir=None, block: str = DEFAULT_BLOCK, seeds: int = 3,
               max_images: int = 5000, ddim_steps: int = 30, split: str = "all", out_dir="linear", device: str = "cpu") -> dict:
    """The probe pool is `split`: "all" (train and test together) or "test" (images no model trained on)."""
    if seeds < 1:
        raise UserError("--seeds must be at least 1")
    if split not in ("all", "test"):
        raise UserError(f"--split must be all or test, not {split!r}")
    n, d = load_noiser_and_dm(noiser, dm, device)
    train, test = evaluation_split(n, data, data_dir)
    pool = [test] if split == "test" else [train, test]
    images = torch.cat([s.images for s in pool])
    labels = torch.cat([s.labels for s in pool]).numpy()
    if len(np.unique(labels)) < 2:
        raise UserError("the linear probe needs a labelled data set with at least 2 classes")
    if len(images) > max_images:
        keep, _ = next(StratifiedShuffleSplit(n_splits=1, train_size=max_images, random_state=0).split(labels, labels))
        keep = np.sort(keep)
        images, labels = images[keep], labels[keep]
    null = lambda m: torch.full((len(images),), m.num_classes, dtype=torch.long) if m.num_classes else None  # noqa: E731

    torch.manual_seed(0)
    random_model = build_model(n.cfg.model).to(device).eval()
    rows = []

    def add(name, fn):
        X, secs = _timed(fn)
        accs = probe_accuracy(X, labels, seeds)
        rows.append({"features": name, "dim": int(X.shape[1]), "accuracy_mean": float(np.mean(accs)),
                     "accuracy_std": float(np.std(accs)), "accuracies": accs,
                     "encode_ms_per_image": 1e3 * secs / len(images)})

    add("raw pixels", lambda: images.flatten(1).numpy())
    add("noiser latent x_T (1 NFE)", lambda: noiser_features(n.model, images, null(n), "latent"))
    add(f"noiser features [{block}]", lambda: noiser_features(n.model, images, null(n), "features", block))
    add(f"random-init features [{block}]", lambda: noiser_features(random_model, images, null(n), "features", block))
    if d is not None:
        up = karras_sigmas(ddim_steps + 1, d.model.eps, d.model.T)

        def ddim():
            out = []
            for i in range(0, len(images), 256):
                x = images[i : i + 256].to(device)
                y = null(d)[i : i + 256].to(device) if d.num_classes else None
                out.append(ddim_invert(d.model, x, up, labels=y).flatten(1).cpu())
            return torch.cat(out).numpy()

        add(f"DDIM-inversion latent ({ddim_steps} NFE)", ddim)
    report = {"data": train.source or train.name, "split": split, "images": len(images), "classes": int(len(np.unique(labels))), "seeds": seeds,
              "chance": float(np.max(np.bincount(labels)) / len(labels)), "block": block, "rows": rows,
              "noiser": str(n.path), "dm": str(d.path) if d else None}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "linear.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "linear.md").write_text(markdown(report))
    return report


def markdown(report: dict) -> str:
    pool = "test split" if report.get("split") == "test" else "train and test"
    lines = [f"# Linear probe: {report['data']} ({pool}), {report['images']} images, {report['classes']} classes",
             "", f"Standardise + logistic regression, 80/20 stratified splits, {report['seeds']} seeds (mean ± std); "
             f"majority-class rate {report['chance']:.3f}.", "",
             "| features | dim | accuracy | encode ms / image |", "|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['features']} | {r['dim']} | {r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f} | {r['encode_ms_per_image']:.3f} |")
    return "\n".join(lines) + "\n"
