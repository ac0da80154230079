"""Algorithm 1 on a 1-D Gaussian mixture whose exact encoding map is known (report Figure 1, made smooth).

    python benchmarks/toy_inversion.py                      # the default ct-inversion recipe
    python benchmarks/toy_inversion.py --ablation           # plus the plain iCT recipe and variants
    python benchmarks/toy_inversion.py --seeds 0,1,2

Trains small MLP noisers with the `ct-inversion` objective through the same
trainer as images, compares f(x_eps, eps) with the exact x_T (fine Heun
integration of the analytic PF-ODE) on held-out points, shows DDIM inversion
with the exact denoiser beside it, appends records to results/ and saves a plot
(t against x_t, coloured by the predicted x_T / T) as toy_inversion.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import torch

from alignlearn.config import TrainConfig, make_run_config
from alignlearn.data import ImageData
from alignlearn.models import load_model
from alignlearn.objectives import ObjectiveConfig
from alignlearn.results import record_row
from alignlearn.samplers import ddim_invert, encode, ode_sample
from alignlearn.schedule import karras_sigmas
from alignlearn.toy import GaussianMixture1D

RECIPES = {
    "default (uniform lambda, uniform P, EMA target 0.95)": {},
    "plain iCT (1/dt lambda, lognormal P, stop-grad)": dict(weighting="inverse-dt", scale_distribution="lognormal", target="stopgrad"),
    "uniform lambda, uniform P, stop-grad": dict(target="stopgrad"),
    "1/dt lambda, uniform P, EMA 0.95": dict(weighting="inverse-dt"),
    "uniform lambda, lognormal P, EMA 0.95": dict(scale_distribution="lognormal"),
    "cd-inversion, exact denoiser as teacher (default recipe)": dict(objective="cd-inversion"),
    "default with N fixed at 11 (s1 = 10)": dict(s1=10),
    "default with N up to 21 (s1 = 20)": dict(s1=20),
}


def train_noiser(run_dir: Path, recipe: dict, seed: int, steps: int, curriculum: int):
    mix = GaussianMixture1D()
    x = mix.sample(20000, generator=torch.Generator().manual_seed(0))
    data = ImageData("mixture-1d", x, torch.zeros(len(x), dtype=torch.long), 0)
    recipe = dict(recipe)
    obj = ObjectiveConfig(recipe.pop("objective", "ct-inversion"), curriculum_steps=curriculum, **recipe)
    tc = TrainConfig(steps=steps, batch_size=512, lr=1e-3, warmup=100, log_every=500, ckpt_every=10**9,
                     sample_every=10**9, device="cpu", seed=seed)
    cfg = make_run_config(obj, tc, data_name="mixture-1d", shape=(1,), num_classes=0, preset="mlp")
    from alignlearn.trainer import train

    t0 = time.time()
    teacher = (lambda x, t, labels: mix.denoiser(x, t)) if obj.name == "cd-inversion" else None
    train(cfg, run_dir, show_progress=False, data=(data, data), teacher=teacher)
    return load_model(run_dir)[0], time.time() - t0


def held_out(n: int = 2000):
    mix = GaussianMixture1D()
    x0 = mix.sample(n, generator=torch.Generator().manual_seed(1))
    x_eps = x0 + 0.002 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    return x_eps, mix.exact_endpoint(x_eps.double()).float()


def figure(noiser, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mix = GaussianMixture1D()
    ts = karras_sigmas(60, 0.002, 80.0).float()
    xs = torch.linspace(-2.0, 2.0, 241)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, title, fn in (
        (axes[0], "exact x_T / T (PF-ODE)", lambda x, t: ode_sample(mix.denoiser, x.double(), karras_sigmas(400, t, 80.0), method="heun").float()),
        (axes[1], "CT-Inversion f(x_t, t) / T (1 NFE)", lambda x, t: encode(noiser, x, eps=t)),
    ):
        for t in ts.tolist():
            x = (xs * max(1.0, t))[:, None]  # widen with the noise so every row shows the data's spread
            c = fn(x, t).flatten() / 80.0
            ax.scatter(x.flatten(), [t] * len(x), c=c, cmap="coolwarm", vmin=-2.5, vmax=2.5, s=2)
        for x0 in torch.linspace(-1.2, 1.2, 9):  # exact trajectories from eps up to T
            traj = [x0.double().view(1, 1)]
            for a, b in zip(ts[:-1].tolist(), ts[1:].tolist()):
                traj.append(ode_sample(mix.denoiser, traj[-1], karras_sigmas(20, a, b), method="heun"))
            ax.plot([v.item() for v in traj], ts.tolist(), color="k", lw=0.6)
        ax.set_yscale("log")
        ax.set_xscale("symlog", linthresh=2.0)
        ax.set_xlabel("x_t")
        ax.set_title(title)
    axes[0].set_ylabel("t")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--curriculum-steps", type=int, default=3000)
    p.add_argument("--seeds", default="0")
    p.add_argument("--ablation", action="store_true", help="also train the other recipes")
    p.add_argument("--recipes", type=lambda s: s.split("|"), default=None, help="recipe names joined by |")
    p.add_argument("--results", default="results", help="folder of the result records (results/*.jsonl)")
    p.add_argument("--plot", default="benchmarks/figures/toy_inversion.png")
    a = p.parse_args(argv)
    x_eps, exact = held_out()
    ddim = {n: ((ddim_invert(GaussianMixture1D().denoiser, x_eps.double(), karras_sigmas(n + 1)).float() - exact).abs() / 80).median().item()
            for n in (10, 30, 100)}
    print("DDIM inversion with the exact denoiser, median |err| / T:", {k: round(v, 4) for k, v in ddim.items()})
    cmd = "python benchmarks/toy_inversion.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = ["date", "device", "encoder", "NFE", "seed", "median abs(f - x_T) / T", "90th pct", "train s", "command"]
    for n, e in ddim.items() if a.recipes is None else ():
        record_row(a.results, "toy_1d", header,
                   [str(dt.date.today()), "CPU (2 cores)", "DDIM inversion, exact denoiser", str(n), "-", f"{e:.4f}", "", "", f"`{cmd}`"])
    recipes = RECIPES if a.ablation else {k: v for k, v in RECIPES.items() if k in (a.recipes or [next(iter(RECIPES))])}
    with tempfile.TemporaryDirectory() as tmp:
        for name, recipe in recipes.items():
            for seed in [int(s) for s in a.seeds.split(",")]:
                noiser, secs = train_noiser(Path(tmp) / f"r{len(name)}_{seed}", recipe, seed, a.steps, a.curriculum_steps)
                err = ((encode(noiser, x_eps) - exact).abs() / 80).flatten()
                label = name if name.startswith("cd-") else f"CT-Inversion, {name}"
                row = [str(dt.date.today()), "CPU (2 cores)", label, "1", str(seed),
                       f"{err.median():.4f}", f"{err.quantile(0.9):.4f}", f"{secs:.0f}", f"`{cmd}`"]
                print(record_row(a.results, "toy_1d", header, row))
                if name == next(iter(RECIPES)) and seed == int(a.seeds.split(",")[0]):
                    figure(noiser, Path(a.plot))


if __name__ == "__main__":
    main()
