"""Samplers against closed forms: for data N(mu, s^2) the denoiser and the PF-ODE flow are analytic."""

import math

import pytest
import torch

from alignlearn.samplers import cm_sample, ddim_invert, encode, guided, ode_sample
from alignlearn.schedule import EPS, T_MAX, karras_sigmas
from alignlearn.toy import Gaussian

G = Gaussian(mu=0.3, s=0.5)


def x_eps(n=256):
    return (G.mu + G.s * torch.randn(n, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64))


def test_ddim_inversion_converges_at_first_order():
    x = x_eps()
    exact = G.flow(x, EPS, T_MAX)
    errs = {n: (ddim_invert(G.denoiser, x, karras_sigmas(n)) - exact).abs().max().item() for n in (32, 64, 128, 256)}
    ratios = [errs[n] / errs[2 * n] for n in (32, 64, 128)]
    assert errs[256] < errs[32] / 6
    for r in ratios:  # Euler: halving the step halves the error
        assert 1.6 < r < 2.4, (errs, ratios)


def test_ode_sample_inverts_ddim_inversion():
    x = x_eps()
    xT = G.flow(x, EPS, T_MAX)
    back = ode_sample(G.denoiser, xT, karras_sigmas(400).flip(0), method="heun")
    assert (back - x).abs().max() < 5e-4
    # Heun converges at second order
    e1 = (ode_sample(G.denoiser, xT, karras_sigmas(20).flip(0), method="heun") - x).abs().max()
    e2 = (ode_sample(G.denoiser, xT, karras_sigmas(40).flip(0), method="heun") - x).abs().max()
    assert 3.0 < e1 / e2 < 5.0


def test_round_trip_is_identity_up_to_solver_error():
    x = x_eps()
    for n, tol in ((30, 0.5), (300, 0.05), (3000, 0.005)):
        sig = karras_sigmas(n)
        rt = ode_sample(G.denoiser, ddim_invert(G.denoiser, x, sig), sig.flip(0), method="euler")
        assert (rt - x).abs().max() < tol, n


def test_encode_with_the_ideal_noiser_is_exact():
    x = x_eps()
    latents = encode(G.noiser, x)
    assert torch.allclose(latents, G.flow(x, EPS, T_MAX), rtol=1e-12, atol=1e-10)
    # data that varies in every direction (s > 0): the ideal noiser puts latents on N(mu, s^2 + T^2)
    assert abs(latents.std().item() / math.sqrt(G.s**2 + T_MAX**2) - 1) < 0.05


def test_cm_sample_with_the_ideal_consistency_function():
    def consistency(x, t, labels=None):  # maps any x_t to x_eps on its trajectory
        t = t.view(-1, 1)
        return G.mu + (x - G.mu) * math.sqrt(G.s**2 + EPS**2) / torch.sqrt(G.s**2 + t**2)

    x = x_eps()
    xT = G.flow(x, EPS, T_MAX)
    assert torch.allclose(cm_sample(consistency, xT, [T_MAX]), x, atol=1e-10)
    # multistep: each re-noising lands on some trajectory; the result is still a sample of N(mu, s^2 + eps^2)
    z = torch.randn(20000, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * T_MAX
    out = cm_sample(consistency, z, [T_MAX, 2.0, 0.5], generator=torch.Generator().manual_seed(2))
    assert abs(out.mean().item() - G.mu) < 0.02 and abs(out.std().item() - G.s) < 0.02


def test_classifier_free_guidance_combination():
    calls = []

    def model(x, t, labels):
        calls.append(labels.clone())
        return x * 0 + labels.view(-1, 1).double()  # "denoises" to the label value

    x, t = torch.zeros(3, 2, dtype=torch.float64), torch.ones(3)
    labels = torch.tensor([1, 2, 3])
    out = guided(model, 2.5, null_label=10)(x, t, labels)
    # D_w = D_uncond + w (D_cond - D_uncond) = 10 + 2.5 (y - 10)
    assert torch.allclose(out[:, 0], 10 + 2.5 * (labels.double() - 10))
    assert len(calls) == 1  # both passes in one batch
    calls.clear()
    assert torch.allclose(guided(model, 1.0, 10)(x, t, labels)[:, 0], labels.double())
    assert len(calls) == 1 and len(calls[0]) == 3


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_ode_sample_rejects_unknown_method(method):
    with pytest.raises(ValueError):
        ode_sample(G.denoiser, torch.zeros(1, 1), [80.0, 1.0], method=method + "x")
