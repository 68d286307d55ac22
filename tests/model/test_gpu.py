"""GPU checks (scripts/gpu_check.sh on an H100): bf16 CUDA matches float32 CPU; every SDPA backend runs."""
import pytest
import torch

from megatron_video.model import VideoDiTConfig, build_model
from megatron_video.model.attention import Attention

pytestmark = pytest.mark.gpu


def test_bf16_cuda_forward_backward_matches_float32_cpu():
    from megatron_video.parallel.state import ParallelConfig, init_distributed

    init_distributed(ParallelConfig(), torch.device("cuda"))
    torch.manual_seed(0)
    cfg = VideoDiTConfig(in_channels=16, hidden=256, layers=4, heads=4, text_dim=64)
    reference = build_model(cfg).cpu()  # on a GPU machine megatron allocates its layers on CUDA
    with torch.no_grad():
        for p in reference.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    model = build_model(cfg, params_dtype=torch.bfloat16).cuda()
    model.load_state_dict({k: v.to(torch.bfloat16) if torch.is_tensor(v) else v
                           for k, v in reference.state_dict().items()})
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 16, 4, 16, 16, generator=g), torch.rand(2, generator=g)
    text, mask = torch.randn(2, 8, 64, generator=g), torch.ones(2, 8, dtype=torch.bool)
    ref = reference(x, t, text, mask)
    ref.square().mean().backward()
    out = model(x.cuda().bfloat16(), t.cuda(), text.cuda().bfloat16(), mask.cuda())
    out.float().square().mean().backward()
    # bf16 keeps 8 mantissa bits: relative error of a 4-layer forward ~1e-2
    rel = (out.float().cpu() - ref.detach()).norm() / ref.norm()
    assert rel < 3e-2, rel
    for (name, p_ref), p in zip(reference.named_parameters(), model.parameters()):
        grad_rel = (p.grad.float().cpu() - p_ref.grad).norm() / p_ref.grad.norm().clamp_min(1e-12)
        assert grad_rel < 0.1, f"{name}: {grad_rel}"


@pytest.mark.parametrize("backend", ["auto", "cudnn", "flash", "efficient", "math"])
def test_each_sdpa_backend_runs_and_agrees(backend):
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 4, 1024, 128, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    out = Attention(backend, 4, 128)(q, k, v, None)
    ref = torch.softmax(q.float() @ k.float().transpose(-1, -2) / 128 ** 0.5, dim=-1) @ v.float()
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)
