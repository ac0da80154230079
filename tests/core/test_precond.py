import pytest
import torch

from alignlearn.networks import build_backbone, preset_config
from alignlearn.precond import ConsistencyDenoiser, EDMDenoiser, Noiser
from alignlearn.schedule import EPS, SIGMA_DATA, T_MAX


def randomised(cls, num_classes=0):
    torch.manual_seed(0)
    net = build_backbone(preset_config("tiny", image_shape=(1, 16, 16), num_classes=num_classes))
    for p in net.parameters():  # random weights everywhere, the zero-initialised output layer too
        torch.nn.init.normal_(p, std=0.2)
    return cls(net).eval()


@pytest.mark.parametrize("num_classes", [0, 10])
def test_noiser_boundary_at_T_is_exact(num_classes):
    f = randomised(Noiser, num_classes)
    x = torch.randn(6, 1, 16, 16) * T_MAX
    labels = torch.randint(0, num_classes + 1, (6,)) if num_classes else None
    out = f(x, torch.full((6,), T_MAX), labels)
    assert torch.equal(out, x)
    # away from T the network matters
    assert not torch.allclose(f(x, torch.full((6,), 40.0), labels), x)


@pytest.mark.parametrize("num_classes", [0, 10])
def test_consistency_denoiser_boundary_at_eps_is_exact(num_classes):
    f = randomised(ConsistencyDenoiser, num_classes)
    x = torch.randn(6, 1, 16, 16)
    labels = torch.randint(0, num_classes + 1, (6,)) if num_classes else None
    assert torch.equal(f(x, torch.full((6,), EPS), labels), x)
    assert not torch.allclose(f(x, torch.full((6,), 1.0), labels), x)


def test_coefficients_match_the_table():
    t = torch.tensor([0.002, 0.5, 3.0, 80.0])
    s = SIGMA_DATA
    net = torch.nn.Identity()
    c_skip, c_out, c_in, c_noise = Noiser(net).coefficients(t)
    assert torch.allclose(c_skip, torch.ones(4)) and torch.allclose(c_out, T_MAX - t)
    assert torch.allclose(c_in, 1 / torch.sqrt(t**2 + s**2)) and torch.allclose(c_noise, torch.log(t) / 4)
    c_skip, c_out, _, _ = ConsistencyDenoiser(net).coefficients(t)
    assert torch.allclose(c_skip, s**2 / ((t - EPS) ** 2 + s**2))
    assert torch.allclose(c_out, s * (t - EPS) / torch.sqrt(s**2 + t**2))
    c_skip, c_out, _, _ = EDMDenoiser(net).coefficients(t)
    assert torch.allclose(c_skip, s**2 / (t**2 + s**2)) and torch.allclose(c_out, t * s / torch.sqrt(t**2 + s**2))


def test_noiser_raw_target_has_unit_scale():
    # F predicts (x_T - x_t)/(T - t) = z for x_t = x0 + t z, x_T = x0 + T z: unit variance.
    t = torch.tensor([0.002, 1.0, 60.0])
    _, c_out, _, _ = Noiser(torch.nn.Identity()).coefficients(t)
    z = torch.randn(3, 1000, dtype=torch.float64)
    x0 = torch.rand(3, 1000, dtype=torch.float64) * 2 - 1
    F = ((x0 + T_MAX * z) - (x0 + t[:, None] * z)) / c_out[:, None]
    assert torch.allclose(F, z)


def test_scalar_t_broadcasts():
    f = randomised(EDMDenoiser)
    x = torch.randn(3, 1, 16, 16)
    assert torch.allclose(f(x, 2.0), f(x, torch.full((3,), 2.0)))
