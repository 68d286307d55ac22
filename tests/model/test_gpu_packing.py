"""Packed attention on a CUDA GPU (scripts/gpu_check.sh): compiled FlexAttention with the document
mask and the per-segment fused kernels both equal block-diagonal attention in float64 (outputs and
gradients), and a packed bf16 training forward of VideoDiT agrees between the two and with the
per-sample forwards; the benchmark's packed rows beat the padded batch."""
import pytest
import torch
import torch.nn.functional as F

from megatron_video.model.attention import Attention
from megatron_video.model.packed_attention import packed_attention
from megatron_video.model.packing import PackLayout, Segment

pytestmark = pytest.mark.gpu

GRIDS = [(1, 16, 16), (4, 16, 24), (2, 8, 8), (3, 8, 16)]


def block_diagonal_reference(q, k, v, key_mask, layout):
    ids = layout.segment_ids(q.device)
    allowed = (ids[:, None] == ids[None, :]) & (ids[None, :] >= 0) & key_mask[0][None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=(allowed | (ids < 0)[:, None])[None, None])
    return out * (ids >= 0)[None, None, :, None]


@pytest.mark.parametrize("method", ["segments", "flex"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_attention_on_cuda_matches_float64_block_diagonal(method, dtype):
    torch.backends.cuda.matmul.allow_tf32 = False
    layout = PackLayout.of([Segment(16, grid) for grid in GRIDS], multiple=128)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, 4, layout.length, 64, generator=g, device="cuda") for _ in range(3))
    key_mask = torch.ones(1, layout.length, dtype=torch.bool, device="cuda")
    key_mask[0, 5:16] = False  # the first sample's text is padded
    key_mask[0, layout.tokens:] = False
    leaves = [t.to(dtype).requires_grad_() for t in (q, k, v)]
    out = packed_attention(method, Attention("auto", 4, 64), *leaves, key_mask, layout, None)
    doubles = [t.double().requires_grad_() for t in (q, k, v)]
    ref = block_diagonal_reference(*doubles, key_mask, layout)
    probe = torch.randn(ref.shape, generator=g, device="cuda", dtype=torch.float64)
    grads = torch.autograd.grad((out.double() * probe).sum(), leaves)
    ref_grads = torch.autograd.grad((ref * probe).sum(), doubles)
    tol = 2e-2 if dtype == torch.bfloat16 else 2e-3
    for mine, theirs in [(out, ref), *zip(grads, ref_grads)]:
        rel = (mine.double() - theirs).norm() / theirs.norm()
        assert rel < tol, (method, dtype, float(rel))


def test_packed_model_forward_on_cuda_flex_equals_segments_and_per_sample():
    from megatron_video.model import VideoDiTConfig, build_model
    from megatron_video.model.packing import pack_samples, unpack_video
    from megatron_video.parallel.state import ParallelConfig, init_distributed
    from megatron_video.testing.weights import exercised_state

    init_distributed(ParallelConfig(), torch.device("cuda"))
    torch.manual_seed(0)
    cfg = VideoDiTConfig(in_channels=16, hidden=256, layers=4, heads=4, text_dim=64)
    model = build_model(cfg).cuda()
    state = exercised_state(model)
    flex = build_model(VideoDiTConfig(**{**cfg.__dict__, "packed_attention": "flex"})).cuda()
    flex.load_state_dict(state)
    g = torch.Generator().manual_seed(1)
    latents = [torch.randn(16, *grid[:1], grid[1] * 2, grid[2] * 2, generator=g).cuda() for grid in GRIDS]
    texts = [torch.randn(8, 64, generator=g).cuda() for _ in GRIDS]
    masks = [torch.ones(8, dtype=torch.bool, device="cuda") for _ in GRIDS]
    t = torch.rand(len(GRIDS), generator=g).cuda()
    video, text, mask, layout = pack_samples(latents, texts, masks, cfg.patch, multiple=128)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        by_segments = model(video, t, text, mask, pack=layout)
        by_flex = flex(video, t, text, mask, pack=layout)
        alone = [model(x[None], t[i:i + 1], texts[i][None], masks[i][None])[0] for i, x in enumerate(latents)]
    assert ((by_flex.float() - by_segments.float()).norm() / by_segments.float().norm()) < 3e-2
    for mine, theirs in zip(unpack_video(by_segments.float(), layout, cfg.patch, 16), alone):
        assert ((mine - theirs.float()).norm() / theirs.float().norm()) < 3e-2
    by_flex.float().square().mean().backward()  # FlexAttention's CUDA backward runs
    assert all(p.grad is not None for p in flex.parameters() if p.requires_grad)
