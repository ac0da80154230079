"""The EMA of weights: the recursion it computes, and that it follows the model it was built from."""

import torch
from torch import nn

from alignlearn.ema import EMA, ema_decay_at


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double()


def test_update_is_the_ema_recursion_with_warmup():
    model = _model()
    ema = EMA(model, decay=0.9)
    expected = [t.clone() for t in EMA._tensors(model)]
    for step in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model[1].running_mean.add_(1.0)
        ema.update(model, step)
        d = min(0.9, (1 + step) / (10 + step))
        assert d == ema_decay_at(step, 0.9)
        expected = [d * e + (1 - d) * t for e, t in zip(expected, EMA._tensors(model))]
    for got, want in zip(EMA._tensors(ema.module), expected):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert ema.module[1].num_batches_tracked == 0  # integer buffers are not averaged


def test_follows_replaced_tensor_data_and_another_model():
    model = _model()
    ema = EMA(model, decay=0.5, warmup=False)
    ema.update(model, 0)
    with torch.no_grad():
        model[0].weight.data = torch.full_like(model[0].weight, 2.0)  # as module.to() does: new storage
    before = ema.module[0].weight.clone()
    ema.update(model, 1)
    torch.testing.assert_close(ema.module[0].weight, 0.5 * before + 1.0, rtol=0, atol=1e-12)
    other = _model()
    with torch.no_grad():
        other[0].weight.fill_(-4.0)
    now = ema.module[0].weight.clone()
    ema.update(other, 2)  # a different source model is gathered anew
    torch.testing.assert_close(ema.module[0].weight, 0.5 * now - 2.0, rtol=0, atol=1e-12)
