"""attention_backend=auto's measured choice, with injected timings (the GPU timer runs in test_gpu_fp8.py)."""
import pytest
import torch
import torch.nn.functional as F

from megatron_video.model.attention_choice import BackendChooser, choice_key, gpu_candidates


def qkv(s=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 2, s, 8, generator=g) for _ in range(3)]


class FakeTimer:
    """Seconds per kernel name, and a log of what was timed."""

    def __init__(self, seconds):
        self.seconds, self.calls = seconds, []

    def __call__(self, name, q, k, v, key_mask, backward):
        self.calls.append((name, tuple(q.shape), backward))
        if self.seconds[name] is None:
            raise RuntimeError(f"{name} rejects these inputs")
        return self.seconds[name]


def test_fastest_kernel_is_chosen_once_per_device_and_shape():
    timer = FakeTimer({"flash": 2e-3, "math": 1e-3})
    chooser = BackendChooser(timer=timer)
    q, k, v = qkv()
    assert chooser.choose(q, k, v, None) == "math"
    assert chooser.choose(q, k, v, None) == "math"
    assert [c[0] for c in timer.calls] == ["flash", "math"]  # cached: timed once
    assert all(backward for *_, backward in timer.calls)  # gradients on: forward + backward timed
    with torch.no_grad():  # inference is a different key, timed forward only
        chooser.choose(q, k, v, None)
    assert timer.calls[-1][2] is False and len(timer.calls) == 4
    q2, k2, v2 = qkv(s=16)
    chooser.choose(q2, k2, v2, None)
    assert len(timer.calls) == 6 and timer.calls[-1][1] == (2, 2, 16, 8)
    assert chooser.timings[choice_key(q, k, None)] == {"flash": 2e-3, "math": 1e-3}


def test_a_rejecting_kernel_is_skipped_and_the_choice_runs():
    chooser = BackendChooser(timer=FakeTimer({"flash": None, "math": 5e-3}))
    q, k, v = qkv()
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 4:] = False
    assert chooser.choose(q, k, v, mask) == "math"
    reference = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask[:, None, None, :])
    torch.testing.assert_close(chooser.attend(q, k, v, mask).double(), reference, atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="no attention kernel"):
        BackendChooser(timer=FakeTimer({"flash": None, "math": None})).choose(q, k, v, None)


def test_a_table_fixes_the_choice_without_timing():
    q, k, v = qkv()
    timer = FakeTimer({"flash": 1.0, "math": 2.0})
    chooser = BackendChooser(timer=timer, table={choice_key(q, k, None): "math"})
    assert chooser.choose(q, k, v, None) == "math" and timer.calls == []


def test_flash_attention_4_is_a_candidate_only_where_it_can_run():
    assert gpu_candidates((9, 0), torch.bfloat16, masked=False, fa4_installed=True)[-1] == "fa4"
    refused = [((9, 0), torch.bfloat16, True, True), ((8, 0), torch.bfloat16, False, True),
               ((9, 0), torch.float32, False, True), ((10, 0), torch.bfloat16, False, False),
               ((12, 0), torch.bfloat16, False, True)]
    for capability, dtype, masked, installed in refused:
        assert gpu_candidates(capability, dtype, masked, installed) == ["cudnn", "flash", "efficient"]


def test_timing_inside_an_activation_checkpoint_leaves_the_checkpoint_intact():
    """The first call of a shape is timed mid-forward, possibly inside train.recompute's checkpoint."""
    import time

    from torch.utils.checkpoint import checkpoint

    from megatron_video.model.attention_choice import KERNELS

    def real_timer(name, q, k, v, key_mask, backward):
        q, k, v = (torch.randn_like(t).requires_grad_(backward) for t in (q, k, v))
        start = time.perf_counter()
        out = KERNELS[name](q, k, v, key_mask)
        if backward:
            out.backward(torch.ones_like(out))
        return time.perf_counter() - start

    chooser = BackendChooser(timer=real_timer)
    q, k, v = (t.requires_grad_() for t in qkv())
    out = checkpoint(lambda a, b, c: chooser.attend(a, b, c, None), q, k, v, use_reentrant=False)
    out.sum().backward()
    reference = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(q.grad, torch.autograd.grad(reference.sum(), q)[0], atol=1e-5, rtol=1e-5)


def test_cudnn_gradient_reaches_the_kernel_in_the_outputs_layout():
    """GradInOutputLayout, which the cuDNN kernel's output passes through: a gradient arriving in
    another memory order (the block's [S, B, H, D]) is handed on with the output's strides, values
    unchanged; one already in that layout is handed on as it is."""
    from megatron_video.model.attention_choice import GradInOutputLayout

    out = torch.randn(2, 3, 5, 4, requires_grad=True)
    seen = []
    probe = out * 1
    probe.register_hook(lambda grad: seen.append(grad))
    arriving = torch.randn(5, 2, 3, 4)  # [S, B, H, D] memory, viewed as [B, H, S, D]
    GradInOutputLayout.apply(probe).backward(arriving.permute(1, 2, 0, 3))
    assert seen[0].stride() == probe.stride() and torch.equal(seen[0], arriving.permute(1, 2, 0, 3))
    same = torch.randn(2, 3, 5, 4)
    (grad,) = torch.autograd.grad(GradInOutputLayout.apply(probe), probe, same)
    assert grad.data_ptr() == same.data_ptr()
