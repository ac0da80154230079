import torch
from torch import nn

from alignlearn.objectives import CTInversionLoss, CTLoss, EDMLoss, ObjectiveConfig


def test_algorithm1_target_identity():
    """x_{n+1} = x_n + (t_{n+1}-t_n)(x_n - x0)/t_n equals x0 + t_{n+1} z for the z that made x_n."""
    obj = CTInversionLoss(ObjectiveConfig("ct-inversion"), total_steps=1000, data_dim=256)
    torch.manual_seed(0)
    x0 = torch.rand(512, 1, 16, 16) * 2 - 1
    for step in (0, 500, 999):
        torch.manual_seed(step)
        t_n, t_n1, x_n, x_n1 = obj.pair(x0, step)
        torch.manual_seed(step)
        # replay the draws: indices first, then z
        t, p = obj.grid(step, x0.device)
        torch.multinomial(p, 512, replacement=True)
        z = torch.randn_like(x0)
        assert torch.all(t_n1 > t_n)
        assert torch.allclose(x_n, x0 + t_n.view(-1, 1, 1, 1) * z)
        scale = (x0 + t_n1.view(-1, 1, 1, 1) * z).abs().amax()
        assert (x_n1 - (x0 + t_n1.view(-1, 1, 1, 1) * z)).abs().max() <= 1e-5 * scale


class Recorder(nn.Module):
    """f(x, t) = x; records (t, grad enabled) of each call."""

    def __init__(self):
        super().__init__()
        self.calls = []
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, labels=None):
        self.calls.append((t.detach().clone(), torch.is_grad_enabled()))
        return x + self.w


def test_ct_inversion_targets_the_higher_noise_level():
    rec = Recorder()
    obj = CTInversionLoss(ObjectiveConfig("ct-inversion"), 100, 4)
    obj(rec, rec, torch.zeros(8, 4), None, 50)
    (t_target, grad_target), (t_online, grad_online) = rec.calls
    assert not grad_target and grad_online
    assert torch.all(t_target > t_online)


def test_ct_targets_the_lower_noise_level():
    rec = Recorder()
    obj = CTLoss(ObjectiveConfig("ct"), 100, 4)
    obj(rec, rec, torch.zeros(8, 4), None, 50)
    (t_target, _), (t_online, _) = rec.calls
    assert torch.all(t_target < t_online)


class MaskOnly(nn.Module):
    """Output is the dropout mask alone: online and target agree iff they share the mask."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x, t, labels=None):
        return self.drop(torch.ones_like(x)) * self.w


def test_target_and_online_share_the_dropout_mask():
    m = MaskOnly().train()
    for cls, name in ((CTInversionLoss, "ct-inversion"), (CTLoss, "ct")):
        obj = cls(ObjectiveConfig(name, distance="l2"), 100, 64)
        loss = obj(m, m, torch.zeros(16, 64), None, 10)
        assert torch.all(loss == 0)
    # and the masks are not trivially all-ones
    assert (m(torch.zeros(16, 64), None) == 0).any()


def test_ct_inversion_loss_is_zero_for_the_ideal_noiser_of_a_point_mass():
    # Data = the single point x0: x_t = x0 + t z, and the exact noiser is f(x, t) = x0 + T (x - x0)/t.
    x0 = torch.full((32, 4), 0.3)

    class Exact(nn.Module):
        def forward(self, x, t, labels=None):
            return 0.3 + 80.0 * (x - 0.3) / t.view(-1, 1)

    obj = CTInversionLoss(ObjectiveConfig("ct-inversion", distance="l2"), 100, 4)
    loss = obj(Exact(), Exact(), x0, None, 99)
    assert loss.max() < 1e-6


def test_edm_loss_weight_and_shape():
    obj = EDMLoss(ObjectiveConfig("edm"), 100, 4)
    assert obj.cfg.p_mean == -1.2 and obj.cfg.p_std == 1.2

    class Perfect(nn.Module):
        def forward(self, x, t, labels=None):
            return torch.zeros_like(x)  # data is all zeros: D = 0 is exact

    loss = obj(Perfect(), None, torch.zeros(10, 4), None, 0)
    assert loss.shape == (10,) and torch.all(loss == 0)


def test_cd_inversion_target_is_the_teachers_euler_step():
    from alignlearn.objectives import CDInversionLoss

    teacher = lambda x, t, labels=None: 0.5 * x  # noqa: E731 - any denoiser will do
    obj = CDInversionLoss(ObjectiveConfig("cd-inversion"), 100, 4, teacher)
    x0 = torch.randn(64, 4)
    t_n, t_n1, x_n, x_n1 = obj.pair(x0, 50)
    expect = x_n + (t_n1 - t_n)[:, None] * (x_n - 0.5 * x_n) / t_n[:, None]
    assert torch.allclose(x_n1, expect)
    # not Algorithm 1's shared-z point x0 + t_{n+1} z
    z = (x_n - x0) / t_n[:, None]
    assert not torch.allclose(x_n1, x0 + t_n1[:, None] * z)


def test_cd_inversion_needs_a_teacher():
    import pytest

    from alignlearn.errors import UserError
    from alignlearn.objectives import build_objective

    with pytest.raises(UserError, match="teacher"):
        build_objective(ObjectiveConfig("cd-inversion"), 100, 4)
