"""Counter-based dropout (networks/dropout.py): nn.Dropout's distribution, a mask that is a function of
(seed, site, logical position) only, and the same mask eager and compiled."""

import copy

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from alignlearn.networks.dropout import (CounterDropout, _as_int32, dropout_seeds, keep_mask, mix32,
                                        with_counter_dropout)
from alignlearn.networks.presets import build_backbone, preset_config

from .helpers import digits, tiny_config


def _seed(value):
    return torch.tensor(value, dtype=torch.int64)


def _mix32_unsigned(x):
    """The mixer on unsigned 32-bit values held in int64: no overflow, no sign bit (the definition)."""
    x = ((x >> 16) ^ x) * 0x45D9F3B & 0xFFFFFFFF
    x = ((x >> 16) ^ x) * 0x45D9F3B & 0xFFFFFFFF
    return (x >> 16) ^ x


def test_int32_hash_has_the_unsigned_mixers_bits_eager_and_compiled():
    torch.manual_seed(0)
    u = torch.cat([torch.randint(0, 2**32, (50_000,), dtype=torch.int64),
                   torch.tensor([0, 1, 0xFFFF, 0x10000, 2**31 - 1, 2**31, 2**32 - 1])])
    bits = _as_int32(u)
    assert bits.dtype == torch.int32 and torch.equal(bits.to(torch.int64) & 0xFFFFFFFF, u)
    want = _mix32_unsigned(u)
    for fn in (mix32, torch.compile(mix32)):  # wrapping int32 products, eager kernels and inductor's code
        assert torch.equal(fn(bits).to(torch.int64) & 0xFFFFFFFF, want)
    # the mask is the unsigned definition applied to (seed, site, position numbered n, h, w, c)
    shape, seed, site, p = torch.Size((3, 5, 4, 2)), 2**31 - 2, 7, 0.3
    key = _mix32_unsigned(torch.tensor((seed ^ (site * 0x9E3779B9)) & 0xFFFFFFFF))
    index = torch.arange(shape.numel()).view(3, 4, 2, 5).permute(0, 3, 1, 2)
    expect = (_mix32_unsigned(index ^ key) & 0xFFFFFF) >= round(p * 2**24)
    assert torch.equal(keep_mask(shape, p, _seed(seed), site), expect)


def test_keep_rate_and_independence_of_neighbours():
    p, shape = 0.1, torch.Size((64, 32, 16, 16))
    keep = keep_mask(shape, p, _seed(1234), site=3)
    n = shape.numel()
    dropped = 1 - keep.float().mean().item()
    assert abs(dropped - p) < 5 * (p * (1 - p) / n) ** 0.5
    # neighbours along each dimension drop together with probability p^2, as independent draws would
    for dim in range(4):
        a, b = keep.narrow(dim, 0, shape[dim] - 1), keep.narrow(dim, 1, shape[dim] - 1)
        both = (~a & ~b).float().mean().item()
        assert abs(both - p * p) < 6 * (p * p / a.numel()) ** 0.5, dim


def test_mask_is_a_function_of_seed_site_and_position():
    shape = torch.Size((8, 16, 8, 8))
    a = keep_mask(shape, 0.3, _seed(7), site=0)
    assert torch.equal(a, keep_mask(shape, 0.3, _seed(7), site=0))
    for other in (keep_mask(shape, 0.3, _seed(8), site=0), keep_mask(shape, 0.3, _seed(7), site=1)):
        agree = (a == other).float().mean().item()
        assert abs(agree - (0.3**2 + 0.7**2)) < 0.02  # unrelated masks, not shifted copies of one


def test_output_scales_kept_units_and_ignores_memory_layout():
    drop = CounterDropout(0.25, site=2, seed=_seed(99)).train()
    x = torch.randn(4, 8, 6, 6)
    y = drop(x)
    keep = keep_mask(x.shape, 0.25, _seed(99), 2)
    assert torch.allclose(y, torch.where(keep, x / 0.75, 0.0))
    y_cl = drop(x.contiguous(memory_format=torch.channels_last))
    assert torch.equal(y_cl, y)  # the mask follows (N, C, H, W), not the bytes
    x.requires_grad_(True)
    drop(x).sum().backward()
    assert torch.allclose(x.grad, keep.float() / 0.75)
    assert torch.equal(drop.eval()(x), x)


def test_compiled_mask_and_gradient_equal_eager():
    drop = CounterDropout(0.1, site=5, seed=_seed(2**31 - 5)).train()
    compiled = torch.compile(drop)
    for seed in (2**31 - 5, 17):  # a new step's seed: the compiled graphs read it, no recompile needed to see it
        drop.seed.fill_(seed)
        x = torch.randn(2, 16, 8, 8, requires_grad=True)
        g = torch.randn(2, 16, 8, 8)
        y_eager, y = drop(x), compiled(x)
        assert torch.equal(y, y_eager)
        (grad_eager,) = torch.autograd.grad(y_eager, x, g)
        (grad,) = torch.autograd.grad(y, x, g)
        assert torch.equal(grad, grad_eager)  # the backward's recomputed mask is the forward's


def test_with_counter_dropout_numbers_sites_and_shares_one_seed_per_model():
    net = build_backbone(preset_config("mnist", image_shape=(1, 16, 16)))
    keys = list(net.state_dict())
    n_dropout = sum(isinstance(m, nn.Dropout) for m in net.modules())
    with_counter_dropout(net)
    sites = [m.site for m in net.modules() if isinstance(m, CounterDropout)]
    assert n_dropout > 0 and sites == list(range(n_dropout))
    assert not any(type(m) is nn.Dropout for m in net.modules())
    assert list(net.state_dict()) == keys  # checkpoints do not see the seed
    (seed,) = dropout_seeds(net)
    (copied,) = dropout_seeds(copy.deepcopy(net))
    assert copied is not seed


@pytest.mark.parametrize("target", ["stopgrad", "ema"])
def test_trainer_sets_one_seed_per_step_for_both_passes_and_resumes_exactly(tmp_path, monkeypatch, target):
    import alignlearn.trainer as trainer

    seen = []
    real_build = trainer.build_objective

    def recording_build(*args, **kwargs):
        objective = real_build(*args, **kwargs)

        def call(net, target_net, *rest):
            seen.append(tuple(int(s) for m in (net, target_net) for s in dropout_seeds(m)))
            return objective(net, target_net, *rest)

        call.num_steps = objective.num_steps
        return call

    monkeypatch.setattr(trainer, "build_objective", recording_build)
    cfg = tiny_config("ct-inversion", steps=10, target=target)
    cfg.model.backbone["dropout"] = 0.2
    cfg.train.dropout_rng = "counter"
    trainer.train(cfg, tmp_path / "straight", show_progress=False, data=digits())
    assert len(seen) == 10 and all(len(set(s)) == 1 for s in seen)  # online and target read one seed
    assert len({s[0] for s in seen}) == 10  # a new one each step
    trainer.train(cfg, tmp_path / "split", show_progress=False, data=digits(), stop_after=4)
    trainer.train(cfg, tmp_path / "split", resume=True, show_progress=False, data=digits())
    a = load_file(tmp_path / "straight/checkpoints/step_00000010/model.safetensors")
    b = load_file(tmp_path / "split/checkpoints/step_00000010/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
