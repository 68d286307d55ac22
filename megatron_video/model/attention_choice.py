"""The local attention kernel chosen by measurement, per device and shape (attention_backend=auto).

Which kernel is fastest depends on the GPU, the sequence length, the head count and whether a key
mask is needed (cuDNN leads on Hopper at long sequences, FlashAttention-4 can lead at some lengths
and in backward, flash SDPA elsewhere), so instead of a fixed order each new (device, shapes, dtype,
mask, grad) key times every candidate that accepts it, on random inputs of the same shape, forward
and (when training) backward, and keeps the fastest. The choice is cached for the process; a
candidate that raises (a kernel rejecting the inputs) is dropped for that key.

Candidates: cuDNN, flash and memory-efficient SDPA, and FlashAttention-4
(`flash_attn.cute.flash_attn_func`, [B, S, H, D] tensors, no arbitrary key mask) where it imports on
a Hopper or Blackwell GPU. The timer and the table are injectable, so the choice is tested on CPU.
"""
from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

log = logging.getLogger(__name__)

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
ChoiceKey = tuple


class GradInOutputLayout(torch.autograd.Function):
    """Identity whose backward hands on the incoming gradient in the output's memory layout.

    cuDNN SDPA's backward (torch 2.11, cuDNN 9.19, H200) reads grad_output as if it had the
    output's strides: given the gradient the block hands back, laid out [S, B, H, D] while the output
    is [B, H, S, D], it returned dq, dk, dv uncorrelated with the true ones (relative error 1.4) at
    every length tried, 1K to 33K tokens (benchmarks/notes.md, "cuDNN attention gradients")."""

    @staticmethod
    def forward(ctx, out: torch.Tensor) -> torch.Tensor:
        ctx.layout = out.stride()
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        if grad.stride() == ctx.layout:
            return grad
        return torch.empty_strided(grad.shape, ctx.layout, dtype=grad.dtype, device=grad.device).copy_(grad)


def _sdpa(backend: SDPBackend) -> Kernel:
    def attend(q, k, v, key_mask):
        mask = None if key_mask is None else key_mask[:, None, None, :]
        with sdpa_kernel([backend]):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return GradInOutputLayout.apply(out) if backend == SDPBackend.CUDNN_ATTENTION else out

    return attend


@torch.compiler.disable  # CuTe DSL host code: dynamo cannot trace it
def flash_attention_4(q, k, v, key_mask):
    """FlashAttention-4 (CuTe DSL) on q, k, v [B, H, S, D]; it takes [B, S, H, D] views."""
    if key_mask is not None:
        raise ValueError("FlashAttention-4 takes no key mask")
    from flash_attn.cute import flash_attn_func

    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    out = out[0] if isinstance(out, tuple) else out  # (out, lse) in some releases
    return out.transpose(1, 2)


KERNELS: dict[str, Kernel] = {
    "cudnn": _sdpa(SDPBackend.CUDNN_ATTENTION),
    "flash": _sdpa(SDPBackend.FLASH_ATTENTION),
    "efficient": _sdpa(SDPBackend.EFFICIENT_ATTENTION),
    "fa4": flash_attention_4,
    "math": _sdpa(SDPBackend.MATH),
}


def flash_attention_4_available() -> bool:
    try:
        return importlib.util.find_spec("flash_attn.cute") is not None
    except ModuleNotFoundError:  # no flash_attn package at all
        return False


def candidates(device: torch.device, dtype: torch.dtype, masked: bool) -> list[str]:
    """Kernels worth timing for these inputs on this device, in the order ties are broken."""
    if device.type != "cuda":
        return ["flash", "math"]
    return gpu_candidates(torch.cuda.get_device_capability(device), dtype, masked, flash_attention_4_available())


def gpu_candidates(capability: tuple[int, int], dtype: torch.dtype, masked: bool, fa4_installed: bool) -> list[str]:
    names = ["cudnn", "flash", "efficient"]
    # FlashAttention-4 in 16-bit types without arbitrary masks, offered on Hopper and Blackwell: its
    # interface dispatches FlashAttentionForwardSm90 / BackwardSm90 on 9.x and the Sm100 kernels on
    # 10.x-11.x (it also carries Sm80 and Sm120 paths, unmeasured here, so not offered).
    if fa4_installed and not masked and dtype in (torch.bfloat16, torch.float16) and 9 <= capability[0] <= 11:
        names.append("fa4")
    return names


def cuda_timer(name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None,
               backward: bool, repeats: int = 3) -> float:
    """Median seconds of one call (forward, plus backward when training) on random inputs shaped like q, k, v."""
    q, k, v = (torch.randn_like(t).requires_grad_(backward) for t in (q, k, v))
    kernel = KERNELS[name]

    def call():
        out = kernel(q, k, v, key_mask)
        if backward:
            out.backward(torch.ones_like(out))

    call()  # first call compiles / picks an algorithm (FA4 JIT-compiles)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


def choice_key(q: torch.Tensor, k: torch.Tensor, key_mask: torch.Tensor | None) -> ChoiceKey:
    device = torch.cuda.get_device_name(q.device) if q.device.type == "cuda" else q.device.type
    return (device, tuple(q.shape), tuple(k.shape), q.dtype, key_mask is not None, torch.is_grad_enabled())


class BackendChooser:
    """Times candidates once per key and remembers the fastest (`table` may be pre-filled)."""

    def __init__(self, timer: Callable[..., float] = cuda_timer, table: dict[ChoiceKey, str] | None = None):
        self.timer = timer
        self.table: dict[ChoiceKey, str] = dict(table or {})
        self.timings: dict[ChoiceKey, dict[str, float]] = {}
        self.rejected: dict[ChoiceKey, dict[str, str]] = {}  # candidate -> the error it raised

    @torch.compiler.disable  # timing runs kernels and CUDA events: under torch.compile, eagerly
    def choose(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None) -> str:
        key = choice_key(q, k, key_mask)
        if key not in self.table:
            times = {}
            # Timing runs its own small graphs, in the middle of the model's forward: the identity
            # saved-tensor hooks keep a surrounding activation checkpoint (train.recompute) from
            # taking their saved tensors as its own.
            with torch.enable_grad() if key[-1] else torch.no_grad(), \
                    torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
                for name in candidates(q.device, q.dtype, key_mask is not None):
                    try:
                        times[name] = self.timer(name, q.detach(), k.detach(), v.detach(), key_mask, key[-1])
                    except Exception as err:  # noqa: BLE001  (a kernel refusing these inputs: not a candidate)
                        self.rejected.setdefault(key, {})[name] = f"{type(err).__name__}: {err}"[:300]
                        log.debug("attention kernel %s rejected %s: %s", name, key, err)
            finite = {name: t for name, t in times.items() if math.isfinite(t)}
            if not finite:
                raise RuntimeError(f"no attention kernel ran on {key}")
            self.timings[key] = times
            self.table[key] = min(finite, key=finite.get)
            log.info("attention kernel for %s: %s (%s)", key, self.table[key],
                     ", ".join(f"{n} {t * 1e3:.3f} ms" for n, t in times.items()))
        return self.table[key]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        return KERNELS[self.choose(q, k, v, key_mask)](q, k, v, key_mask)


MEASURED = BackendChooser()
"""The process-wide chooser that attention_backend=auto uses on GPUs."""
