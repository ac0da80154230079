"""Algorithm 1 end to end on a 1-D Gaussian mixture whose exact encoding map is known.

The exact x_T of any x_eps comes from integrating the PF-ODE of the analytic
mixture denoiser finely; a small MLP noiser trained by the `ct-inversion`
objective, through the same trainer as images, must match it.
"""

import pytest
import torch

from alignlearn.config import TrainConfig, make_run_config
from alignlearn.data import ImageData
from alignlearn.models import load_model
from alignlearn.objectives import ObjectiveConfig
from alignlearn.samplers import ddim_invert, encode
from alignlearn.schedule import karras_sigmas
from alignlearn.toy import GaussianMixture1D


@pytest.mark.slow
def test_ct_inversion_learns_the_exact_encoding_map(tmp_path):
    mix = GaussianMixture1D()
    x = mix.sample(20000, generator=torch.Generator().manual_seed(0))
    data = ImageData("mixture-1d", x, torch.zeros(len(x), dtype=torch.long), 0)
    obj = ObjectiveConfig("ct-inversion", curriculum_steps=3000)  # the objective's own recipe defaults
    tc = TrainConfig(steps=6000, batch_size=512, lr=1e-3, warmup=100, log_every=500,
                     ckpt_every=10**9, sample_every=10**9, device="cpu", seed=0)
    cfg = make_run_config(obj, tc, data_name="mixture-1d", shape=(1,), num_classes=0, preset="mlp")
    from alignlearn.trainer import train

    train(cfg, tmp_path / "toy", show_progress=False, data=(data, data))
    noiser, _ = load_model(tmp_path / "toy")

    held_out = mix.sample(2000, generator=torch.Generator().manual_seed(1))
    x_eps = held_out + 0.002 * torch.randn(held_out.shape, generator=torch.Generator().manual_seed(2))
    exact = mix.exact_endpoint(x_eps.double()).float()
    ct_err = ((encode(noiser, x_eps) - exact).abs() / 80).median().item()
    ddim_err = ((ddim_invert(mix.denoiser, x_eps.double(), karras_sigmas(30)).float() - exact).abs() / 80).median().item()
    print(f"median |f(x_eps, eps) - x_T| / T: CT-Inversion (1 NFE) {ct_err:.4f}; DDIM inversion (30 NFE, exact denoiser) {ddim_err:.4f}")
    assert ct_err <= 0.05
    # the trivial map f = x scores about 0.67: the noiser learned the transport, not the identity
    assert ((x_eps - exact).abs() / 80).median().item() > 0.5


@pytest.mark.slow
def test_cd_inversion_with_the_exact_teacher(tmp_path):
    """cd-inversion replaces Algorithm 1's shared z by the teacher's PF-ODE step: lower variance, fewer steps."""
    mix = GaussianMixture1D()
    x = mix.sample(20000, generator=torch.Generator().manual_seed(0))
    data = ImageData("mixture-1d", x, torch.zeros(len(x), dtype=torch.long), 0)
    obj = ObjectiveConfig("cd-inversion", curriculum_steps=1500)
    tc = TrainConfig(steps=3000, batch_size=512, lr=1e-3, warmup=100, log_every=500,
                     ckpt_every=10**9, sample_every=10**9, device="cpu", seed=0)
    cfg = make_run_config(obj, tc, data_name="mixture-1d", shape=(1,), num_classes=0, preset="mlp")
    from alignlearn.trainer import train

    train(cfg, tmp_path / "cd", show_progress=False, data=(data, data), teacher=lambda x, t, y: mix.denoiser(x, t))
    noiser, _ = load_model(tmp_path / "cd")
    held_out = mix.sample(2000, generator=torch.Generator().manual_seed(1))
    x_eps = held_out + 0.002 * torch.randn(held_out.shape, generator=torch.Generator().manual_seed(2))
    exact = mix.exact_endpoint(x_eps.double()).float()
    err = ((encode(noiser, x_eps) - exact).abs() / 80).median().item()
    print(f"cd-inversion (3,000 steps), median |f - x_T| / T: {err:.4f}")
    assert err <= 0.04
