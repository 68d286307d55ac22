"""Attention backends agree; ST-DiT factorised attention equals dense attention under its mask."""
import pytest
import torch
import torch.nn.functional as F

from megatron_video.model.attention import Attention, factorized_attention


def qkv(b=2, nh=2, s=17, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, nh, s, d, generator=g, dtype=torch.float64) for _ in range(3)]


@pytest.mark.parametrize("backend", ["auto", "math", "flash"])
def test_cpu_backends_match_reference_with_key_mask(backend):
    q, k, v = (t.float() for t in qkv())
    mask = torch.ones(2, 17, dtype=torch.bool)
    mask[0, 2:5] = False
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask[:, None, None, :])
    torch.testing.assert_close(Attention(backend, 2, 8)(q, k, v, mask).double(), ref, atol=1e-5, rtol=1e-5)


def test_te_backend_needs_transformer_engine():
    from megatron_video.model.attention import transformer_engine_available

    if transformer_engine_available():
        pytest.skip("Transformer Engine is installed here: the error path cannot occur")
    with pytest.raises(RuntimeError, match="Transformer Engine"):
        Attention("te", 2, 8)


@pytest.mark.parametrize("axis", ["spatial", "temporal"])
def test_factorized_attention_equals_masked_dense(axis):
    text_len, grid, pad = 3, (2, 2, 3), 2
    n = 12
    s = text_len + n + pad
    q, k, v = qkv(s=s)
    key_mask = torch.ones(2, s, dtype=torch.bool)
    key_mask[1, 2] = False
    key_mask[:, text_len + n:] = False
    out = factorized_attention(Attention("math", 2, 8), q, k, v, key_mask, text_len, grid, axis)
    # dense equivalent: allowed[i, j] per the ST-DiT rule
    idx = torch.arange(n)
    frame, loc = idx // 6, idx % 6
    allowed = torch.zeros(2, s, s, dtype=torch.bool)
    allowed[:, :text_len] = key_mask[:, None, :]
    same = (frame[:, None] == frame[None]) if axis == "spatial" else (loc[:, None] == loc[None])
    allowed[:, text_len:text_len + n, text_len:text_len + n] = same
    if axis == "spatial":
        allowed[:, text_len:text_len + n, :text_len] = key_mask[:, None, :text_len]
    dense = F.scaled_dot_product_attention(q[:, :, :text_len + n], k, v, attn_mask=allowed[:, None, :text_len + n])
    torch.testing.assert_close(out[:, :, :text_len + n], dense, atol=1e-10, rtol=1e-10)
    assert out[:, :, text_len + n:].abs().max() == 0
