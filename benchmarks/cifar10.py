"""CIFAR-10 beside the report's Table 1: three models trained here, the four pairings, fidelity, a linear probe.

    python benchmarks/cifar10.py --data-dir ../shared/data/cifar10-jpeg --budgets-s 240 --num-images 1000 \\
        --lpips-weights ../shared/lpips/lpips_alex.safetensors --device cpu               # the CPU row, ~30 min
    python benchmarks/cifar10.py --data-dir DIR --preset cifar --budgets-s 30,90 --batch-size 256 --compile \\
        --device cuda                                                                      # benchmarks/gpu.sh STAGE=cifar

For each budget of --budgets-s (a curve of quality against training time: every point trains all three
models afresh for that many seconds, `--time-budget`, so each is a finished curriculum, not a snapshot of a
longer run): the EDM diffusion model, the CT consistency model and the CT-Inversion noiser, unconditional as
in the report; the noiser starts from the diffusion model (`--noiser-recipe init_from=dm`, the recipe that
won on fidelity). Then, on the test split: the four pairings and the Prior floor (`probe recon`, PSNR and
SSIM on [0, 1], LPIPS alex), the noiser's fidelity to the DM's many-step inversion, and linear probes of
pixels, the 1-NFE latent, the noiser's features and a randomly initialised noiser's. The full test set is
10,000 images (--num-images 10000); a CPU run takes a stated subset, evenly spaced. Every point adds one row
to results/cifar10_curve.jsonl (the headline numbers against training time); the longest training also
adds its full rows to results/cifar10.jsonl (with the report's cells beside each pairing), fidelity.jsonl
and linear_probe.jsonl. Every point's probe reports stay under --keep.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

from alignlearn.data import load_data
from alignlearn.distributed import resolve_device
from alignlearn.errors import UserError
from alignlearn.probes.fidelity import run_fidelity
from alignlearn.probes.linear import run_linear
from alignlearn.probes.recon import run_recon
from alignlearn.results import record_row

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity import record_fidelity  # noqa: E402
from training import train_model  # noqa: E402

# The report's Table 1 (CIFAR-10, 30 DDIM steps, full test set, one A5000): LPIPS / SSIM / PSNR / s per batch
REPORT = {
    "DDIM_Inv+DM": "0.2165 / 0.8298 / 22.98 / 6.98",
    "DDIM_Inv+CM": "0.6262 / 0.2499 / 10.34 / 3.49",
    "CT_Inv+CM": "0.2426 / 0.7911 / 18.07 / 0.185",
    "CT_Inv+DM": "0.2369 / 0.8024 / 18.20 / 3.65",
}
HEADER = ["device", "data (test images)", "preset", "training per model", "pairing", "NFE", "PSNR", "SSIM", "LPIPS",
          "s / batch", "report: LPIPS / SSIM / PSNR / s per batch", "command"]
LINEAR_HEADER = ["device", "data", "features", "dim", "accuracy (3 splits)", "encode ms / image", "command"]
CURVE_PAIRINGS = ["CT_Inv+CM", "CT_Inv+DM", "DDIM_Inv+DM", "DDIM_Inv+CM", "Prior+CM"]
CURVE_HEADER = ["device", "data (test images)", "preset", "training per model", "steps dm / cm / noiser",
                *[f"PSNR {p}" for p in CURVE_PAIRINGS], "LPIPS CT_Inv+CM", "fidelity CT_Inv", "fidelity DDIM_Inv 30",
                "linear: latent / pixels", "CT_Inv+CM faster than DDIM_Inv+DM", "command"]


def fmt(value, digits: int) -> str:
    return "unavailable" if value is None else f"{value:.{digits}f}"


def one_budget(a, budget_s: float, root: Path, cmd: str, detail: bool) -> list[str]:
    """Train the three models for budget_s seconds each under root and probe them; returns the curve row's
    cells. `detail`: also append the full reconstruction, fidelity and linear-probe records."""
    runs = {role: root / role for role in ("dm", "cm", "noiser")}
    steps = {}
    for role, recipe in (("dm", "objective=edm"), ("cm", "objective=ct"), ("noiser", a.noiser_recipe)):
        text, result = train_model(a, runs[role], recipe, a.seed, budget_s, dm=runs["dm"])
        steps[role] = result.step
        print(f"{role}: {text}", flush=True)
    training = (f"{budget_s:.0f} s each ({', '.join(f'{r} {n} steps' for r, n in steps.items())}, batch {a.batch_size}); "
                f"noiser recipe {a.noiser_recipe}; seed {a.seed}")

    recon = run_recon(runs["noiser"], runs["cm"], runs["dm"], num_images=a.num_images, batch_size=a.eval_batch,
                      out_dir=root / "recon", device=a.device, lpips_weights=a.lpips_weights)
    print((root / "recon" / "report.md").read_text(), flush=True)
    fidelity = run_fidelity(runs["noiser"], runs["dm"], num_images=a.fidelity_images, ref_steps=a.ref_steps,
                            out_dir=root / "fidelity", device=a.device)
    print((root / "fidelity" / "report.md").read_text(), flush=True)
    linear = run_linear(runs["noiser"], seeds=3, max_images=a.linear_images, split="test", out_dir=root / "linear",
                        device=a.device)
    print((root / "linear" / "linear.md").read_text(), flush=True)

    if detail:
        for r in recon["pairings"]:
            print(record_row(a.results, "cifar10", HEADER, [
                recon["device"], f"{recon['data']} ({recon['num_images']})", a.preset, training, r["pairing"],
                f"{r['encode_nfe']} + {r['decode_nfe']}", f"{r['psnr']:.2f}", f"{r['ssim']:.4f}", fmt(r["lpips"], 4),
                f"{r['total_s_per_batch']:.4f} (batch {recon['batch_size']})", REPORT.get(r["pairing"], "-"), cmd]))
        for line in record_fidelity(a.results, "fidelity", fidelity, f"{a.preset}, {training}", a.ref_steps, cmd,
                                    dm_note=f" (DM {budget_s:.0f} s)"):
            print(line)
        for r in linear["rows"]:
            print(record_row(a.results, "linear_probe", LINEAR_HEADER, [
                recon["device"], f"{linear['data']}, test split ({linear['images']}); {a.preset}, {budget_s:.0f} s",
                r["features"], str(r["dim"]), f"{r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f}",
                f"{r['encode_ms_per_image']:.3f}", cmd]))

    pairing = {r["pairing"]: r for r in recon["pairings"]}
    rel_l2 = {r["encoder"]: r["rel_l2_median"] for r in fidelity["rows"]}
    accuracy = {r["features"]: r["accuracy_mean"] for r in linear["rows"]}
    latent = next(v for k, v in accuracy.items() if k.startswith("noiser latent"))
    speed = pairing["DDIM_Inv+DM"]["total_s_per_batch"] / pairing["CT_Inv+CM"]["total_s_per_batch"]
    return [recon["device"], f"{recon['data']} ({recon['num_images']})", a.preset, f"{budget_s:.0f} s",
            " / ".join(str(steps[r]) for r in ("dm", "cm", "noiser")),
            *[f"{pairing[p]['psnr']:.2f}" for p in CURVE_PAIRINGS], fmt(pairing["CT_Inv+CM"]["lpips"], 4),
            f"{rel_l2['CT_Inv']:.3f}", f"{rel_l2['DDIM_Inv 30, diffusion model']:.3f}",
            f"{latent:.3f} / {accuracy['raw pixels']:.3f}", f"{speed:.0f}x (batch {recon['batch_size']})", cmd]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="torchvision's cifar-10-batches-py/ or the JPEG copy's train/test.npz")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--budgets-s", default="240", help="comma-separated training seconds per model, one point each")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--noiser-recipe", default="init_from=dm", help="noiser recipe (benchmarks/training.py's keys)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-images", type=int, default=10000, help="test images for reconstruction (10000: all)")
    p.add_argument("--eval-batch", type=int, default=64, help="batch of reconstruction and of its timings")
    p.add_argument("--fidelity-images", type=int, default=128)
    p.add_argument("--ref-steps", type=int, default=256, help="Heun steps of the DM's reference inversion")
    p.add_argument("--linear-images", type=int, default=10000, help="test images in the linear probe's pool")
    p.add_argument("--lpips-weights", default=None, help="LPIPS alex weights (safetensors)")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--keep", type=Path, default=None, help="keep the runs and probe reports in this folder")
    p.add_argument("--results", default="results", help="folder of the result records (results/*.jsonl)")
    a = p.parse_args(argv)
    a.device, a.data, a.class_cond = str(resolve_device(a.device)), "cifar10", False
    budgets = [float(b) for b in a.budgets_s.split(",")]
    cmd = "`python " + shlex.join(["benchmarks/cifar10.py", *(argv if argv is not None else sys.argv[1:])]) + "`"
    try:
        load_data("cifar10", a.data_dir)  # a missing or damaged copy is one line before any training
        with tempfile.TemporaryDirectory() as tmp:
            for budget in budgets:
                curve = one_budget(a, budget, (a.keep or Path(tmp)) / f"{budget:.0f}s", cmd, budget == max(budgets))
                print(record_row(a.results, "cifar10_curve", CURVE_HEADER, curve))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
