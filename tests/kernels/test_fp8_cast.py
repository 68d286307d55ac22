"""FP8 quantisation kernels (kernels/fp8_cast.py) against the PyTorch reference
(megatron_video/model/fp8/scaling.py), bit for bit: the same power-of-two scales, the same rounding
(to nearest even, including ties) and saturation, on odd shapes and strided inputs, with the
transposed output padded. CPU: TRITON_INTERPRET=1."""
import pytest
import torch

from kernels.fp8_cast import delayed_scales, row_scales, tensor_scales
from megatron_video.model.fp8.scaling import E4M3, E5M2, power_of_two_scale, quantize

FORMATS = [E4M3, E5M2]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8)


def _every_rounding_case(dtype: torch.dtype) -> torch.Tensor:
    """Every finite value of the format, both signs, the midpoints between neighbours (ties) and
    the fp32 values either side of each midpoint; amax is the largest value, so the scale is 1."""
    values = torch.arange(256, dtype=torch.uint8).view(dtype).float()
    values = values[values.isfinite()].unique()
    mids = (values[1:] + values[:-1]) / 2
    return torch.cat([values, mids, mids.nextafter(torch.tensor(-torch.inf)), mids.nextafter(torch.tensor(torch.inf)),
                      torch.tensor([-0.0])])


@pytest.mark.parametrize("dtype", FORMATS)
def test_rounding_and_ties_match_torch(dtype):
    x = _every_rounding_case(dtype).view(-1, 1)
    (data, inverse), = tensor_scales(x, dtype, row_major=True, transposed=False)
    want = quantize(x, dtype, rowwise=False)
    assert inverse.item() == want.inverse_scale.item() == 1.0
    assert torch.equal(_bits(data), _bits(want.data))


@pytest.mark.parametrize("dtype", FORMATS)
def test_saturation_nonfinite_and_zero(dtype):
    largest = torch.finfo(dtype).max
    x = torch.tensor([[largest, largest * 1.03, -largest * 1.03, torch.inf, -torch.inf, 0.0]])
    # amax is infinite: the scale is the reference's, every value saturates or stays 0.
    (data, inverse), = tensor_scales(x, dtype, row_major=True, transposed=False)
    want = quantize(x, dtype, rowwise=False)
    assert inverse.item() == want.inverse_scale.item()
    assert torch.equal(_bits(data), _bits(want.data))
    zeros = torch.zeros(3, 5)
    (data, inverse), = tensor_scales(zeros, dtype, row_major=True, transposed=False)
    assert inverse.item() == 1.0 and not _bits(data).any()


def test_power_of_two_scale_is_exact_at_the_edges():
    largest = torch.finfo(E4M3).max
    amax = torch.tensor([largest, largest.__float__() * (1 + 2 ** -23), largest / 2, 1e-45, 0.0])
    scale = power_of_two_scale(amax, E4M3)
    assert scale.tolist() == [1.0, 0.5, 2.0, 2.0 ** 126, 1.0]


def _inputs(seed: int, dtype: torch.dtype):
    """[70, 45] matrices as the linear meets them: contiguous, a transposed view, a column slice
    of a wider projection, with a few large outliers."""
    gen = torch.Generator().manual_seed(seed)
    wide = torch.randn(70, 100, generator=gen) * 3
    wide[5, 7], wide[60, 30] = 900.0, -2e-3
    return [wide[:, :45].contiguous().to(dtype), wide.t()[:45, :70].t().to(dtype), wide[:, 20:65].to(dtype)]


def _padded(data: torch.Tensor, width: int) -> torch.Tensor:
    out = torch.zeros(data.shape[0], width, dtype=torch.uint8)
    out[:, :data.shape[1]] = _bits(data)
    return out


@pytest.mark.parametrize("source_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dtype", FORMATS)
def test_tensor_scales_write_both_layouts_bit_exact(seed, source_dtype, dtype, poisoned_outputs):
    for x in _inputs(seed, source_dtype):
        (data, inverse), (data_t, inverse_t) = tensor_scales(x, dtype, row_major=True, transposed=True, pad_to=16)
        want = quantize(x, dtype, rowwise=False)
        assert inverse.item() == inverse_t.item() == want.inverse_scale.item(), f"seed {seed}"
        assert torch.equal(_bits(data), _bits(want.data)), f"seed {seed}"
        assert data_t.shape == (45, 80) and torch.equal(_bits(data_t), _padded(want.data.t(), 80)), f"seed {seed}"


@pytest.mark.parametrize("dtype", FORMATS)
def test_row_scales_scale_each_output_row(seed, dtype, poisoned_outputs):
    for x in _inputs(seed, torch.bfloat16):
        (data, inverse), (data_t, inverse_t) = row_scales(x, dtype, row_major=True, transposed=True, pad_to=16)
        rows, columns = quantize(x, dtype, rowwise=True), quantize(x.t(), dtype, rowwise=True)
        assert torch.equal(inverse, rows.inverse_scale) and torch.equal(inverse_t, columns.inverse_scale)
        assert torch.equal(_bits(data), _bits(rows.data)), f"seed {seed}"
        assert torch.equal(_bits(data_t), _padded(columns.data, 80)), f"seed {seed}"
        (only_t, only_inverse_t), = row_scales(x, dtype, row_major=False, transposed=True)
        assert torch.equal(_bits(only_t), _bits(columns.data)) and torch.equal(only_inverse_t, inverse_t)


def test_delayed_scales_use_the_history_and_record_this_call(seed):
    """Calls 0..5 over a 4-slot history: call 0 scales by its own amax; call k by the max amax of
    the calls still in the window (the last two: slots k-2 and k-1 of a 4-slot ring), also when the
    ring wraps, and each call's amax lands in its slot."""
    gen = torch.Generator().manual_seed(seed)
    history = torch.zeros(4, dtype=torch.int32)
    magnitudes = [3.0, 0.01, 50.0, 0.2, 900.0, 7.0]  # call 4 reuses slot 0: no amax of its own
    amaxes = []
    for call, magnitude in enumerate(magnitudes):
        x = (torch.randn(33, 17, generator=gen) * magnitude).to(torch.bfloat16)
        amaxes.append(x.float().abs().max())
        (data, inverse), (data_t, _) = delayed_scales(x, E4M3, history, call, row_major=True, transposed=True)
        window = amaxes[-1:] if call == 0 else amaxes[max(0, call - 2):call]
        scale = power_of_two_scale(torch.stack(window).max(), E4M3)
        assert inverse.item() == scale.reciprocal().item(), f"call {call}, seed {seed}"
        expected = (x.float() * scale).clamp(-448, 448).to(E4M3)
        assert torch.equal(_bits(data), _bits(expected)), f"call {call}, seed {seed}"
        assert torch.equal(_bits(data_t), _bits(expected.t().contiguous()))
        assert history[call % 4].view(torch.float32) == amaxes[-1] and history[(call + 1) % 4] == 0


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(8704, 1536), (8704, 16896), (4100, 7680)])
def test_compiled_kernels_match_the_reference_on_cuda(shape):
    """Compiled, the kernels still give the reference's bits (the interpreter checks only the
    algorithm): the 1B preset's GEMM operands at 8K tokens and an unaligned token count."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(*shape, device="cuda", dtype=torch.bfloat16, generator=gen) * 3
    x[::97, ::31] *= 1e3
    for dtype in FORMATS:
        (data, inverse), (data_t, inverse_t) = tensor_scales(x, dtype, row_major=True, transposed=True, pad_to=16)
        want = quantize(x, dtype, rowwise=False)
        padded = -(-shape[0] // 16) * 16
        assert inverse.item() == inverse_t.item() == want.inverse_scale.item()
        assert torch.equal(_bits(data), _bits(want.data))
        assert torch.equal(_bits(data_t)[:, :shape[0]], _bits(want.data.t())) and not _bits(data_t)[:, shape[0]:].any()
        assert data_t.shape == (shape[1], padded)
        (data, inverse), (data_t, inverse_t) = row_scales(x, dtype, row_major=True, transposed=True, pad_to=16)
        rows, columns = quantize(x, dtype, rowwise=True), quantize(x.t(), dtype, rowwise=True)
        assert torch.equal(_bits(data), _bits(rows.data)) and torch.equal(inverse, rows.inverse_scale)
        assert torch.equal(_bits(data_t)[:, :shape[0]], _bits(columns.data))
        assert torch.equal(inverse_t, columns.inverse_scale)
    history = torch.zeros(4, dtype=torch.int32, device="cuda")
    (data, inverse), _ = delayed_scales(x, E4M3, history, 0, row_major=True, transposed=True)
    assert torch.equal(_bits(data), _bits(quantize(x, E4M3, rowwise=False).data))
    assert history[0].view(torch.float32) == x.float().abs().max()
