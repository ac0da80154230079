"""How much of a latent's detail do the decoders use? PSNR after decoding perturbed latents.

    python benchmarks/latent_sensitivity.py --noiser runs/noiser --cm runs/cm --dm runs/dm

Each held-out image's latent z (CT_Inv: the noiser, 1 NFE; DDIM_Inv: --dm-steps Euler steps up the
PF-ODE) gets isotropic noise of relative size r, z + r ||z|| / sqrt(D) n with n ~ N(0, I), and is
decoded with the CM (1 step) and the DM (--dm-steps Euler); r = 1 is noise as large as the latent
itself. The Prior row (fresh N(0, T^2 I) latents, the image's label) is the floor. A decoder that
barely loses PSNR as r grows reads little of the latent beyond its coarsest content, and then
reconstruction PSNR says little about how exact an encoder is (int8 latents 70% off,
cosine 0.81, decode as well as fp32 ones).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

import torch

from alignlearn.probes.loading import check_compatible, evaluation_split, load_role
from alignlearn.probes.metrics import psnr, ssim
from alignlearn.probes.recon import batched, decoders, encoders, evenly_spaced, prior
from alignlearn.results import record_row
from alignlearn.timing import device_name


def perturbed(z: torch.Tensor, r: float, generator: torch.Generator) -> torch.Tensor:
    """z + r ||z|| / sqrt(D) n per sample: noise whose norm is about r times the latent's."""
    scale = z.flatten(1).norm(dim=1) / z[0].numel() ** 0.5
    return z + r * scale.view(-1, *([1] * (z.ndim - 1))) * torch.randn(z.shape, generator=generator).to(z.device)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--noiser", required=True)
    p.add_argument("--cm", required=True)
    p.add_argument("--dm", required=True)
    p.add_argument("--ratios", default="0,0.1,0.3,0.7,1")
    p.add_argument("--num-images", type=int, default=256)
    p.add_argument("--dm-steps", type=int, default=30)
    p.add_argument("--device", default="cpu")
    p.add_argument("--results", default="results", help="folder of the result records (results/*.jsonl)")
    a = p.parse_args(argv)

    nz, cm, dm = (load_role(path, role, kind, a.device) for path, role, kind in
                  ((a.noiser, "noiser", "noiser"), (a.cm, "cm", "cm"), (a.dm, "dm", "edm")))
    check_compatible([nz, cm, dm])
    _, test = evaluation_split(nz, None, None)
    pick = evenly_spaced(len(test), a.num_images)
    x0, labels = test.images[pick].to(a.device), test.labels[pick].to(a.device)
    dec = decoders(cm, dm, a.dm_steps, "euler")
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        latents = {}
        for name, side in encoders(nz, dm, a.dm_steps).items():
            z = batched(side.fn, x0, labels, 64)
            latents.update({f"{name}, r = {r:g}": perturbed(z, r, g) for r in map(float, a.ratios.split(","))})
        latents["Prior"] = batched(prior(nz.model.T).fn, x0, labels, 64)
        cmd = "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:]))
        for name, lat in latents.items():
            cells = [str(dt.date.today()), device_name(a.device), f"{test.name} ({len(x0)})", name]
            for d in ("CM", "DM"):
                recon = batched(dec[d].fn, lat, labels, 64)
                cells += [f"{psnr(recon, x0):.2f} / {ssim(recon, x0):.4f}"]
            print(record_row(a.results, "latent_sensitivity",
                             ["date", "device", "data (held-out images)", "latent", "CM 1 step, PSNR / SSIM",
                              f"DM {a.dm_steps} Euler, PSNR / SSIM", "command"],
                             cells + [f"`{cmd}`"]), flush=True)


if __name__ == "__main__":
    main()
