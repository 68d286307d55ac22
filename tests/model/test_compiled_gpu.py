"""torch.compile of the model on a GPU matches the eager model, with cuDNN attention and with the
native FP8 linears (both run outside the compiled graphs: model/attention_choice.py, model/fp8/linear.py).

The model has the 1B preset's width and heads (two of its layers) at 8,192 video tokens, batch 1:
the shapes of the compiled backward that failed in cuDNN's graph execution on an H200."""
import pytest
import torch

from megatron_video.model import build_model, load_preset
from megatron_video.model.fp8.settings import FP8_OFF, Fp8Settings
from megatron_video.parallel.state import ParallelConfig, init_distributed

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("fp8", [FP8_OFF, Fp8Settings("native", "tensor")], ids=["bf16", "fp8"])
def test_compiled_model_matches_eager_on_gpu(fp8):
    init_distributed(ParallelConfig(), torch.device("cuda"))
    torch._dynamo.reset()
    torch.manual_seed(0)
    cfg = load_preset("1b", layers=2, attention_backend="cudnn")
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

    def run(forward):
        model.zero_grad()
        out = forward(x, t, text, mask)
        out.float().square().mean().backward()
        torch.cuda.synchronize()
        return out.detach().float(), [p.grad.float().clone() for p in model.parameters() if p.grad is not None]

    eager_out, eager_grads = run(model)
    compiled_out, compiled_grads = run(torch.compile(model))
    assert len(compiled_grads) == len(eager_grads) > 0
    # bf16 throughout: inductor's fusions round differently from eager's separate kernels.
    torch.testing.assert_close(compiled_out, eager_out, rtol=2e-2, atol=2e-2)
    for got, want in zip(compiled_grads, eager_grads, strict=True):
        assert (got - want).norm() <= 0.05 * want.norm() + 1e-6
