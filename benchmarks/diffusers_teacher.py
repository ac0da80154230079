"""A 1-NFE noiser for a diffusers model: train a small DDPM UNet2DModel here, distil a noiser from it, measure both.

    python benchmarks/diffusers_teacher.py --dm-budget-s 180 --budget-s 240 --device cpu

Trains a diffusers `UNet2DModel` (epsilon prediction, DDPM's linear betas over 1,000 timesteps) on --data for
--dm-budget-s seconds with the DDPM loss and saves it as `DDPMPipeline.save_pretrained` does; then trains a
`cd-inversion` noiser with that folder as --teacher for --budget-s seconds (Heun teacher steps, as in the
recipe comparison); then the fidelity probe of the noiser against the model's own many-step inversion, and
encoding time at batch --batch (median after warm-up): the noiser's one evaluation against DDIM inversion with
30 steps through the diffusers model. Records: results/fidelity.jsonl and results/diffusers_teacher.jsonl.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from alignlearn.data import load_data
from alignlearn.distributed import resolve_device
from alignlearn.models import load_model
from alignlearn.probes.fidelity import run_fidelity
from alignlearn.results import record_row
from alignlearn.samplers import ddim_invert, encode
from alignlearn.schedule import karras_sigmas
from alignlearn.timing import device_name, median_seconds

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity import record_fidelity  # noqa: E402
from training import train_model  # noqa: E402


def train_ddpm(a, out: Path) -> int:
    """A small epsilon-prediction UNet2DModel trained for a.dm_budget_s seconds; returns its steps."""
    import diffusers

    train, _ = load_data(a.data, a.data_dir)
    c, h, _ = train.shape
    torch.manual_seed(a.seed)
    unet = diffusers.UNet2DModel(sample_size=h, in_channels=c, out_channels=c, block_out_channels=(32, 64),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8).to(a.device)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")
    opt = torch.optim.Adam(unet.parameters(), lr=a.lr)
    images, step, start = train.images.to(a.device), 0, time.time()
    while time.time() - start < a.dm_budget_s:
        x0 = images[torch.randint(len(images), (a.train_batch,), device=a.device)]
        noise, t = torch.randn_like(x0), torch.randint(1000, (len(x0),), device=a.device)
        loss = torch.nn.functional.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 200 == 0:
            print(f"ddpm step {step}: loss {loss.item():.4f} ({time.time() - start:.0f} s)", flush=True)
    diffusers.DDPMPipeline(unet=unet.cpu().eval(), scheduler=scheduler).save_pretrained(out)
    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--dm-budget-s", type=float, default=180.0, help="training seconds of the diffusers model")
    p.add_argument("--budget-s", type=float, default=240.0, help="training seconds of the noiser")
    p.add_argument("--recipe", default="objective=cd-inversion;teacher=dm;teacher_solver=heun;teacher_steps=8;s1=40",
                   help="the noiser's recipe (benchmarks/fidelity.py's keys; dm: the diffusers model trained here)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--train-batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-images", type=int, default=256)
    p.add_argument("--ref-steps", type=int, default=256)
    p.add_argument("--batch", type=int, default=64, help="the timed batch")
    p.add_argument("--device", default="auto")
    p.add_argument("--keep", type=Path, default=None, help="keep the diffusers model and the noiser in this folder")
    p.add_argument("--results", default="results")
    a = p.parse_args(argv)
    a.device, a.class_cond, a.batch_size = str(resolve_device(a.device)), False, a.train_batch
    cmd = "`python " + shlex.join(["benchmarks/diffusers_teacher.py", *(argv if argv is not None else sys.argv[1:])]) + "`"
    with tempfile.TemporaryDirectory() as tmp:
        root = a.keep or Path(tmp)
        ddpm, noiser = root / "ddpm", root / "noiser"
        dm_steps = train_ddpm(a, ddpm)
        training, _ = train_model(a, noiser, a.recipe, a.seed, a.budget_s, dm=ddpm)
        print(training, flush=True)
        dm_note = f" (diffusers DDPM UNet2DModel, {a.dm_budget_s:.0f} s, {dm_steps} steps)"
        report = run_fidelity(noiser, ddpm, num_images=a.num_images, ref_steps=a.ref_steps, out_dir=root / "fidelity",
                              device=a.device)
        print((root / "fidelity" / "report.md").read_text())
        for line in record_fidelity(a.results, "fidelity", report, f"{training}; teacher: the diffusers model", a.ref_steps,
                                    cmd, dm_note=dm_note):
            print(line)

        n, _ = load_model(noiser, device=a.device)
        d, _ = load_model(ddpm, device=a.device)
        _, test = load_data(a.data, a.data_dir)
        x = test.images[: a.batch].to(a.device)
        up = karras_sigmas(31, n.eps, n.T)
        with torch.no_grad():
            t_enc = median_seconds(lambda: encode(n, x, eps=n.eps), a.device)
            t_ddim = median_seconds(lambda: ddim_invert(d, x, up), a.device)
        ct = next(r for r in report["rows"] if r["encoder"] == "CT_Inv")
        dd = next(r for r in report["rows"] if r["encoder"].startswith("DDIM_Inv 30,"))
        print(record_row(a.results, "diffusers_teacher", [
            "device", "data", "teacher", "noiser", f"CT_Inv s / batch {a.batch}", f"DDIM_Inv 30 s / batch {a.batch}",
            "speed-up", "rel. L2 median: CT_Inv / DDIM_Inv 30", "command"], [
            device_name(a.device), f"{report['data']} ({report['images']})", dm_note.strip(" ()"), training,
            f"{t_enc:.4f}", f"{t_ddim:.4f}", f"{t_ddim / t_enc:.1f}x",
            f"{ct['rel_l2_median']:.4f} / {dd['rel_l2_median']:.4f}", cmd]))


if __name__ == "__main__":
    main()
