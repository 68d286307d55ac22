"""Fused DiT block operations (kernels/*.py) against their references (kernels/reference.py) in
float64: outputs and gradients of every input, on small odd shapes with strided inputs as the block
passes them, outputs poisoned with NaN before each launch. CPU: TRITON_INTERPRET=1, float32 inputs.
GPU (gpu mark): the 1B preset's shapes in bf16, error no worse than eager bf16's against float64."""
import pytest
import torch

import kernels.reference as ref


def _check(fused_fn, ref_fn, inputs: list[torch.Tensor], seed: int, atol: float, rtol: float = 1e-5,
           eager_dtype_check: bool = False, constants: tuple[int, ...] = ()) -> None:
    """Run fused_fn on `inputs` and ref_fn on float64 copies; compare outputs and input gradients
    under a random output gradient (inputs numbered in `constants` get none). With
    eager_dtype_check, the fused error may exceed atol by at most twice the error of ref_fn run in
    the inputs' own dtype (eager PyTorch)."""
    gen = torch.Generator(device=inputs[0].device).manual_seed(seed + 1)
    leaves = [x.detach().requires_grad_(i not in constants) for i, x in enumerate(inputs)]
    doubles = [x.detach().double().requires_grad_(i not in constants) for i, x in enumerate(inputs)]
    outs, ref_outs = fused_fn(*leaves), ref_fn(*doubles)
    outs, ref_outs = (outs if isinstance(outs, tuple) else (outs,)), \
        (ref_outs if isinstance(ref_outs, tuple) else (ref_outs,))
    grads_out = [torch.randn(o.shape, generator=gen, device=o.device, dtype=torch.float64) for o in ref_outs]
    torch.autograd.backward([o for o in outs], [g.to(o.dtype) for o, g in zip(outs, grads_out)])
    torch.autograd.backward(list(ref_outs), grads_out)
    pairs = [("output", o, r) for o, r in zip(outs, ref_outs)] + \
        [(f"grad {i}", a.grad, b.grad) for i, (a, b) in enumerate(zip(leaves, doubles)) if b.grad is not None]
    eager = {}
    if eager_dtype_check:
        lows = [x.detach().requires_grad_(i not in constants) for i, x in enumerate(inputs)]
        low_outs = ref_fn(*lows)
        low_outs = low_outs if isinstance(low_outs, tuple) else (low_outs,)
        torch.autograd.backward(list(low_outs), [g.to(o.dtype) for o, g in zip(low_outs, grads_out)])
        eager = {name: low for (name, _, _), low in zip(pairs, [*low_outs, *(x.grad for x in lows)])}
    for name, got, want in pairs:
        assert got is not None and not torch.isnan(got).any(), f"seed {seed}: {name} has unwritten (NaN) elements"
        err = (got.double() - want).abs().max().item()
        bound = atol + rtol * want.abs().max().item()
        if name in eager:
            bound += 2 * (eager[name].double() - want).abs().max().item()
        assert err <= bound, f"seed {seed}: {name} differs by {err} (bound {bound})"


def _modulation(gen, batch, hidden, chunks, device="cpu", dtype=torch.float32):
    """[1, B, H] views of one [B, chunks * H] modulation output, as DiTBlock.modulation_vectors makes."""
    mod = torch.randn(batch, chunks * hidden, generator=gen, device=device, dtype=dtype) * 0.5
    return [m[None] for m in mod.chunk(chunks, dim=-1)]


def _projection(gen, seq, batch, widths, device="cpu", dtype=torch.float32):
    """Column slices [S, B, w] of one [S, B, sum(widths)] projection output (strided views)."""
    proj = torch.randn(seq, batch, sum(widths), generator=gen, device=device, dtype=dtype)
    return proj.split(widths, dim=-1)


def _heads(t, heads):
    s, b, w = t.shape
    return t.reshape(s, b, heads, w // heads).permute(1, 2, 0, 3)  # [B, heads, S, d], strided


@pytest.fixture
def small_reductions(monkeypatch):
    """A few rows per backward program, so that small sequences span several partial-sum tiles."""
    import kernels.adaln
    import kernels.gated_residual

    monkeypatch.setattr(kernels.adaln, "ROWS_PER_REDUCTION", 3)
    monkeypatch.setattr(kernels.adaln, "SUB_ROWS", 2)
    monkeypatch.setattr(kernels.gated_residual, "ROWS_PER_REDUCTION", 3)
    monkeypatch.setattr(kernels.gated_residual, "SUB_ROWS", 2)


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of a few rows and columns for the autotuned kernels (interpreted, only their first
    config runs), so that small odd shapes span several row tiles and column blocks."""
    import triton

    import kernels.silu_gate
    import kernels.value_mix

    monkeypatch.setattr(kernels.silu_gate._kernel, "configs", [triton.Config({"ROWS": 2, "BLOCK": 8})])
    monkeypatch.setattr(kernels.value_mix._kernel, "configs", [triton.Config({"BLOCK": 8})])
    monkeypatch.setattr(kernels.value_mix, "ROWS", 2)


def test_adaln_modulate(seed, poisoned_outputs, small_reductions):
    from kernels.adaln import adaln_modulate

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 2, 24, generator=gen) * 3 + 1
    shift, scale, _ = _modulation(gen, 2, 24, 3)
    _check(lambda x, sh, sc: adaln_modulate(x, sh, sc, 1e-6), lambda x, sh, sc: ref.adaln_modulate(x, sh, sc, 1e-6),
           [x, shift, scale], seed, atol=2e-5)


def test_adaln_modulate_per_row(seed, poisoned_outputs):
    """A packed row's modulation: one vector per token, the block passing [1, S, H] (batch = tokens)."""
    from kernels.adaln import adaln_modulate

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 7, 24, generator=gen) * 3 + 1
    shift, scale, _ = (m.transpose(0, 1) for m in torch.randn(7, 1, 72, generator=gen).chunk(3, dim=-1))
    _check(lambda x, sh, sc: adaln_modulate(x, sh, sc, 1e-6), lambda x, sh, sc: ref.adaln_modulate(x, sh, sc, 1e-6),
           [x, shift, scale], seed, atol=2e-5)


def test_gated_residual(seed, poisoned_outputs, small_reductions):
    from kernels.gated_residual import gated_residual

    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(5, 2, 20, generator=gen), torch.randn(5, 2, 20, generator=gen)
    _, _, gate = _modulation(gen, 2, 20, 3)
    _check(lambda x, g, y: gated_residual(x, g, y, 0.25), lambda x, g, y: ref.gated_residual(x, g, y, 0.25),
           [x, gate, y], seed, atol=1e-5)


@pytest.mark.parametrize("tiles", ["default", "small"])
def test_silu_gate_on_strided_slices(seed, poisoned_outputs, tiles, request):
    if tiles == "small":
        request.getfixturevalue("small_tiles")
    from kernels.silu_gate import silu_gate

    gen = torch.Generator().manual_seed(seed)
    _, g, u = _projection(gen, 3, 2, [6, 13, 13])
    _check(silu_gate, ref.silu_gate, [g * 3, u], seed, atol=1e-5)
    _check(silu_gate, ref.silu_gate, [g, u], seed, atol=1e-5)  # the strided slices themselves


def test_concat_silu_gate_writes_into_its_half(seed, poisoned_outputs, small_tiles):
    from kernels.silu_gate import concat_silu_gate

    gen = torch.Generator().manual_seed(seed)
    a, g, u = _projection(gen, 3, 2, [6, 13, 13])
    _check(concat_silu_gate, ref.concat_silu_gate, [a, g, u], seed, atol=1e-5)


def test_rope_qk_on_strided_heads(seed, poisoned_outputs):
    from kernels.rope import rope_qk

    gen = torch.Generator().manual_seed(seed)
    q, k = (_heads(t, 3) for t in _projection(gen, 7, 2, [30, 30]))  # head_dim 10: 5 bands
    angles = torch.rand(7, 5, generator=gen) * 50
    _check(rope_qk, ref.rope_qk, [q, k, angles], seed, atol=2e-5, constants=(2,))


def test_rope_qk_backward_takes_gradients_of_any_layout(seed):
    """Attention's backward can hand rope gradients whose last dimension is not contiguous (the math
    backend's matmul gradient of k is a transpose): the kernel's backward must accept them."""
    from kernels.rope import rope_qk

    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(2, 3, 7, 10, generator=gen, requires_grad=True) for _ in range(2))
    angles = torch.rand(7, 5, generator=gen) * 50
    grads = [torch.randn(2, 3, 10, 7, generator=gen).transpose(-1, -2) for _ in range(2)]  # stride(-1) = 7
    fused = torch.autograd.grad(rope_qk(q, k, angles), (q, k), grads)
    reference = torch.autograd.grad(ref.rope_qk(q, k, angles), (q, k), grads)
    for got, want in zip(fused, reference, strict=True):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


def test_rope_qk_gradients_keep_each_inputs_layout(seed, poisoned_outputs):
    """dq and dk come out dense in q's and k's dimension order (here two different ones), so that
    heads split out of a projection flow back into it without a copy."""
    from kernels.rope import rope_qk

    gen = torch.Generator().manual_seed(seed)
    q = _heads(_projection(gen, 7, 2, [30, 30])[0], 3).requires_grad_()  # [B, heads, S, d] of a projection
    k = torch.randn(2, 3, 7, 10, generator=gen, requires_grad=True)  # contiguous
    angles = torch.rand(7, 5, generator=gen) * 50
    grads = [torch.randn(2, 3, 7, 10, generator=gen) for _ in range(2)]
    dq, dk = torch.autograd.grad(rope_qk(q, k, angles), (q, k), grads)
    assert dq.stride() == (30, 10, 60, 1) and dk.stride() == k.stride()
    for got, want in zip((dq, dk), torch.autograd.grad(ref.rope_qk(q, k, angles), (q, k), grads), strict=True):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("tiles", ["default", "small"])
def test_value_mix_on_strided_heads(seed, poisoned_outputs, tiles, request):
    from kernels.value_mix import value_mix

    if tiles == "small":
        request.getfixturevalue("small_tiles")
    gen = torch.Generator().manual_seed(seed)
    v, v_first = (_heads(t, 3) for t in _projection(gen, 9, 2, [15, 15]))  # head_dim 5
    lambdas = torch.rand(2, generator=gen)
    _check(value_mix, ref.value_mix, [v, v_first, lambdas], seed, atol=2e-5)


def test_value_mix_keeps_each_tensors_layout(seed, small_tiles):
    """v' and dv come out dense in v's dimension order, dv_first in v_first's (here a different
    one), whatever the layout of the gradient attention hands back."""
    from kernels.value_mix import value_mix

    gen = torch.Generator().manual_seed(seed)
    v = _heads(_projection(gen, 7, 2, [12, 12])[1], 3).requires_grad_()  # [B, heads, S, d] of a projection
    v_first = torch.randn(2, 3, 7, 4, generator=gen, requires_grad=True)  # contiguous [B, heads, S, d]
    lambdas = torch.rand(2, generator=gen)
    dout = torch.randn(7, 3, 2, 4, generator=gen).permute(2, 1, 0, 3)  # yet another dimension order
    out = value_mix(v, v_first, lambdas)
    dv, dvf = torch.autograd.grad(out, (v, v_first), dout)
    assert out.stride() == dv.stride() == torch.empty_like(v).stride() == (12, 4, 24, 1)
    assert dvf.stride() == v_first.stride()
    want = ref.value_mix(v, v_first, lambdas)
    torch.testing.assert_close(out, want, atol=2e-5, rtol=1e-5)
    for got, expected in zip((dv, dvf), torch.autograd.grad(want, (v, v_first), dout), strict=True):
        torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)


# Layouts a compiled graph (or any caller) may hand the kernels: each input placed in a NaN-filled
# buffer, so that a kernel reading past what its strides say reads NaN. "offset": contiguous at a
# storage offset of one element (not 16-byte aligned); "gaps": every dimension's stride past its
# extent, starting one element in; "permuted": dense in reversed dimension order (the last dimension
# not contiguous); "strided_last": the last dimension at stride 2.
LAYOUTS = ["offset", "gaps", "permuted", "strided_last"]


def _placed(t: torch.Tensor, layout: str) -> torch.Tensor:
    """t's values in `layout`, inside a larger NaN-filled buffer."""
    shape = t.shape
    if layout == "offset":
        strides = torch.empty(shape).stride()
    elif layout == "gaps":
        strides, step = [], 1
        for size in reversed(shape):
            strides.insert(0, step)
            step *= size + 2
    elif layout == "permuted":
        strides = torch.empty(tuple(reversed(shape))).permute(*reversed(range(len(shape)))).stride()
    else:
        strides, step = [], 2
        for size in reversed(shape):
            strides.insert(0, step)
            step *= size
    extent = 1 + sum((size - 1) * stride for size, stride in zip(shape, strides))
    buffer = torch.full((extent + 16,), float("nan"), dtype=t.dtype)
    placed = buffer.as_strided(shape, strides, 1)
    placed.copy_(t)
    assert placed.stride() == tuple(strides) and placed.storage_offset() == 1
    return placed


def _per_sample_vector(values: torch.Tensor, batch_stride: int) -> torch.Tensor:
    """values [1, B, H] at this stride between samples (any, for B = 1: a compiled graph's choice),
    unit column stride, one element into a NaN-filled buffer."""
    _, batch, hidden = values.shape
    buffer = torch.full((1 + (batch - 1) * batch_stride + hidden + 16,), float("nan"), dtype=values.dtype)
    placed = buffer.as_strided(values.shape, (batch * hidden, batch_stride, 1), 1)
    placed.copy_(values)
    return placed


@pytest.mark.parametrize("layout", LAYOUTS)
def test_adaln_modulate_on_any_layout(seed, poisoned_outputs, small_reductions, layout):
    from kernels.adaln import adaln_modulate

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 2, 24, generator=gen) * 3 + 1
    shift, scale = (torch.randn(1, 2, 24, generator=gen) for _ in range(2))
    _check(lambda x, sh, sc: adaln_modulate(x, sh, sc, 1e-6), lambda x, sh, sc: ref.adaln_modulate(x, sh, sc, 1e-6),
           [_placed(t, layout) for t in (x, shift, scale)], seed, atol=2e-5)


@pytest.mark.parametrize("batch", [1, 3])
def test_adaln_modulate_takes_each_vectors_own_sample_stride(seed, poisoned_outputs, batch):
    """shift and scale as separate buffers, each with its own stride between samples (at batch 1 an
    arbitrary one, as torch.compile gives a size-1 dimension), and stride 0 (one vector expanded)."""
    from kernels.adaln import adaln_modulate

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, batch, 24, generator=gen)
    shift = _per_sample_vector(torch.randn(1, batch, 24, generator=gen), 37)
    scale = _per_sample_vector(torch.randn(1, batch, 24, generator=gen), 24)
    shared = torch.randn(1, 1, 24, generator=gen).expand(1, batch, 24)
    for sh, sc in ((shift, scale), (shared, scale), (shift, shared)):
        _check(lambda x, sh, sc: adaln_modulate(x, sh, sc, 1e-6),
               lambda x, sh, sc: ref.adaln_modulate(x, sh, sc, 1e-6), [x, sh, sc], seed, atol=2e-5)


def test_adaln_modulate_broadcasts_one_vector_over_the_samples(seed, poisoned_outputs):
    """shift [1, 1, H] for x [S, 3, H] (the reference broadcasts it), its batch stride past its
    buffer: a kernel indexing samples by that stride reads NaN; shift's gradient sums the samples'."""
    from kernels.adaln import adaln_modulate

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, 24, generator=gen)
    shift = _per_sample_vector(torch.randn(1, 1, 24, generator=gen), 40)
    scale = torch.randn(1, 3, 24, generator=gen)
    _check(lambda x, sh, sc: adaln_modulate(x, sh, sc, 1e-6), lambda x, sh, sc: ref.adaln_modulate(x, sh, sc, 1e-6),
           [x, shift, scale], seed, atol=2e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gated_residual_on_any_layout(seed, poisoned_outputs, small_reductions, layout):
    from kernels.gated_residual import gated_residual

    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(5, 2, 20, generator=gen), torch.randn(5, 2, 20, generator=gen)
    gate = torch.randn(1, 2, 20, generator=gen)
    _check(lambda x, g, y: gated_residual(x, g, y, 0.25), lambda x, g, y: ref.gated_residual(x, g, y, 0.25),
           [_placed(t, layout) for t in (x, gate, y)], seed, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 3])
def test_gated_residual_gate_of_any_sample_stride_or_shared(seed, poisoned_outputs, batch):
    from kernels.gated_residual import gated_residual

    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(4, batch, 20, generator=gen), torch.randn(4, batch, 20, generator=gen)
    gates = [_per_sample_vector(torch.randn(1, batch, 20, generator=gen), 33),  # own stride
             torch.randn(1, 1, 20, generator=gen).expand(1, batch, 20),  # stride 0
             _per_sample_vector(torch.randn(1, 1, 20, generator=gen), 41)]  # [1, 1, H]: broadcast
    for gate in gates:
        _check(lambda x, g, y: gated_residual(x, g, y, 0.25), lambda x, g, y: ref.gated_residual(x, g, y, 0.25),
               [x, gate, y], seed, atol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_silu_gate_on_any_layout(seed, poisoned_outputs, small_tiles, layout):
    from kernels.silu_gate import concat_silu_gate, silu_gate

    gen = torch.Generator().manual_seed(seed)
    a, g, u = (torch.randn(3, 2, w, generator=gen) for w in (6, 13, 13))
    a, g, u = (_placed(t, layout) for t in (a, g, u))
    _check(silu_gate, ref.silu_gate, [g, u], seed, atol=1e-5)
    _check(concat_silu_gate, ref.concat_silu_gate, [a, g, u], seed, atol=1e-5)
    shared = torch.randn(3, 1, 13, generator=gen).expand(3, 2, 13)  # stride 0 between samples
    _check(silu_gate, ref.silu_gate, [g, shared], seed, atol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_rope_qk_on_any_layout(seed, poisoned_outputs, layout):
    from kernels.rope import rope_qk

    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(2, 3, 7, 10, generator=gen) for _ in range(2))
    angles = torch.rand(7, 5, generator=gen) * 50
    _check(rope_qk, ref.rope_qk, [_placed(q, layout), _placed(k, layout), _placed(angles, layout)], seed, atol=2e-5,
           constants=(2,))
    shared = torch.randn(1, 3, 7, 10, generator=gen).expand(2, 3, 7, 10)  # stride 0 between samples
    _check(rope_qk, ref.rope_qk, [shared, _placed(k, layout), angles], seed, atol=2e-5, constants=(2,))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_value_mix_on_any_layout(seed, poisoned_outputs, small_tiles, layout):
    from kernels.value_mix import value_mix

    gen = torch.Generator().manual_seed(seed)
    v, v_first = (torch.randn(2, 3, 9, 5, generator=gen) for _ in range(2))
    lambdas = torch.rand(2, generator=gen)
    _check(value_mix, ref.value_mix, [_placed(v, layout), _placed(v_first, layout), lambdas], seed, atol=2e-5)
    shared = torch.randn(2, 1, 9, 5, generator=gen).expand(2, 3, 9, 5)  # stride 0 between heads
    _check(value_mix, ref.value_mix, [_placed(v, layout), shared, lambdas], seed, atol=2e-5)


def test_block_ops_refuse_operands_they_would_overrun():
    """Shapes the kernels would index past (a smaller operand, angles for fewer positions) raise."""
    from kernels.gated_residual import gated_residual
    from kernels.rope import rope_qk
    from kernels.silu_gate import concat_silu_gate, silu_gate
    from kernels.value_mix import value_mix

    x = torch.randn(4, 2, 8)
    with pytest.raises(ValueError, match="y"):
        gated_residual(x, torch.randn(1, 2, 8), x[:3], 0.25)
    with pytest.raises(ValueError, match="u"):
        silu_gate(x, x[:, :1])
    with pytest.raises(ValueError, match="a"):
        concat_silu_gate(x[:3], x, x)
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(ValueError, match="angles"):
        rope_qk(q, q, torch.rand(3, 4))
    with pytest.raises(ValueError, match="v_first"):
        value_mix(q, q[:, :1], torch.rand(2))


# The 1B preset at 32K video tokens: hidden 1536, 12 heads of 128, gated MLP 6144.
SEQ, HIDDEN, HEADS, MLP = 32768, 1536, 12, 6144


@pytest.mark.gpu
def test_block_ops_at_1b_shapes_in_bf16_against_float64(seed):
    from kernels.adaln import adaln_modulate
    from kernels.gated_residual import gated_residual
    from kernels.rope import rope_qk
    from kernels.silu_gate import concat_silu_gate, silu_gate
    from kernels.value_mix import value_mix

    gen = torch.Generator(device="cuda").manual_seed(seed)
    bf16 = {"device": "cuda", "dtype": torch.bfloat16}
    x = torch.randn(SEQ, 1, HIDDEN, generator=gen, **bf16) * 3 + 1
    shift, scale, gate = _modulation(gen, 1, HIDDEN, 3, **bf16)
    _check(lambda x, sh, sc: adaln_modulate(x, sh, sc, 1e-6), lambda x, sh, sc: ref.adaln_modulate(x, sh, sc, 1e-6),
           [x, shift, scale], seed, atol=1e-3, rtol=1e-3, eager_dtype_check=True)
    y = torch.randn(SEQ, 1, HIDDEN, generator=gen, **bf16)
    _check(lambda x, g, y: gated_residual(x, g, y, 1 / 21), lambda x, g, y: ref.gated_residual(x, g, y, 1 / 21),
           [x, gate, y], seed, atol=1e-3, rtol=1e-3, eager_dtype_check=True)
    q, k, v, g, u = _projection(gen, SEQ, 1, [HIDDEN] * 3 + [MLP] * 2, **bf16)
    _check(silu_gate, ref.silu_gate, [g, u], seed, atol=1e-3, rtol=1e-3, eager_dtype_check=True)
    _check(concat_silu_gate, ref.concat_silu_gate, [q, g, u], seed, atol=1e-3, rtol=1e-3, eager_dtype_check=True)
    angles = torch.rand(SEQ, HIDDEN // HEADS // 2, generator=gen, device="cuda") * 100
    _check(rope_qk, ref.rope_qk, [_heads(q, HEADS), _heads(k, HEADS), angles], seed, atol=1e-3, rtol=1e-3,
           eager_dtype_check=True, constants=(2,))
    lambdas = torch.rand(2, generator=gen, **bf16)
    _check(value_mix, ref.value_mix, [_heads(v, HEADS), _heads(q, HEADS), lambdas], seed, atol=1e-3, rtol=1e-3,
           eager_dtype_check=True)


@pytest.mark.gpu
@pytest.mark.parametrize("block", ["parallel", "sequential"])
def test_model_with_fused_block_ops_matches_the_reference_ops_on_gpu(block):
    """One bf16 model with the blocks' fused ops on and off, each against the same model in float64
    (reference ops, math attention): forward and every parameter's gradient. The fused model's
    error may be at most twice the bf16 reference ops' own error plus 1e-2: a parameter of a few
    elements summed over every token (a gate, the value-mix lambdas) differs between two bf16
    reduction orders by several percent, while a wrong kernel is off by order one."""
    from megatron_video.model import VideoDiTConfig, build_model
    from megatron_video.parallel.state import ParallelConfig, init_distributed

    init_distributed(ParallelConfig(), torch.device("cuda"))
    torch.manual_seed(0)
    cfg = VideoDiTConfig(in_channels=16, hidden=256, layers=4, heads=4, text_dim=64, block=block)
    model = build_model(cfg, params_dtype=torch.bfloat16).cuda()
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:  # zero-initialised outputs: give every path a signal
                p.normal_(0, 0.02)
    exact = build_model(cfg, params_dtype=torch.float64).cuda()
    exact.load_state_dict(model.state_dict())
    for layer in exact.blocks:
        layer.fused = False
        layer.attend.backend = "math"
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 16, 4, 16, 16, generator=g).cuda(), torch.rand(2, generator=g).cuda()
    text, mask = torch.randn(2, 8, 64, generator=g).cuda(), torch.ones(2, 8, dtype=torch.bool).cuda()

    def run(net, dtype):
        net.zero_grad()
        out = net(x.to(dtype), t, text.to(dtype), mask)
        out.double().square().mean().backward()
        return out.double(), [p.grad.double() for p in net.parameters()]

    results = {}
    for fused in (True, False):
        for layer in model.blocks:
            layer.fused = fused
        results[fused] = run(model, torch.bfloat16)
    ref_out, ref_grads = run(exact, torch.float64)

    def rel(a, b):
        return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()

    (fused_out, fused_grads), (eager_out, eager_grads) = results[True], results[False]
    assert rel(fused_out, ref_out) <= 2 * rel(eager_out, ref_out) + 1e-2
    names = [name for name, _ in model.named_parameters()]
    for name, a, b, exact_grad in zip(names, fused_grads, eager_grads, ref_grads):
        assert rel(a, exact_grad) <= 2 * rel(b, exact_grad) + 1e-2, name
