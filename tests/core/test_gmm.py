"""The Gaussian-mixture ground truth: its denoiser, its exact PF-ODE endpoints, and the gmm-digits data set."""

import math

import pytest
import torch

from alignlearn.data import load_data
from alignlearn.gmm import GaussianMixture, digits_mixture
from alignlearn.samplers import ddim_invert
from alignlearn.schedule import karras_sigmas


def small_mixture(seed=0, classes=3, shape=(1, 2, 4)):
    """A mixture fitted to random low-rank classes: the same code as the digits', in 8 dimensions."""
    g = torch.Generator().manual_seed(seed)
    d = math.prod(shape)
    xs, ys = [], []
    for k in range(classes):
        basis = torch.randn(3, d, generator=g)  # rank 3 of 8: the floor matters in the other directions
        xs.append(torch.randn(1, d, generator=g) + torch.randn(200, 3, generator=g) @ basis * 0.5)
        ys.append(torch.full((200,), k))
    return GaussianMixture.fit(torch.cat(xs).view(-1, *shape), torch.cat(ys), classes, floor=0.05)


def test_one_component_is_the_gaussian_closed_form():
    gmm = small_mixture(classes=1)
    S = (gmm.U[0] * (gmm.lam[0] - gmm.floor2)) @ gmm.U[0].T + gmm.floor2 * torch.eye(8, dtype=torch.float64)
    x = torch.randn(5, 1, 2, 4, dtype=torch.float64)
    for t in (0.01, 0.3, 7.0):
        expected = gmm.mu[0] + (S @ torch.linalg.solve(S + t**2 * torch.eye(8, dtype=torch.float64),
                                                        (x.flatten(1) - gmm.mu[0]).T)).T
        assert torch.allclose(gmm.denoiser(x, t).flatten(1), expected, atol=1e-10)


def test_mixture_denoiser_is_the_monte_carlo_posterior_mean():
    gmm = small_mixture()
    g = torch.Generator().manual_seed(1)
    x0, _ = gmm.sample(400_000, g)
    x0 = x0.double().flatten(1)
    for t in (0.5, 2.0):
        x_t = x0[:3] + t * torch.randn(3, 8, generator=g, dtype=torch.float64)
        logw = -((x_t[:, None, :] - x0[None]) ** 2).sum(-1) / (2 * t**2)  # p(x_t | x0) for every sample x0
        w = torch.softmax(logw, dim=1)
        mc = w @ x0
        exact = gmm.denoiser(x_t.view(3, 1, 2, 4), t).flatten(1)
        assert ((mc - exact).norm(dim=1) / exact.norm(dim=1)).max() < 0.02


def test_a_label_selects_its_component_and_the_null_label_the_mixture():
    gmm = small_mixture()
    x = torch.randn(4, 1, 2, 4, dtype=torch.float64)
    one = gmm.denoiser(x, 0.7, torch.tensor([1, 1, 1, 1]))
    _, single = small_mixture(), GaussianMixture(gmm.pi[1:2] / gmm.pi[1], gmm.mu[1:2], gmm.U[1:2], gmm.lam[1:2],
                                                  gmm.floor2, gmm.shape)
    assert torch.allclose(one, single.denoiser(x, 0.7), atol=1e-12)
    assert torch.allclose(gmm.denoiser(x, 0.7, torch.full((4,), 3)), gmm.denoiser(x, 0.7), atol=1e-12)


def test_conditional_flow_is_the_integrated_conditional_ode():
    gmm = small_mixture()
    x = torch.randn(6, 1, 2, 4, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    closed = gmm.conditional_flow(x, 0.002, 80.0, labels)
    integrated = gmm.flow(x, 0.002, 80.0, steps=256, labels=labels)
    assert ((closed - integrated).flatten(1).norm(dim=1) / closed.flatten(1).norm(dim=1)).max() < 1e-6  # RK4's own error at 256 steps: ~1e-7


def test_exact_endpoint_converges_under_step_halving():
    gmm = digits_mixture()
    x0, _ = gmm.sample(4, torch.Generator().manual_seed(0))
    endpoint, change = gmm.exact_endpoint(x0, steps=128)
    assert change < 1e-4 and endpoint.dtype == torch.float64 and endpoint.shape == x0.shape
    # a clean digit has no energy where the data never varies: its exact endpoint is not N(x0, T^2 I)
    _, test = load_data("digits")
    clean, _ = gmm.exact_endpoint(test.images[:16], test.labels[:16])  # each under its class: closed form
    assert clean.std() / 80 < 0.9


def test_ddim_with_the_exact_denoiser_approaches_the_exact_endpoint():
    gmm = digits_mixture()
    x0, _ = gmm.sample(8, torch.Generator().manual_seed(0))
    exact, _ = gmm.exact_endpoint(x0, steps=128)
    errors = []
    for n in (10, 30, 100):
        z = ddim_invert(gmm.denoiser, x0.double(), karras_sigmas(n + 1))
        errors.append(((z - exact).flatten(1).norm(dim=1) / exact.flatten(1).norm(dim=1)).median().item())
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.3 * errors[0]


def test_gmm_digits_is_a_labelled_image_data_set():
    train, test = load_data("gmm-digits")
    assert (len(train), len(test)) == (8000, 2000) and train.shape == (1, 16, 16) and train.num_classes == 10
    assert set(train.labels.unique().tolist()) == set(range(10))
    again, _ = load_data("gmm-digits")
    assert torch.equal(again.images, train.images)  # a fixed seed: the same data every time
    gmm = digits_mixture()
    for k in (0, 7):  # each class's samples scatter around its mean by its own covariance
        err = (train.images[train.labels == k].double().flatten(1).mean(0) - gmm.mu[k]).abs().max()
        assert err < 0.1
    assert 20 <= gmm.principal_basis().shape[1] < 256


@pytest.mark.parametrize("t", [0.002, 1.0, 80.0])
def test_denoiser_keeps_shape_dtype_and_is_finite(t):
    x = torch.randn(3, 1, 16, 16) * (1 + t)
    out = digits_mixture().denoiser(x, torch.full((3,), t))
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
