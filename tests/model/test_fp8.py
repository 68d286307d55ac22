"""The native FP8 linear (torch._scaled_mm, which has CPU kernels in torch 2.13) on the CPU.

Two references: an FP8 simulation (operands quantised with the same scales, dequantised, multiplied
in float64) that the layer must match to float32 rounding, which pins the scaling logic; and the
exact float32 product, which it must match within FP8's own error. The tolerances come from the
formats: e4m3 rounds to 3 mantissa bits (relative error <= 2^-4, about 0.02-0.03 RMS per operand),
e5m2 to 2 bits (<= 2^-3), and a dot product's relative error is about the RMS of its terms' errors.
So the forward (e4m3 x e4m3) stays within 6% of the float32 result in Frobenius norm, and each
gradient GEMM (e5m2 x e4m3) within 10%.
"""
import pytest
import torch

from megatron_video.config.errors import ConfigError
from megatron_video.model import VideoDiTConfig, build_model
from megatron_video.model.fp8.linear import Fp8ColumnParallelLinear, Fp8RowParallelLinear, fp8_linear
from megatron_video.model.fp8.operands import LinearOperands
from megatron_video.model.fp8.scaling import E4M3, E5M2, dequantize, quantize
from megatron_video.model.fp8.settings import Fp8Settings

FORWARD_TOLERANCE = 0.06
GRADIENT_TOLERANCE = 0.10
# Against the simulation: float32 rounding, or bf16's (2^-9 relative) where the row-wise kernel,
# which writes bf16 only, rounds its output.
SIMULATION_TOLERANCE = {"tensor": 1e-6, "row": 2.0 ** -8}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach().double(), expected.detach().double()
    return float((actual - expected).norm() / expected.norm())


def simulated(a: torch.Tensor, a_dtype, b_rows: torch.Tensor, b_dtype, rowwise: bool) -> torch.Tensor:
    """a @ b_rows^T with each operand quantised along the contracted dimension, in float64."""
    qa, qb = quantize(a, a_dtype, rowwise), quantize(b_rows, b_dtype, rowwise)
    return (qa.data.double() * qa.inverse_scale.double()) @ (qb.data.double() * qb.inverse_scale.double()).t()


# Mantissa bits and subnormal spacing of each format.
FORMATS = {E4M3: (3, 2.0 ** -9), E5M2: (2, 2.0 ** -16)}


@pytest.mark.parametrize("dtype", [E4M3, E5M2])
def test_scales_are_powers_of_two_that_fill_the_format(dtype):
    x = torch.randn(6, 40, dtype=torch.float64) * torch.logspace(-3, 3, 6, dtype=torch.float64)[:, None]
    x[2] = 0.0
    largest = torch.finfo(dtype).max
    mantissa_bits, spacing = FORMATS[dtype]
    for rowwise in (False, True):
        q = quantize(x, dtype, rowwise)
        assert q.data.dtype == dtype and q.data.is_contiguous()
        assert q.inverse_scale.shape == ((6, 1) if rowwise else ())
        scale = q.inverse_scale.double().reciprocal()
        assert torch.equal(torch.exp2(torch.log2(scale).round()), scale)  # exact powers of two
        peak = q.data.double().abs().amax(dim=-1, keepdim=True) if rowwise else q.data.double().abs().amax()
        live = peak > 0
        assert bool((peak <= largest).all()) and bool((peak[live] >= largest / 2 / 1.125).all())
        # The scale is exact, so dequantising leaves only the cast's rounding: half a unit in the
        # last place of a normal number, or half the subnormal spacing.
        error = (dequantize(q, torch.float64) - x).abs()
        assert bool((error <= x.abs() * 2.0 ** -(mantissa_bits + 1) + spacing / 2 / scale).all())
        # bf16 inputs are scaled in bf16 (a power of two multiplies exactly): the same FP8 values.
        x16 = x.to(torch.bfloat16)
        in_bf16, in_fp32 = quantize(x16, dtype, rowwise), quantize(x16.float(), dtype, rowwise)
        assert torch.equal(in_bf16.data.float(), in_fp32.data.float())
    rowwise = quantize(x, dtype, True)
    assert not rowwise.data[2].float().any() and float(rowwise.inverse_scale[2]) == 1.0
    # Under one scale for the tensor, the row 10^6 below the largest falls under e4m3's smallest
    # subnormal and becomes zero; e5m2's wider range (why gradients use it) keeps it. Row scales keep it in both.
    assert bool(quantize(x, dtype, False).data[0].float().any()) == (dtype is E5M2)
    assert rowwise.data[0].float().abs().amax() > 200


@pytest.mark.parametrize("scaling", ["tensor", "row"])
def test_fp8_linear_matches_the_simulation_and_float32(scaling):
    g = torch.Generator().manual_seed(0)
    # 3 x 21 = 63 tokens: the weight gradient pads the contracted token dimension to 64.
    x = torch.randn(3, 21, 64, generator=g).requires_grad_()
    w = (torch.randn(96, 64, generator=g) / 8).requires_grad_()
    probe = torch.randn(3, 21, 96, generator=g)
    y = fp8_linear(x, w, LinearOperands(scaling))
    dx, dw = torch.autograd.grad(y, (x, w), probe)
    rowwise = scaling == "row"
    x2, p2 = x.detach().reshape(-1, 64), probe.reshape(-1, 96)
    expected = {"y": simulated(x2, E4M3, w.detach(), E4M3, rowwise),
                "dx": simulated(p2, E5M2, w.detach().t(), E4M3, rowwise),
                "dw": simulated(p2.t(), E5M2, x2.t(), E4M3, rowwise)}
    for name, got in (("y", y.reshape(-1, 96)), ("dx", dx.reshape(-1, 64)), ("dw", dw)):
        assert relative_error(got, expected[name]) < SIMULATION_TOLERANCE[scaling], name
    assert y.dtype == dx.dtype == dw.dtype == torch.float32
    assert relative_error(y, x.detach() @ w.detach().t()) < FORWARD_TOLERANCE
    assert relative_error(dx, probe @ w.detach()) < GRADIENT_TOLERANCE
    assert relative_error(dw, p2.t() @ x2) < GRADIENT_TOLERANCE
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fp8_linear(x, w, LinearOperands(scaling)).dtype == torch.bfloat16


def test_one_outlier_token_costs_row_scaling_nothing():
    """Per-tensor scaling pushes every other token toward e4m3's subnormals; row scales do not."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 64, generator=g) * 1e-3
    x[0] *= 1e6
    w = torch.randn(48, 64, generator=g) / 8
    exact = x[1:] @ w.t()
    tensor_error = relative_error(fp8_linear(x, w, LinearOperands("tensor"))[1:], exact)
    row_error = relative_error(fp8_linear(x, w, LinearOperands("row"))[1:], exact)
    assert row_error < FORWARD_TOLERANCE < tensor_error


def test_native_fp8_model_builds_fp8_layers_and_tracks_the_float32_model(megatron_single, tiny_inputs):
    cfg = VideoDiTConfig(in_channels=8, hidden=64, layers=2, heads=4, mlp_ratio=2.0, text_dim=24)
    torch.manual_seed(0)
    reference = build_model(cfg)
    inputs = tiny_inputs(cfg)
    probe = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(3))
    (reference(*inputs) * probe).sum().backward()
    for scaling in ("tensor", "row", "delayed"):
        model = build_model(cfg, fp8=Fp8Settings("native", scaling))
        assert isinstance(model.blocks[0].w_in, Fp8ColumnParallelLinear)
        assert isinstance(model.blocks[0].w_out, Fp8RowParallelLinear)
        assert model.blocks[0].w_in.fp8_operands.scaling == scaling
        model.load_state_dict(reference.state_dict())  # the same parameters: checkpoints interchange
        out = model(*inputs)
        (out * probe).sum().backward()
        assert relative_error(out, reference(*inputs)) < FORWARD_TOLERANCE
        # Gradients pass through several FP8 GEMMs (e5m2 twice per block) before reaching the embeddings.
        for name, param in model.named_parameters():
            expected = dict(reference.named_parameters())[name].grad
            assert float((param.grad - expected).norm()) <= 0.2 * float(expected.norm()) + 1e-12, name


def test_fp8_layers_refuse_unaligned_weights(megatron_single):
    cfg = VideoDiTConfig(in_channels=8, hidden=24, layers=1, heads=2, mlp_ratio=2.0, text_dim=24)
    with pytest.raises(ValueError, match="multiples of 16"):
        build_model(cfg, fp8=Fp8Settings("native"))


def test_fp8_config_keys_are_checked_before_any_work():
    from megatron_video.config.loader import load_config

    assert load_config("demo", ["train.fp8=native", "train.fp8_scaling=row"]).train.fp8_settings() \
        == Fp8Settings("native", "row")
    assert load_config("demo", ["train.fp8=off"]).train.fp8 == "off"  # YAML 1.1 would read a bool
    assert load_config("demo", ["train.fp8=native", "train.fp8_scaling=delayed"]).train.fp8_settings() \
        == Fp8Settings("native", "delayed")
    with pytest.raises(ConfigError, match="train.fp8_scaling"):
        load_config("demo", ["train.fp8=native", "train.fp8_scaling=current"])  # TE's name, not native's
    with pytest.raises(ConfigError, match="train.fp8_scaling"):
        load_config("demo", ["train.fp8_scaling=delayed"])  # FP8 is off
    try:
        import transformer_engine.pytorch  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"train\.fp8'.*Transformer Engine"):
            load_config("demo", ["train.fp8=te"])
    else:
        assert load_config("demo", ["train.fp8=te"]).train.fp8_settings().resolved_scaling == "delayed"
