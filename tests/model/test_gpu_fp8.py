"""GPU checks of the native FP8 linear and of the measured attention choice (scripts/gpu_check.sh).

FP8 against bf16 on the same GPU: the forward (e4m3 x e4m3) within 6% relative Frobenius error,
the gradient GEMMs (e5m2 x e4m3) within 10%, the bounds test_fp8.py derives from the formats.
"""
import pytest
import torch
import torch.nn.functional as F

from megatron_video.model import VideoDiTConfig, build_model
from megatron_video.model.fp8.linear import fp8_linear
from megatron_video.model.fp8.operands import LinearOperands
from megatron_video.model.fp8.settings import Fp8Settings

pytestmark = pytest.mark.gpu


def relative_error(actual, expected):
    return float((actual.float() - expected.float()).norm() / expected.float().norm())


@pytest.mark.parametrize("scaling", ["tensor", "row", "delayed"])
@pytest.mark.parametrize("tokens", [4096, 4100])  # 4100: the weight gradient pads the token dimension
def test_fp8_linear_on_cuda_tracks_bf16(scaling, tokens):
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(tokens, 1536, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
    w = (torch.randn(4608, 1536, device="cuda", generator=g) / 1536 ** 0.5).requires_grad_()
    probe = torch.randn(tokens, 4608, device="cuda", dtype=torch.bfloat16, generator=g)
    y = fp8_linear(x, w, LinearOperands(scaling))
    dx, dw = torch.autograd.grad(y, (x, w), probe)
    assert y.dtype == dx.dtype == torch.bfloat16 and dw.dtype == torch.float32
    y_ref = x @ w.bfloat16().t()
    dx_ref, dw_ref = torch.autograd.grad(y_ref, (x, w), probe)
    assert relative_error(y, y_ref) < 0.06
    assert relative_error(dx, dx_ref) < 0.10
    assert relative_error(dw, dw_ref) < 0.10


def test_native_fp8_model_step_on_cuda_tracks_bf16():
    from megatron_video.parallel.state import ParallelConfig, init_distributed

    init_distributed(ParallelConfig(), torch.device("cuda"))
    cfg = VideoDiTConfig(in_channels=16, hidden=256, layers=4, heads=4, text_dim=64)
    torch.manual_seed(0)
    reference = build_model(cfg, params_dtype=torch.bfloat16).cuda()
    g = torch.Generator().manual_seed(0)
    inputs = (torch.randn(2, 16, 4, 16, 16, generator=g).cuda().bfloat16(), torch.rand(2, generator=g).cuda(),
              torch.randn(2, 8, 64, generator=g).cuda().bfloat16(), torch.ones(2, 8, dtype=torch.bool).cuda())
    reference(*inputs).float().square().mean().backward()
    for scaling in ("tensor", "row", "delayed"):
        model = build_model(cfg, params_dtype=torch.bfloat16, fp8=Fp8Settings("native", scaling)).cuda()
        model.load_state_dict(reference.state_dict())
        out = model(*inputs)
        out.float().square().mean().backward()
        assert relative_error(out, reference(*inputs)) < 0.06
        for (name, p_ref), p in zip(reference.named_parameters(), model.parameters()):
            if p_ref.grad.abs().max() > 0:
                assert relative_error(p.grad, p_ref.grad) < 0.2, f"{scaling} {name}"


@pytest.mark.parametrize("masked", [False, True])
def test_measured_attention_choice_runs_and_agrees(masked):
    from megatron_video.model.attention_choice import KERNELS, BackendChooser

    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, 12, 4096, 128, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    mask = torch.ones(1, 4096, dtype=torch.bool, device="cuda")
    if masked:
        mask[:, -100:] = False
    key_mask = mask if masked else None
    chooser = BackendChooser()
    name = chooser.choose(q, k, v, key_mask)
    timings = next(iter(chooser.timings.values()))
    assert name in timings and timings[name] == min(timings.values())
    reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask[:, None, None, :])
    for kernel in timings:  # every kernel that ran for the choice computes the same attention
        assert relative_error(KERNELS[kernel](q, k, v, key_mask), reference) < 1e-2, kernel


def test_flash_attention_4_matches_sdpa_on_the_model_layout_and_joins_the_measured_choice():
    """Forward and gradients of FlashAttention-4 against fp32 attention, on q, k, v as the block
    makes them ([B, H, S, D] views of [S, B, H * D] projections), before any benchmark trusts it."""
    from megatron_video.model.attention_choice import KERNELS, BackendChooser, candidates, flash_attention_4_available

    if not flash_attention_4_available():
        pytest.skip("flash-attn-4 is not installed (wheels: flash-attn-4, nvidia-cutlass-dsl, ...)")
    assert candidates(torch.device("cuda"), torch.bfloat16, masked=False)[-1] == "fa4"
    s, b, heads, d = 2304, 1, 12, 128
    g = torch.Generator(device="cuda").manual_seed(0)
    proj = torch.randn(s, b, 3 * heads * d, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
    grad_out = torch.randn(b, heads, s, d, device="cuda", dtype=torch.bfloat16, generator=g)

    def attention(kernel):
        q, k, v = (t.reshape(s, b, heads, d).permute(1, 2, 0, 3) for t in proj.chunk(3, dim=-1))
        out = kernel(q, k, v)
        (dproj,) = torch.autograd.grad(out, proj, grad_out.to(out.dtype))
        return out, dproj

    out, dproj = attention(lambda q, k, v: KERNELS["fa4"](q, k, v, None))
    ref, dref = attention(lambda q, k, v: F.scaled_dot_product_attention(q.float(), k.float(), v.float()))
    assert relative_error(out, ref) < 1e-2
    assert relative_error(dproj, dref) < 2e-2
    chooser = BackendChooser()
    q, k, v = (t.reshape(s, b, heads, d).permute(1, 2, 0, 3) for t in proj.detach().chunk(3, dim=-1))
    chooser.choose(q, k, v, None)
    (timings,) = chooser.timings.values()
    assert "fa4" in timings, chooser.rejected
