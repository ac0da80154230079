"""Fidelity probe: how exactly a noiser inverts the probability-flow ODE, measured against its endpoint.

The reference endpoint x_T*(x0) of each clean image (taken as x_eps) is exact where the data set has a
known PF-ODE (gmm-digits: alignlearn/gmm.py; its solver's own error bounded by halving the step), and
otherwise a many-step Heun inversion through a trained diffusion model, labelled as such: it carries the
DM's error, its discretisation error is bounded by halving, and a DDIM_Inv 30 against 200 row shows how
far discretisation alone moves a latent. Errors are split between the data's principal subspace and its
complement, where an exact map from a clean image puts (almost) no energy.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from alignlearn.errors import UserError
from alignlearn.gmm import FLOOR, GaussianMixture, exact_mixture, principal_basis_of
from alignlearn.samplers import ddim_invert, encode, encode_levels, ode_sample
from alignlearn.schedule import karras_sigmas
from alignlearn.timing import device_name, synchronize

from .loading import Loaded, evaluation_split, load_noiser_and_dm
from .recon import batched, evenly_spaced

REF_STEPS = 256  # Heun steps of a DM reference; RK4 steps in ln t of an exact one
MIN_DM_REF_STEPS = 200
DDIM_STEPS = (10, 30, 100)
FLOOR_PAIR = (30, 200)  # DDIM_Inv 30 against 200 with the reference's DM: how far discretisation alone moves a latent
LEVELS = 8  # noise levels between eps and T at which the noiser is checked along the reference trajectories


@dataclass
class Reference:
    """Endpoints and trajectory points of the reference PF-ODE for a batch of clean images."""

    label: str
    endpoints: torch.Tensor  # (N, ...) float64
    levels: list[float]
    points: list[torch.Tensor]  # x_t on each reference trajectory at each level
    error_median: float  # relative change of an endpoint when the solver's step is halved
    error_max: float


def _rel_change(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)


def exact_reference(gmm: GaussianMixture, x0, labels, eps: float, T: float, steps: int) -> Reference:
    """The mixture's PF-ODE: closed form under a label, RK4 in ln t (steps, and steps/2 for the bound) without."""
    s_grid = torch.linspace(math.log(eps), math.log(T), steps + 1, dtype=torch.float64)
    stops = evenly_spaced(steps, LEVELS + 1)[:-1].tolist()  # indices of the levels below T
    levels = [math.exp(float(s_grid[i])) for i in stops]
    if labels is not None:
        points = [gmm.conditional_flow(x0.double(), eps, t, labels) for t in levels]
        return Reference(f"exact PF-ODE endpoint of {gmm.num_classes}-component mixture, given the label (closed form)",
                         gmm.conditional_flow(x0.double(), eps, T, labels), levels, points, 0.0, 0.0)
    points, x = [], x0.double()
    previous = eps
    for t in levels:  # the trajectory piecewise, at the grid's own step
        n = round((math.log(t) - math.log(previous)) / ((math.log(T) - math.log(eps)) / steps))
        x = gmm.flow(x, previous, t, n) if n else x
        points.append(x)
        previous = t
    n = round((math.log(T) - math.log(previous)) / ((math.log(T) - math.log(eps)) / steps))
    end = gmm.flow(x, previous, T, n)
    half = gmm.flow(x0.double(), eps, T, steps // 2)
    change = _rel_change(half, end)
    return Reference(f"exact PF-ODE endpoint of the {gmm.num_classes}-component mixture (RK4, {steps} steps in ln t)",
                     end, levels, points, change.median().item(), change.max().item())


def dm_reference(dm: Loaded, x0, labels, steps: int, eps: float, T: float) -> Reference:
    """Heun along a rising Karras grid from eps to T (the noiser's levels: a DM's own range may differ, as a
    diffusers model's does) through the DM (labels: the DM's own, or None), states kept at LEVELS grid points;
    halving the step bounds its discretisation error."""
    up = karras_sigmas(steps + 1, eps, T)
    stops = evenly_spaced(steps, LEVELS + 1)[:-1].tolist()
    y, x, points, previous = labels, x0, [], 0
    for i in stops + [steps]:  # sampler.ode_sample's Heun, segment by segment, keeping each stop's state
        x = ode_sample(dm.model, x, up[previous : i + 1], labels=y, method="heun") if i > previous else x
        points.append(x.double())
        previous = i
    points, levels = points[:-1], [float(up[i]) for i in stops]
    half = ode_sample(dm.model, x0, karras_sigmas(steps // 2 + 1, eps, T), labels=y, method="heun")
    change = _rel_change(half.double(), x.double())
    return Reference(f"the diffusion model's PF-ODE ({steps} Heun steps, {dm.path}): carries the DM's own error",
                     x.double(), levels, points, change.median().item(), change.max().item())


def agreement(z: torch.Tensor, ref: torch.Tensor, basis: torch.Tensor) -> dict:
    """Relative L2 and cosine to the reference, overall and in the principal subspace (basis, (D, r)), the
    error energy outside it relative to the reference's norm, and the latents' std against the reference's."""
    z, ref = z.double().flatten(1).cpu(), ref.double().flatten(1).cpu()
    err = z - ref
    zp, rp, ep = z @ basis, ref @ basis, err @ basis
    off = (err - ep @ basis.T).norm(dim=1) / ref.norm(dim=1)
    rel = err.norm(dim=1) / ref.norm(dim=1)
    rel_p = ep.norm(dim=1) / rp.norm(dim=1)
    cos = torch.nn.functional.cosine_similarity(z, ref, dim=1)
    cos_p = torch.nn.functional.cosine_similarity(zp, rp, dim=1)

    def q(v, p):
        return float(torch.quantile(v, p))

    return {"rel_l2_median": q(rel, 0.5), "rel_l2_p90": q(rel, 0.9), "cosine_median": q(cos, 0.5),
            "cosine_p10": q(cos, 0.1), "principal_rel_l2_median": q(rel_p, 0.5), "principal_rel_l2_p90": q(rel_p, 0.9),
            "principal_cosine_median": q(cos_p, 0.5), "off_subspace_median": q(off, 0.5), "off_subspace_p90": q(off, 0.9),
            "std_ratio": float(z.std() / ref.std())}


def _timed(fn, device):
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - t0


def run_fidelity(noiser, dm=None, *, data=None, data_dir=None, num_images: int = 256, ref_steps: int = REF_STEPS,
                 batch_size: int = 64, out_dir="fidelity", device: str = "cpu") -> dict:
    """Every check that can refuse the inputs runs before anything is computed or written."""
    n, d = load_noiser_and_dm(noiser, dm, device)
    train, test = evaluation_split(n, data, data_dir)
    gmm = exact_mixture(test.name)
    if gmm is None and d is None:
        raise UserError(f"data set {test.name} has no exact PF-ODE endpoint; pass --dm RUN for a many-step reference")
    if gmm is not None and tuple(gmm.shape) != tuple(test.shape):
        raise UserError(f"the exact model of {test.name} has images of shape {gmm.shape}, the data {test.shape}")
    if gmm is None and ref_steps < MIN_DM_REF_STEPS:
        raise UserError(f"--ref-steps must be at least {MIN_DM_REF_STEPS} for a diffusion-model reference")
    if ref_steps < 32:
        raise UserError("--ref-steps must be at least 32")
    if n.num_classes and d is not None and not d.num_classes:
        raise UserError("a class-conditional noiser inverts the label's PF-ODE: --dm must be class-conditional too")

    idx = evenly_spaced(len(test), num_images)
    x0 = test.images[idx].to(device)
    labels = test.labels[idx].to(device) if n.num_classes else None  # a conditional noiser encodes with the label
    eps, T = n.model.eps, n.model.T
    # The DM's labels: a conditional noiser's reference is its label's ODE; an unconditional one's is the
    # unconditional ODE, which a class-conditional DM computes with its null label.
    dm_labels = None
    if d is not None and d.num_classes:
        dm_labels = labels if n.num_classes else torch.full((len(x0),), d.num_classes, device=device)
    if gmm is not None:
        ref = exact_reference(gmm, x0.cpu(), None if labels is None else labels.cpu(), eps, T, ref_steps)
        basis = gmm.principal_basis()
    else:
        ref = dm_reference(d, x0, dm_labels, ref_steps, eps, T)
        basis = principal_basis_of(torch.cov(train.images.double().flatten(1).T), FLOOR**2)

    rows = []

    def add(name, nfe, fn, y, against=None):
        z, secs = _timed(lambda: batched(fn, x0, y, batch_size), device)
        rows.append({"encoder": name, "nfe": nfe, "seconds": secs,
                     **agreement(z, ref.endpoints if against is None else against, basis)})
        return z

    def ddim(model, k, on_cpu=False):
        up = karras_sigmas(k + 1, eps, T)
        if on_cpu:  # the exact denoiser computes in float64 on the CPU
            return lambda x, y: ddim_invert(model, x.double().cpu(), up, labels=None if y is None else y.cpu())
        return lambda x, y: ddim_invert(model, x, up, labels=y)

    with torch.no_grad():
        add("CT_Inv", len(encode_levels(n.model, eps)), lambda x, y: encode(n.model, x, eps=eps, labels=y), labels)
        if gmm is not None:
            for k in DDIM_STEPS:
                add(f"DDIM_Inv {k}, exact denoiser", k, ddim(gmm.denoiser, k, on_cpu=True), labels)
        if d is not None:
            latents = {k: add(f"DDIM_Inv {k}, diffusion model", k, ddim(d.model, k), dm_labels) for k in DDIM_STEPS}
            if gmm is None:  # the noise floor of a DM reference: what discretisation alone does to a latent
                fine = batched(ddim(d.model, FLOOR_PAIR[1]), x0, dm_labels, batch_size)
                rows.append({"encoder": f"DDIM_Inv {FLOOR_PAIR[0]} against DDIM_Inv {FLOOR_PAIR[1]} (noise floor)",
                             "nfe": FLOOR_PAIR[0], "seconds": None, **agreement(latents[FLOOR_PAIR[0]], fine, basis)})
        trajectory = []
        for t, x_t in zip(ref.levels, ref.points):
            tb = torch.full((len(x_t),), t, device=device)
            z = batched(lambda x, y: n.model(x, tb[: len(x)], y), x_t.float().to(device), labels, batch_size)
            a = agreement(z, ref.endpoints, basis)
            trajectory.append({"t": t, "rel_l2_median": a["rel_l2_median"], "rel_l2_p90": a["rel_l2_p90"]})

    report = {"data": test.source or test.name, "images": len(x0), "noiser": str(n.path), "dm": str(d.path) if d else None,
              "conditional": bool(n.num_classes), "reference": ref.label, "exact": gmm is not None,
              "reference_error_median": ref.error_median, "reference_error_max": ref.error_max,
              "principal_dim": int(basis.shape[1]), "dim": int(basis.shape[0]), "device": device_name(device),
              "rows": rows, "trajectory": trajectory}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_trajectory(trajectory, out / "fidelity_trajectory.png", report)
    (out / "report.md").write_text(markdown(report))
    return report


def plot_trajectory(trajectory: list[dict], path: Path, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    t = [p["t"] for p in trajectory]
    ax.plot(t, [p["rel_l2_median"] for p in trajectory], "o-", label="median")
    ax.plot(t, [p["rel_l2_p90"] for p in trajectory], "s--", label="90th percentile")
    ax.set_xscale("log")
    ax.set_xlabel("noise level t of x_t on the reference trajectory")
    ax.set_ylabel("relative L2 of f(x_t, t) to x_T*")
    ax.set_title(f"{report['data']}: the noiser along trajectories", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(report: dict) -> str:
    bound = ("closed form" if report["reference_error_max"] == 0 else
             f"halving the solver's step moves an endpoint by {report['reference_error_median']:.2e} (median), "
             f"{report['reference_error_max']:.2e} (max), relative")
    lines = [f"# Fidelity: {report['data']}, {report['images']} held-out images"
             + (" (class-conditional, each image's label)" if report["conditional"] else ""), "",
             f"Reference x_T*: {report['reference']}; {bound}. Principal subspace: {report['principal_dim']} of "
             f"{report['dim']} dimensions (data-covariance eigenvalues above 4 x {FLOOR}^2). Device: {report['device']}.", "",
             "| encoder | NFE | rel. L2 median | rel. L2 p90 | cosine median | cosine p10 | principal rel. L2 median | "
             "principal cosine median | off-subspace error median | std / reference std | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        secs = f"{r['seconds']:.2f}" if r["seconds"] is not None else ""
        lines.append(f"| {r['encoder']} | {r['nfe']} | {r['rel_l2_median']:.4f} | {r['rel_l2_p90']:.4f} | "
                     f"{r['cosine_median']:.4f} | {r['cosine_p10']:.4f} | {r['principal_rel_l2_median']:.4f} | "
                     f"{r['principal_cosine_median']:.4f} | {r['off_subspace_median']:.4f} | {r['std_ratio']:.3f} | {secs} |")
    lines += ["", "Off-subspace error: the error's energy outside the principal subspace, relative to the reference's norm.",
              "Along trajectories, f(x_t, t) against the same endpoint (median relative L2): "
              + ", ".join(f"t={p['t']:.3g}: {p['rel_l2_median']:.4f}" for p in report["trajectory"])
              + " (plotted in fidelity_trajectory.png).", ""]
    return "\n".join(lines)
