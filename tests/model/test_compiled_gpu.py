"""torch.compile of the model on a GPU matches the eager model: the compiled graphs' attention is
flash or memory-efficient SDPA (model/attention.py), the native FP8 linears and the fused block ops
run between graphs.

The model has the 1B preset's width and heads (two of its layers) at 8,192 video tokens, batch 1:
the shapes at which cuDNN attention's compiled backward went wrong on an H200."""
import pytest
import torch

from megatron_video.config import ConfigError
from megatron_video.model import build_model, compile_model, load_preset
from megatron_video.model.fp8.settings import FP8_OFF, Fp8Settings
from megatron_video.parallel.state import ParallelConfig, init_distributed

pytestmark = pytest.mark.gpu


def model_and_inputs(backend: str, fused: bool = True, fp8=FP8_OFF):
    init_distributed(ParallelConfig(), torch.device("cuda"))
    torch._dynamo.reset()
    torch.manual_seed(0)
    cfg = load_preset("1b", layers=2, attention_backend=backend, fused_kernels=fused)
    model = build_model(cfg, params_dtype=torch.bfloat16, fp8=fp8).cuda()
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:  # zero-initialised outputs: give every path a signal
                p.normal_(0, 0.02)
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(1, cfg.in_channels, 16, 32, 64, device="cuda", dtype=torch.bfloat16, generator=g)
    t = torch.rand(1, device="cuda", generator=g)
    text = torch.randn(1, cfg.max_text_len, cfg.text_dim, device="cuda", dtype=torch.bfloat16, generator=g)
    mask = torch.ones(1, cfg.max_text_len, dtype=torch.bool, device="cuda")
    return model, (x, t, text, mask)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference_ops"])
@pytest.mark.parametrize("fp8", [FP8_OFF, Fp8Settings("native", "tensor")], ids=["bf16", "fp8"])
def test_compiled_model_matches_eager_on_gpu(fp8, fused):
    model, inputs = model_and_inputs("auto", fused, fp8)

    def run(forward):
        model.zero_grad()
        out = forward(*inputs)
        out.float().square().mean().backward()
        torch.cuda.synchronize()
        return out.detach().float(), {n: p.grad.float().clone() for n, p in model.named_parameters()
                                      if p.grad is not None}

    eager_out, eager_grads = run(model)
    compiled_out, compiled_grads = run(compile_model(model))
    assert compiled_grads.keys() == eager_grads.keys() and eager_grads
    # bf16 throughout, and eager attention may be another kernel (cuDNN): results agree to bf16's
    # rounding, 5% of each gradient's norm; the failure this guards against was off by 10^4.
    torch.testing.assert_close(compiled_out, eager_out, rtol=2e-2, atol=2e-2)
    wrong = {name: f"{float((got - eager_grads[name]).norm()):.3g} vs {float(eager_grads[name].norm()):.3g}"
             for name, got in compiled_grads.items()
             if (got - eager_grads[name]).norm() > 0.05 * eager_grads[name].norm() + 1e-6}
    assert not wrong, f"gradients off (error norm vs norm): {wrong}"


def test_cudnn_attention_is_refused_under_compile_on_gpu():
    model, _ = model_and_inputs("cudnn")
    with pytest.raises(ConfigError, match="model.attention_backend"):
        compile_model(model)
