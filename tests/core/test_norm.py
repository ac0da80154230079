import copy

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from alignlearn.networks.norm import ChannelStatsGroupNorm, with_channel_stats_group_norms
from alignlearn.trainer import train

from .helpers import digits, tiny_config


def _pair(groups, channels, dtype=torch.float32):
    torch.manual_seed(0)
    gn = nn.GroupNorm(groups, channels, eps=1e-6).to(dtype)
    with torch.no_grad():
        gn.weight.normal_()
        gn.bias.normal_()
    new = ChannelStatsGroupNorm(groups, channels, eps=1e-6).to(dtype)
    new.load_state_dict(gn.state_dict())
    return gn, new


@pytest.mark.parametrize("groups,channels", [(32, 64), (8, 24), (1, 6), (6, 6)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_equals_group_norm_values_and_gradients(groups, channels, channels_last):
    gn, new = _pair(groups, channels, torch.float64)
    # offset channels: the between-channel term of the group variance is large
    x = torch.randn(3, channels, 5, 7, dtype=torch.float64) * 2 + torch.randn(1, channels, 1, 1, dtype=torch.float64) * 5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = gn(a), new(b)
    assert torch.allclose(ya, yb, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(ya)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    assert torch.allclose(a.grad, b.grad, rtol=1e-10, atol=1e-10)
    assert torch.allclose(gn.weight.grad, new.weight.grad, rtol=1e-10, atol=1e-10)
    assert torch.allclose(gn.bias.grad, new.bias.grad, rtol=1e-10, atol=1e-10)


def test_dtypes_follow_group_norm():
    gn, new = _pair(8, 32)
    x = torch.randn(2, 32, 4, 4)
    assert torch.allclose(new(x), gn(x), rtol=1e-5, atol=1e-5)
    xb = x.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert new(xb).dtype == gn(xb).dtype
    assert new.double()(x.double()).dtype == torch.float64


def test_swap_keeps_parameters_and_state_dict():
    from alignlearn.models import build_model

    model = build_model(tiny_config("ct-inversion").model)
    params = [id(p) for p in model.parameters()]
    keys = list(model.state_dict())
    x, t = torch.randn(2, *digits()[0].shape), torch.full((2,), 3.0)
    with torch.no_grad():
        before = model(x, t)
    with_channel_stats_group_norms(model)
    assert any(isinstance(m, ChannelStatsGroupNorm) for m in model.modules())
    assert [id(p) for p in model.parameters()] == params and list(model.state_dict()) == keys
    with torch.no_grad():
        assert torch.allclose(model(x, t), before, atol=1e-5)


def test_trainer_with_per_channel_group_norm_matches_native(tmp_path):
    cfg = tiny_config("ct-inversion", steps=10)
    train(cfg, tmp_path / "native", show_progress=False, data=digits())
    cfg2 = copy.deepcopy(cfg)
    cfg2.train.group_norm = "per-channel"
    train(cfg2, tmp_path / "per_channel", show_progress=False, data=digits())
    a = load_file(tmp_path / "native/checkpoints/step_00000010/model.safetensors")
    b = load_file(tmp_path / "per_channel/checkpoints/step_00000010/model.safetensors")
    assert a.keys() == b.keys()
    # the same function, so 10 Adam steps stay within float rounding of each other
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


def test_auto_group_norm_is_per_channel_only_under_cuda_graphs():
    from alignlearn.networks.norm import resolve_group_norm

    assert resolve_group_norm("auto", cuda_graphs=True) == "per-channel"
    assert resolve_group_norm("auto", cuda_graphs=False) == "native"
    assert resolve_group_norm("native", cuda_graphs=True) == "native"
    assert resolve_group_norm("per-channel", cuda_graphs=False) == "per-channel"
