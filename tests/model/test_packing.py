"""Sequence packing: a packed row computes each sample exactly as it would be computed alone.

Packed attention (one kernel call per segment, or FlexAttention's document mask) equals dense
attention under the block-diagonal mask in float64, outputs and gradients; a packed VideoDiT forward
of an image (1 frame), short and long clips at different resolutions, with per-sample timesteps and
text, equals each sample's own forward; the packed loss's per-sample terms and gradient equal the
separate samples' losses and summed gradients; RoPE positions restart at each segment; one
sample's timestep reaches its segment only.
"""
import pytest
import torch
import torch.nn.functional as F

from megatron_video.diffusion.flow_matching import FlowMatching
from megatron_video.model import VideoDiTConfig, build_model
from megatron_video.model.attention import Attention, factorized_attention
from megatron_video.model.packed_attention import packed_attention, segment_attention
from megatron_video.model.packing import PackLayout, Segment, pack_samples, segment_losses, unpack_video
from megatron_video.model.patchify import patchify
from megatron_video.model.rope import video_positions
from megatron_video.testing.weights import exercised_state

ATOL = RTOL = 1e-12  # float64: only the summation order differs
TEXT = 3
# An image (1 frame), a short clip and a longer one at two resolutions (latent T, H, W).
LATENTS = [(1, 4, 6), (2, 4, 4), (3, 2, 6)]


def layout_of(multiple=1, length=None):
    return PackLayout.of([Segment(TEXT, latent) for latent in LATENTS], length, multiple)


def dense_reference(q, k, v, key_mask, layout):
    """softmax attention under the explicit block-diagonal mask; padding rows set to zero."""
    ids = layout.segment_ids()
    allowed = (ids[:, None] == ids[None, :]) & (ids[None, :] >= 0) & key_mask[0][None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[None, None] | (ids < 0)[:, None])
    return out * (ids >= 0)[None, None, :, None]


def random_qkv(layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, 2, layout.length, 8, generator=g, dtype=torch.float64) for _ in range(3))
    key_mask = torch.ones(1, layout.length, dtype=torch.bool)
    key_mask[0, 1:3] = False  # sample 0's text is padded after its first token
    key_mask[0, layout.tokens:] = False
    return q, k, v, key_mask


def test_layout_rows_and_positions_restart_per_sample():
    layout = layout_of(length=104, multiple=5)
    assert layout.length == 105 and layout.tokens == 3 * TEXT + 24 + 32 + 36
    assert layout.cu_seqlens().tolist() == [0, TEXT + 24, 2 * TEXT + 56, 3 * TEXT + 92]
    positions = layout.positions()
    for start, segment in zip(layout.starts, layout.segments):
        assert positions[start:start + TEXT].abs().max() == 0  # text is never rotated
        video = positions[start + TEXT:start + segment.length]
        torch.testing.assert_close(video, video_positions(segment.grid), atol=0, rtol=0)
    assert positions[layout.tokens:].abs().max() == 0
    ids = layout.segment_ids()
    assert ids[layout.video_rows()].tolist() == layout.video_segments().tolist()
    assert (ids[layout.tokens:] == -1).all() and (layout.modulation_rows()[layout.tokens:] == 0).all()
    assert sorted(layout.text_rows().tolist() + layout.video_rows().tolist()) == list(range(layout.tokens))


@pytest.mark.parametrize("axis", [None, "spatial", "temporal"])
def test_segment_attention_equals_block_diagonal_attention(axis):
    layout = layout_of(length=104)
    q, k, v, key_mask = (t.requires_grad_(t.dtype == torch.float64) for t in random_qkv(layout))
    out = segment_attention(Attention("math", 2, 8), q, k, v, key_mask, layout, axis)
    ref_inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    if axis is None:
        ref = dense_reference(*ref_inputs, key_mask, layout)
    else:  # each sample's factorised attention on its own rows (test_attention checks it against dense)
        parts = []
        for start, segment in zip(layout.starts, layout.segments):
            rows = slice(start, start + segment.length)
            parts.append(factorized_attention(Attention("math", 2, 8), *(t[:, :, rows] for t in ref_inputs),
                                              key_mask[:, rows], TEXT, segment.grid, axis))
        ref = torch.cat(parts + [q.new_zeros(1, 2, layout.length - layout.tokens, 8)], dim=2)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=RTOL)
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads = torch.autograd.grad((out * probe).sum(), (q, k, v))
    ref_grads = torch.autograd.grad((ref * probe).sum(), ref_inputs)
    for grad, ref_grad in zip(grads, ref_grads):
        assert ref_grad.abs().max() > 0
        torch.testing.assert_close(grad, ref_grad, atol=ATOL, rtol=RTOL)
    assert out[:, :, layout.tokens:].abs().max() == 0


def test_flex_attention_equals_block_diagonal_attention_forward_on_cpu():
    """FlexAttention runs eagerly (forward only) on CPU; its compiled GPU path is test_gpu_packing's."""
    layout = layout_of(length=104)
    q, k, v, key_mask = random_qkv(layout)
    other_mask = key_mask.clone()
    other_mask[0, 28:30] = False  # the same row with another text mask (as CFG's empty prompt)
    with torch.no_grad():
        for mask in (key_mask, other_mask):
            out = packed_attention("flex", Attention("math", 2, 8), q, k, v, mask, layout, None)
            torch.testing.assert_close(out, dense_reference(q, k, v, mask, layout), atol=ATOL, rtol=RTOL)
    with pytest.raises(RuntimeError, match="packed_attention=segments"):
        packed_attention("flex", None, q.requires_grad_(), k, v, key_mask, layout, None)


# -- the whole model -------------------------------------------------------------------------------


def model_config(**kw):
    return VideoDiTConfig(**{**dict(in_channels=4, hidden=32, layers=2, heads=2, mlp_ratio=2.0, text_dim=12,
                                    patch=[1, 2, 2]), **kw})


def samples(cfg, seed=0):
    """Latents (pixel grids are latent * patch), timesteps, texts, masks and targets per sample."""
    g = torch.Generator().manual_seed(seed)
    latents = [torch.randn(cfg.in_channels, t, 2 * h, 2 * w, generator=g, dtype=torch.float64) for t, h, w in LATENTS]
    timesteps = torch.rand(len(LATENTS), generator=g, dtype=torch.float64)
    texts = [torch.randn(TEXT, cfg.text_dim, generator=g, dtype=torch.float64) for _ in LATENTS]
    masks = [torch.tensor([True, True, index != 1]) for index in range(len(LATENTS))]
    targets = [torch.randn(x.shape, generator=g, dtype=torch.float64) for x in latents]
    return latents, timesteps, texts, masks, targets


def float64_model(cfg):
    torch.manual_seed(0)
    model = build_model(cfg).double()
    exercised_state(model)  # live modulation: timesteps reach every block
    return model


@pytest.mark.parametrize("variant", [dict(), dict(block="sequential", adaln_lora_rank=4, spatio_temporal=True,
                                                  pooled_text_conditioning=True, absolute_positions=True)])
def test_packed_step_equals_separate_samples(megatron_single, variant):
    """Outputs, per-sample losses and the gradient of their mean equal the unpacked samples'."""
    cfg = model_config(**variant)
    model = float64_model(cfg)
    latents, timesteps, texts, masks, targets = samples(cfg)
    flow = FlowMatching()
    separate, grads = [], []
    for index, x in enumerate(latents):
        model.zero_grad()
        out = model(x[None], timesteps[index:index + 1], texts[index][None], masks[index][None])
        loss = flow.loss(out, targets[index][None])
        loss.backward()
        separate.append((out.detach()[0], loss.detach()))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    model.zero_grad()
    video, text, mask, layout = pack_samples(latents, texts, masks, cfg.patch, length=120)
    out = model(video, timesteps, text, mask, pack=layout)
    target = torch.cat([patchify(t[None], cfg.patch) for t in targets], dim=1)
    losses = segment_losses(out, target, layout)
    losses.mean().backward()
    for (ref_out, ref_loss), mine, loss in zip(separate, unpack_video(out.detach(), layout, cfg.patch, cfg.in_channels),
                                               losses):
        torch.testing.assert_close(mine, ref_out, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(loss.double(), ref_loss.double(), atol=1e-6, rtol=1e-6)  # float32 loss
    for name, param in model.named_parameters():
        expected = sum(g[name] for g in grads) / len(grads)
        assert expected.abs().max() > 0, name
        torch.testing.assert_close(param.grad, expected, atol=1e-6, rtol=1e-5, msg=name)


def test_each_sample_timestep_reaches_its_segment_only(megatron_single):
    cfg = model_config()
    model = float64_model(cfg)
    latents, timesteps, texts, masks, _ = samples(cfg)
    video, text, mask, layout = pack_samples(latents, texts, masks, cfg.patch)
    with torch.no_grad():
        base = unpack_video(model(video, timesteps, text, mask, pack=layout), layout, cfg.patch, cfg.in_channels)
        moved = timesteps.clone()
        moved[1] = 1.0 - moved[1]
        changed = unpack_video(model(video, moved, text, mask, pack=layout), layout, cfg.patch, cfg.in_channels)
    assert torch.equal(base[0], changed[0]) and torch.equal(base[2], changed[2])
    assert (base[1] - changed[1]).abs().max() > 1e-3


def test_packed_row_is_one_row_and_fits_the_sequence_multiple(megatron_single):
    cfg = model_config()
    model = float64_model(cfg)
    latents, timesteps, texts, masks, _ = samples(cfg)
    video, text, mask, layout = pack_samples(latents, texts, masks, cfg.patch)
    with pytest.raises(ValueError, match="one row"):
        model(video.expand(2, -1, -1), timesteps, text.expand(2, -1, -1), mask.expand(2, -1), pack=layout)
    with pytest.raises(ValueError, match="pack length"):
        PackLayout.of(list(layout.segments), length=layout.tokens - 1)


def test_per_row_modulation_runs_the_fused_kernels_on_their_batch_axis(monkeypatch):
    """DiTBlock.modulate / residual with one modulation vector per row (a packed row) hand the
    Triton kernels (interpreted on CPU) the rows as their batch: equal to the reference ops."""
    import importlib
    from types import SimpleNamespace

    from kernels import reference
    from megatron_video.model import block
    from megatron_video.model.block_ops import KERNEL_MODULES

    monkeypatch.setattr(block, "block_op", lambda name, fused, first, *args: getattr(
        importlib.import_module(KERNEL_MODULES[name]), name)(first, *args))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 1, 16, generator=g), torch.randn(7, 1, 16, generator=g)
    shift, scale, gate = torch.randn(7, 1, 48, generator=g).chunk(3, dim=-1)  # strided, as the block's chunks
    fake = SimpleNamespace(fused=True, norm_eps=1e-6, offset=0.25)
    inputs = [t.clone().requires_grad_() for t in (x, shift, scale, gate, y)]
    fused = block.DiTBlock.modulate(fake, *inputs[:3]) + block.DiTBlock.residual(fake, inputs[0], inputs[3], inputs[4])
    doubles = [t.detach().double().requires_grad_() for t in (x, shift, scale, gate, y)]
    ref = reference.adaln_modulate(*doubles[:3], 1e-6) + reference.gated_residual(*doubles[0::3], doubles[4], 0.25)
    torch.testing.assert_close(fused.double(), ref, atol=2e-5, rtol=1e-5)
    probe = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    for mine, theirs in zip(torch.autograd.grad((fused * probe.float()).sum(), inputs),
                            torch.autograd.grad((ref * probe).sum(), doubles)):
        torch.testing.assert_close(mine.double(), theirs, atol=5e-5, rtol=1e-5)


def test_packed_attention_benchmark_quick_run_writes_result(tmp_path):
    import importlib.util
    import json
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "packed_attention.py"
    spec = importlib.util.spec_from_file_location("_bench_packed_attention", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    record = json.loads(module.main(["--quick", "--repeats", "1", "--results-dir", str(tmp_path)]).read_text())
    metrics = record["metrics"]
    assert record["name"] == "packed_attention" and record["target"] == 1.5
    assert metrics["padded_batch_tokens"] > metrics["row_length"] >= metrics["tokens_real"]
    assert metrics["flex_vs_segments_rel_err"] < 1e-5 and metrics["segments_s"] > 0 and metrics["flex_s"] > 0
    assert record["ratio"] == pytest.approx(record["baseline"]["padded_s"] / min(metrics["segments_s"],
                                                                                  metrics["flex_s"]), rel=1e-3)
