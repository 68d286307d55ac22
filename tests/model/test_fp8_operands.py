"""The native FP8 linear's operands (megatron_video/model/fp8/operands.py): the Triton kernels'
path (run interpreted here) gives the PyTorch reference's outputs and gradients bit for bit under
every scaling, delayed scaling follows its amax history, and the weight's FP8 copy is made once
per optimizer step and remade whenever the parameter changes."""
import pytest
import torch

from megatron_video.model.fp8 import operands as fp8_operands
from megatron_video.model.fp8.linear import fp8_linear
from megatron_video.model.fp8.operands import LinearOperands
from megatron_video.model.fp8.scaling import E4M3, power_of_two_scale


def _run(scaling: str, kernels: bool, monkeypatch, calls: int = 3):
    """Outputs and gradients of `calls` forward/backward passes of one FP8 linear (63 tokens, so the
    transposes pad the token dimension), the input's magnitude changing from call to call."""
    monkeypatch.setattr(fp8_operands, "use_kernels", lambda x: kernels)
    gen = torch.Generator().manual_seed(0)
    w = (torch.randn(48, 32, generator=gen) / 6).requires_grad_()
    operands = LinearOperands(scaling)
    results = []
    for call in range(calls):
        x = (torch.randn(63, 32, generator=gen) * 4.0 ** call).to(torch.bfloat16).requires_grad_()
        probe = torch.randn(63, 48, generator=gen).to(torch.bfloat16) * 10.0 ** -call
        y = fp8_linear(x, w, operands)
        results += [y, *torch.autograd.grad(y, (x, w), probe)]
    return results


@pytest.mark.parametrize("scaling", ["tensor", "row", "delayed"])
def test_kernels_and_reference_give_the_same_linear(scaling, monkeypatch):
    kernel, reference = _run(scaling, True, monkeypatch), _run(scaling, False, monkeypatch)
    for index, (got, want) in enumerate(zip(kernel, reference)):
        assert got.dtype == want.dtype and torch.equal(got, want), f"{scaling}: result {index} differs"


def test_delayed_scaling_scales_by_earlier_calls():
    """Call 0 takes its own amax; later calls the largest amax of earlier calls, so an input 16x
    larger than all before it saturates instead of rescaling."""
    operands = LinearOperands("delayed")
    small, large = torch.full((16, 16), 2.0), torch.full((16, 16), 32.0)
    first, _ = operands.input(small)
    assert first.inverse_scale == power_of_two_scale(torch.tensor(2.0), E4M3).reciprocal()
    second, second_t = operands.input(large)
    assert second.inverse_scale == first.inverse_scale
    assert float(second.data.float().max()) == torch.finfo(E4M3).max and second_t.data.shape == (16, 16)
    third, _ = operands.input(small)
    assert third.inverse_scale == power_of_two_scale(torch.tensor(32.0), E4M3).reciprocal()


def test_weight_quantised_once_per_step_and_again_when_it_changes():
    w = torch.nn.Parameter(torch.randn(32, 16))
    operands = LinearOperands("tensor")
    cached = operands.weight(w)
    assert operands.weight(w) is cached  # microbatches and recomputed forwards share it
    with torch.no_grad():
        w.mul_(4.0)  # an in-place write autograd sees bumps the version counter
    rescaled = operands.weight(w)
    assert rescaled is not cached and rescaled[0].inverse_scale == cached[0].inverse_scale * 4
    # Writes that bypass the version counter (.data, kernels, megatron's main-to-model copies) are
    # seen after the optimizer's step, which marks the copies stale (fp8/state.py registers it on
    # the model's own optimizers).
    w.data.copy_(torch.randn(32, 16) * 1e-3)
    assert operands.weight(w) is rescaled
    operands.weight_updated()
    fresh = operands.weight(w)
    assert fresh is not rescaled and torch.equal(fresh[0].data.float(), operands.weight(w)[0].data.float())
    assert fresh[0].inverse_scale < rescaled[0].inverse_scale
    # A new storage (a parameter replaced or re-materialised) is a new key too.
    w.data = torch.randn(32, 16)
    assert operands.weight(w) is not fresh


@pytest.mark.parametrize("scaling", ["tensor", "delayed"])
def test_a_compiled_caller_runs_the_linear_eagerly(scaling, monkeypatch):
    """Under torch.compile the FP8 linear stays out of the graph: dynamo cannot trace the cast
    kernels' launches (the compiled 1B preset failed so on an H200), and the operands' state (the
    delayed history's slot) advances on every call instead of being captured once."""
    monkeypatch.setattr(fp8_operands, "use_kernels", lambda x: True)
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    w = (torch.randn(48, 32, generator=gen) / 6).requires_grad_()
    eager_ops, compiled_ops = LinearOperands(scaling), LinearOperands(scaling)

    def layer(x, operands):
        return torch.nn.functional.silu(fp8_linear(x * 2.0, w, operands))

    compiled = torch.compile(layer, backend="eager")
    for call in range(3):
        x = (torch.randn(63, 32, generator=gen) * 4.0 ** call).to(torch.bfloat16)
        assert torch.equal(compiled(x, compiled_ops), layer(x, eager_ops)), f"call {call}"
    if scaling == "delayed":
        assert compiled_ops._input_history.calls == eager_ops._input_history.calls == 3
