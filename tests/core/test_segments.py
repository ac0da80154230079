"""Multi-segment noisers, the diffusion warm start and the distillation teacher's steps, against their maths."""

import math
from types import SimpleNamespace

import pytest
import torch

from alignlearn.config import ModelConfig
from alignlearn.models import build_model
from alignlearn.networks import build_backbone, preset_config
from alignlearn.networks.warm_start import EulerStepBackbone
from alignlearn.objectives import CDInversionLoss, CTInversionLoss, ObjectiveConfig
from alignlearn.precond import EDMDenoiser, Noiser
from alignlearn.samplers import encode, encode_levels, ode_step
from alignlearn.schedule import EPS, T_MAX, karras_sigmas, segment_boundaries, with_boundaries

SHAPE = (1, 8, 8)


def tiny_noiser(segments: int, seed: int = 0) -> Noiser:
    torch.manual_seed(seed)
    backbone = preset_config("tiny", image_shape=SHAPE)
    return build_model(ModelConfig("noiser", backbone, "tiny", segments=segments)).eval()


def noise(segments: int):
    return SimpleNamespace(sigma_data=0.5, eps=EPS, T=T_MAX, segments=segments)


def test_c_out_vanishes_at_every_boundary_approached_from_below():
    noiser = tiny_noiser(4).double()
    x = torch.randn(3, *SHAPE)
    assert noiser.boundaries == [float(s) for s in karras_sigmas(5)]
    for lower, s in zip(noiser.boundaries[:-1], noiser.boundaries[1:]):
        for gap in (1e-3, 1e-6):
            t = torch.full((3,), s * (1 - gap), dtype=torch.float64)
            c_out = noiser.coefficients(t)[1]
            assert torch.allclose(c_out, s - t)  # maps to s, by s - t
            with torch.no_grad():
                moved = (noiser(x.double(), t) - x.double()).abs().max()
            assert moved < 50 * gap * s  # f -> identity as t -> s from below
        # at the boundary itself f maps on to the next one
        c_at = noiser.coefficients(torch.tensor([lower], dtype=torch.float64))[1]
        assert c_at.item() == pytest.approx(s - lower, rel=1e-12)


def test_one_segment_is_the_report_noiser_bit_for_bit():
    noiser = tiny_noiser(1)
    t = torch.cat([karras_sigmas(41).float(), torch.rand(100) * 80 + 0.002])
    c_skip, c_out, _, _ = noiser.coefficients(t)
    assert torch.equal(c_out, noiser.T - t) and torch.equal(c_skip, torch.ones_like(t))
    x = torch.randn(4, *SHAPE)
    assert torch.equal(encode(noiser, x, eps=noiser.eps), noiser(x, torch.full((4,), noiser.eps)))
    for N in (11, 1281):  # the training grid is unchanged
        assert torch.equal(with_boundaries(karras_sigmas(N), segment_boundaries(1)), karras_sigmas(N))
    obj = CTInversionLoss(ObjectiveConfig("ct-inversion"), 100, 64, noise=noise(1))
    target = torch.randn(5, 64)
    assert obj.at_boundaries(target, torch.randn(5, 64), torch.full((5,), T_MAX)) is target


@pytest.mark.parametrize("N,K", [(11, 2), (11, 4), (41, 3), (1281, 4)])
def test_no_training_pair_straddles_a_boundary(N, K):
    b = segment_boundaries(K)
    t = with_boundaries(karras_sigmas(N), b)
    assert torch.all(t[1:] > t[:-1])
    for s in b:
        assert (t == s).sum() == 1  # each boundary is itself a grid point, with its exact value
        assert not torch.any((t[:-1] < s) & (t[1:] > s))


def test_a_pair_ending_on_a_boundary_is_trained_towards_that_point():
    obj = CTInversionLoss(ObjectiveConfig("ct-inversion", s0=10, s1=10), 100, 64, noise=noise(4))
    inner = obj.boundaries[1:-1].float()
    torch.manual_seed(0)
    t_n, t_n1, x_n, x_n1 = obj.pair(torch.randn(4000, 64), 0)
    on = (t_n1[:, None] == inner[None]).any(1)
    assert on.sum() > 100 and (~on).sum() > 100
    model_out = x_n1 + 1.0  # any target network's output
    target = obj.at_boundaries(model_out, x_n1, t_n1)
    assert torch.equal(target[on], x_n1[on])  # the boundary point itself
    assert torch.equal(target[~on], model_out[~on])


def test_multi_segment_encoding_walks_boundary_to_boundary():
    noiser = tiny_noiser(3)
    x = torch.randn(2, *SHAPE)
    assert encode_levels(noiser, noiser.eps) == [noiser.eps, *noiser.boundaries[1:-1]]
    with torch.no_grad():
        expect = x
        for s in noiser.boundaries[:-1]:
            expect = noiser(expect, torch.full((2,), s))
    assert torch.equal(encode(noiser, x, eps=noiser.eps), expect)


def test_warm_started_noiser_is_one_euler_step_of_the_diffusion_model():
    torch.manual_seed(1)
    cfg = preset_config("tiny", image_shape=SHAPE, num_classes=3)
    dm = EDMDenoiser(build_backbone(cfg)).double().eval()
    for segments in (1, 3):
        noiser = Noiser(EulerStepBackbone(build_backbone(cfg), 0.5), segments=segments).double().eval()
        noiser.backbone.inner.load_state_dict(dm.backbone.state_dict())
        x, y = torch.randn(6, *SHAPE, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
        t = torch.tensor([0.002, 0.1, 1.0, 5.0, 40.0, 79.0], dtype=torch.float64)
        with torch.no_grad():
            f, D = noiser(x, t, y), dm(x, t, y)
        s = noiser.segment_end(t).view(-1, 1, 1, 1)
        euler = x + (s - t.view(-1, 1, 1, 1)) * (x - D) / t.view(-1, 1, 1, 1)
        assert torch.allclose(f, euler, rtol=1e-10, atol=1e-10 * euler.abs().max().item())


def gaussian_flow(x, a, b, var):
    """The exact PF-ODE map of N(0, var) data from level a to b."""
    return x * math.sqrt((var + b**2) / (var + a**2))


@pytest.mark.parametrize("method,order", [("euler", 1), ("heun", 2)])
def test_teacher_step_order_on_the_gaussian_toy(method, order):
    var = 0.25
    D = lambda x, t, labels=None: var / (var + t.view(-1, 1) ** 2) * x  # noqa: E731 - the exact denoiser
    x = torch.randn(16, 2, dtype=torch.float64)
    a, b = 0.5, 2.0
    errors = []
    for n in (8, 16, 32):
        levels = torch.linspace(a, b, n + 1, dtype=torch.float64)
        y = x
        for lo, hi in zip(levels[:-1], levels[1:]):
            y = ode_step(D, y, lo.expand(16), hi.expand(16), None, method)
        errors.append((y - gaussian_flow(x, a, b, var)).abs().max().item())
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert all(abs(r - 2**order) < 0.15 * 2**order for r in ratios), ratios


def test_multi_step_teacher_jumps_stop_at_the_next_boundary():
    teacher = lambda x, t, labels=None: 0.5 * x  # noqa: E731 - any denoiser will do
    obj = CDInversionLoss(ObjectiveConfig("cd-inversion", s0=20, s1=20, teacher_steps=4, teacher_solver="heun"),
                          100, 4, teacher, noise=noise(2))
    t, _ = obj.grid(0, torch.device("cpu"))
    torch.manual_seed(0)
    t_n, t_m, x_n, x_m = obj.pair(torch.randn(3000, 4), 0)
    n, m = torch.searchsorted(t, t_n), torch.searchsorted(t, t_m)
    middle = (t == obj.boundaries[1].float()).nonzero().item()
    stop = torch.where(n < middle, middle, len(t) - 1)
    assert torch.equal(m, torch.minimum(n + 4, stop))
    assert torch.any(m - n == 4) and torch.any((m - n < 4) & (m == middle))
    expect = x_n
    for j in range(4):  # the teacher's Heun steps along the grid, by zero once t_m is reached
        a, b = t[torch.minimum(n + j, m)], t[torch.minimum(n + j + 1, m)]
        expect = ode_step(teacher, expect, a, b, None, "heun")
    assert torch.equal(x_m, expect)


def test_encode_mass_moves_probability_onto_the_encoding_levels():
    obj = CTInversionLoss(ObjectiveConfig("ct-inversion", s0=20, s1=20, encode_mass=0.3), 100, 4, noise=noise(2))
    t, p = obj.grid(0, torch.device("cpu"))
    starts = [0, (t == obj.boundaries[1].float()).nonzero().item()]
    base = 0.7 / (len(t) - 1)  # uniform P, scaled
    assert torch.allclose(p[starts], torch.full((2,), base + 0.15)) and abs(p.sum().item() - 1) < 1e-6
    others = torch.ones(len(p), dtype=torch.bool)
    others[starts] = False
    assert torch.allclose(p[others], torch.full((int(others.sum()),), base))
