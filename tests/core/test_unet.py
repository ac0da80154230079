import pytest
import torch
import torch.nn.functional as nnf

from alignlearn.networks.norm import with_fp32_group_norms
from alignlearn.networks.unet import ResBlock, in_autocast_dtype, upsample2x


def _block(dropout):
    torch.manual_seed(0)
    block = ResBlock(16, 16, emb_dim=8, dropout=dropout)
    with_fp32_group_norms(block)  # as CUDA autocast runs GroupNorm (CPU autocast keeps bf16)
    return block, torch.randn(2, 16, 6, 6), torch.randn(2, 8)


def _dropout_input_dtype(block, x, emb):
    seen = []
    handle = block.dropout.register_forward_pre_hook(lambda _, args: seen.append(args[0].dtype))
    block(x, emb)
    handle.remove()
    return seen[0]


def test_in_autocast_dtype_is_identity_outside_autocast():
    x = torch.randn(3, 4)
    assert in_autocast_dtype(x) is x
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert in_autocast_dtype(x).dtype == torch.bfloat16


def test_dropout_runs_in_autocast_dtype_and_changes_nothing_else():
    """Under (CUDA-like) autocast the dropout sees the bf16 that conv1 casts to anyway: in eval mode (dropout
    the identity) the block's output is bit for bit the one with the cast after the dropout."""
    block, x, emb = _block(dropout=0.5)
    assert _dropout_input_dtype(block, x, emb) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _dropout_input_dtype(block, x, emb) == torch.bfloat16
        block.eval()
        out = block(x, emb)
        # the same block with the cast where conv1 does it (after the dropout)
        h = block.conv0(nnf.silu(block.norm0(x)))
        scale, shift = block.affine(emb)[:, :, None, None].chunk(2, dim=1)
        h = nnf.silu(torch.addcmul(shift, block.norm1(h), scale + 1))
        assert h.dtype == torch.float32  # GroupNorm in fp32 under autocast: the cast is not a no-op
        ref = (block.conv1(block.dropout(h)) + block.skip(x)) * (1 / 2**0.5)
    assert torch.equal(out, ref)


def test_dropout_in_bf16_keeps_its_expectation():
    """Training-mode dropout in bf16 still zeroes about p of the values and scales the rest by 1/(1-p)."""
    torch.manual_seed(1)
    drop = torch.nn.Dropout(0.25).train()
    h = torch.rand(200_000) + 1.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = drop(in_autocast_dtype(h))
    assert y.dtype == torch.bfloat16
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.005
    ratio = (y[kept].float() / h[kept].bfloat16().float())
    assert torch.allclose(ratio, torch.full_like(ratio, 1 / 0.75), rtol=2**-7)


@pytest.mark.parametrize("channels_last", [False, True])
def test_upsample2x_is_nearest_interpolation(channels_last):
    """The same values and gradient as interpolate(nearest, 2x), in the input's memory format."""
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = upsample2x(a), nnf.interpolate(b, scale_factor=2.0, mode="nearest")
    assert torch.equal(ya, yb)
    assert ya.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    w = torch.randn_like(yb)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    assert torch.allclose(a.grad, b.grad, rtol=1e-12, atol=1e-12)


def test_upsample2x_compiles_without_graph_breaks():
    explained = torch._dynamo.explain(upsample2x)(torch.randn(1, 2, 3, 3).contiguous(memory_format=torch.channels_last))
    assert explained.graph_break_count == 0
