"""Class-guided, style-preserving editing (report §4.2): encode with the source label, decode with a target label.

A class-conditional noiser maps each source image to its latent x_T; a
class-conditional decoder (consistency model: 1 NFE; diffusion model: an ODE
solver, with classifier-free guidance w) decodes it under every target label.
With `refine` K > 0 the latent first takes K gradient steps that lower its
reconstruction error through the consistency decoder under the source label
(the recon probe's refinement), trading NFE for fidelity to the source's style.
`cm_mid` decodes with multistep consistency sampling: after the step from T the
estimate is re-noised to each given level and denoised again (1 NFE each).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from alignlearn.errors import UserError
from alignlearn.samplers import cm_sample, encode, guided, ode_sample
from alignlearn.schedule import karras_sigmas

from .classifier import train_judge
from .grids import save_labelled_grid
from .loading import Loaded, check_compatible, evaluation_split, load_role
from .metrics import ssim
from .recon import prior as prior_latents
from .refine import refine_latents

MAX_GUIDANCE = 20.0


def load_decoder(path, device) -> Loaded:
    return load_role(path, "decoder", ("cm", "edm"), device, expected="a consistency (ct) or diffusion (edm) model")


def decode(dec: Loaded, z: torch.Tensor, labels: torch.Tensor, guidance: float, steps: int, cm_mid=(),
           generator: torch.Generator | None = None) -> torch.Tensor:
    """The decoder's sample from the latent z at T: one consistency step (then one more per `cm_mid` noise
    level, re-noised with `generator`), or `steps` Euler steps of the PF-ODE for a diffusion model."""
    D = guided(dec.model, guidance, null_label=dec.num_classes)
    if dec.model.kind == "cm":
        return cm_sample(D, z, [dec.model.T, *cm_mid], labels=labels, eps=dec.model.eps, generator=generator)
    return ode_sample(D, z, karras_sigmas(steps + 1, dec.model.eps, dec.model.T).flip(0), labels=labels, method="euler")


def _consistency_levels(dec: Loaded, refine: int, cm_mid: list[float]) -> list[float] | None:
    """Check the options that only a consistency decoder takes; its noise levels (T, then cm_mid), or None."""
    if refine < 0:
        raise UserError(f"--refine {refine} must be 0 (off) or a positive number of steps")
    if dec.model.kind != "cm":
        for flag, used in (("--refine steps through", refine), ("--cm-mid sets multistep decoding with", cm_mid)):
            if used:
                raise UserError(f"{flag} a consistency-model decoder; this decoder is a diffusion model")
        return None
    levels = [dec.model.T, *cm_mid]
    if any(not dec.model.eps < t < dec.model.T for t in cm_mid) or any(a <= b for a, b in zip(levels, levels[1:])):
        raise UserError(f"--cm-mid {cm_mid} must decrease strictly between eps={dec.model.eps:g} and T={dec.model.T:g}")
    return levels


def run_edit(noiser, decoder, *, guidance=(1.0,), targets=None, data=None, data_dir=None, per_class: int = 2,
             dm_steps: int = 30, judge_epochs: int = 10, out_dir="edit", device: str = "cpu", grid_guidance: float | None = None,
             refine: int = 0, refine_lr: float = 0.5, cm_mid=(), seed: int = 0, judge=None) -> dict:
    """`judge`: a classifier from `train_judge` on the same data, to share one between calls (trained here when None)."""
    n = load_role(noiser, "noiser", "noiser", device)
    if n is None:
        raise UserError("--noiser is required")
    dec = load_decoder(decoder, device)
    for m in (n, dec):
        if m.num_classes == 0:
            raise UserError(f"--{m.role} {m.path} is unconditional; editing needs class-conditional models (train with --class-cond)")
    check_compatible([n, dec])
    cm_mid = [float(t) for t in cm_mid]
    levels = _consistency_levels(dec, refine, cm_mid)
    guidance = [float(w) for w in guidance]
    for w in guidance:
        if not 0.0 <= w <= MAX_GUIDANCE:
            raise UserError(f"guidance {w} is out of range [0, {MAX_GUIDANCE:g}]")
    K = n.num_classes
    targets = list(range(K)) if targets is None else [int(t) for t in targets]
    bad = [t for t in targets if not 0 <= t < K]
    if bad:
        raise UserError(f"targets {bad} are not classes of this model (0..{K - 1})")
    train, test = evaluation_split(n, data, data_dir)
    # sources: the first `per_class` held-out images of each class
    idx = torch.cat([torch.nonzero(test.labels == c).flatten()[:per_class] for c in range(K)])
    x0, y0 = test.images[idx].to(device), test.labels[idx].to(device)
    judge = judge if judge is not None else train_judge(train, test, epochs=judge_epochs, device=device)

    z = encode(n.model, x0, eps=n.model.eps, labels=y0)
    if refine:
        z = refine_latents(dec, x0, z, y0, refine, refine_lr)
    report = {"data": train.source or train.name, "sources": len(x0), "targets": targets, "judge_test_accuracy": judge.test_accuracy,
              "refine": refine,
              "decoder": dec.model.kind, "dm_steps": dm_steps if dec.model.kind == "edm" else None,
              "cm_sigmas": levels,
              "noiser": str(n.path), "decoder_path": str(dec.path), "sweep": []}
    grids = {}
    for w in guidance:
        gen = torch.Generator(device=x0.device).manual_seed(seed)  # the same re-noising draws for every w
        outs = {t: decode(dec, z, torch.full_like(y0, t), w, dm_steps, cm_mid, gen) for t in targets}
        report["sweep"].append({"guidance": w, **_scores(outs, x0, y0, judge)})
        grids[w] = outs
    w_grid = grid_guidance if grid_guidance in grids else guidance[0]
    # The floor: fresh latents instead of the sources' decode to the target class with no trace of the source,
    # so "style preserved" means SSIM above this row's.
    z_prior = prior_latents(n.model.T, seed + 1).fn(z, None)
    gen = torch.Generator(device=x0.device).manual_seed(seed)
    prior = {t: decode(dec, z_prior, torch.full_like(y0, t), w_grid, dm_steps, cm_mid, gen) for t in targets}
    report["prior"] = {"guidance": w_grid, **_scores(prior, x0, y0, judge)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    show = torch.arange(0, len(x0), per_class)[:20]  # the grid shows one source per class, at most 20 columns
    blocks = [("sources", x0[show])] + [(f"-> {t}", grids[w_grid][t][show]) for t in targets]
    save_labelled_grid(blocks, out / "edit_grid.png")
    report["grid_guidance"] = w_grid
    (out / "edit.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "edit.md").write_text(markdown(report))
    return report


def _scores(outs: dict[int, torch.Tensor], x0: torch.Tensor, y0: torch.Tensor, judge) -> dict:
    """Conversion success (the judge's verdict on sources decoded to another class) and SSIM to the source,
    for target = source class and for the other targets."""
    converted, hits, cross_ssim, same_ssim = 0, 0, [], []
    for t, imgs in outs.items():
        pred = judge.predict(imgs)
        s = ssim(imgs, x0, reduction="none").cpu()
        other = y0.cpu() != t
        hits += int((pred[other] == t).sum())
        converted += int(other.sum())
        cross_ssim += s[other].tolist()
        same_ssim += s[~other].tolist()
    return {"conversion_success": hits / max(converted, 1),
            "ssim_same_class": sum(same_ssim) / max(len(same_ssim), 1),
            "ssim_across_targets": sum(cross_ssim) / max(len(cross_ssim), 1)}


def markdown(report: dict) -> str:
    refined = f", latents refined {report['refine']} steps" if report.get("refine") else ""
    steps = f" ({report['dm_steps']} Euler steps)" if report.get("dm_steps") else ""
    if report.get("cm_sigmas") and len(report["cm_sigmas"]) > 1:
        steps = f" ({len(report['cm_sigmas'])} steps at t = {', '.join(f'{t:g}' for t in report['cm_sigmas'])})"
    lines = [f"# Class-guided editing: {report['data']}, {report['sources']} sources, decoder {report['decoder']}{steps}{refined}", "",
             f"Conversion success is judged by a CNN trained on the real training split (held-out accuracy "
             f"{report['judge_test_accuracy']:.4f}). SSIM is to the source image.", "",
             "| guidance w | conversion success | SSIM, target = source | SSIM, other targets |", "|---|---|---|---|"]
    for r in report["sweep"]:
        lines.append(f"| {r['guidance']:g} | {r['conversion_success']:.4f} | {r['ssim_same_class']:.4f} | {r['ssim_across_targets']:.4f} |")
    if "prior" in report:
        r = report["prior"]
        lines.append(f"| {r['guidance']:g}, prior latents | {r['conversion_success']:.4f} | {r['ssim_same_class']:.4f} | "
                     f"{r['ssim_across_targets']:.4f} |")
        lines += ["", "Prior latents: fresh N(0, T^2 I) draws instead of the sources' latents, decoded to the same targets: "
                  "samples of the target class with nothing of the source, the floor for SSIM."]
    return "\n".join(lines) + "\n"
