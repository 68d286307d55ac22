"""Run megatron-core on CPU: the product's compatibility layer for CPU training and gloo tests.

megatron-core assumes CUDA in a few places that are not about the maths: it allocates buffers with
`device=torch.cuda.current_device()`, keeps its tensor-parallel RNG streams in the CUDA generator,
waits on CUDA streams and events, and its optimizer checks `Tensor.type()` for `torch.cuda.*`
names. On a machine without a GPU (the demo, CI's gloo tests) this layer maps each of those to the
CPU so the same megatron code paths run unmodified. It is process-wide and idempotent; it is never
enabled when CUDA is available.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

_lock = threading.Lock()
_enabled = False
_mode: TorchFunctionMode | None = None


def _is_cuda_device(device: Any) -> bool:
    if isinstance(device, str):
        return device.startswith("cuda")
    return isinstance(device, torch.device) and device.type == "cuda"


class _CudaToCpu(TorchFunctionMode):
    """Rewrites device="cuda" arguments so factories and .to() land on the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if _is_cuda_device(kwargs.get("device")):
            kwargs["device"] = "cpu"
        if func in (torch.Tensor.to, torch.Tensor.cuda):
            if func is torch.Tensor.cuda:
                return args[0]
            args = tuple("cpu" if i > 0 and _is_cuda_device(a) else a for i, a in enumerate(args))
        return func(*args, **kwargs)


class _FakeStream:
    """Stands in for torch.cuda.Stream / Event: CPU work is already ordered."""

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def wait_stream(self, other: Any) -> None:
        pass

    def wait_event(self, event: Any) -> None:
        pass

    def record_event(self, event: Any = None) -> _FakeStream:
        return self

    def record(self, stream: Any = None) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True

    def elapsed_time(self, other: Any) -> float:
        return 0.0


def _cpu_rng_state(device: Any = "cuda", clone: bool = False, graph_safe: bool = False) -> torch.Tensor:
    return torch.get_rng_state()


def _set_cpu_rng_state(new_state: torch.Tensor, device: Any = -1, graph_safe: bool = False) -> None:
    torch.set_rng_state(new_state)


def _seed_cpu(seed: int) -> None:
    torch.default_generator.manual_seed(int(seed))


_original_tensor_type = torch.Tensor.type


def _type_with_cuda_names(self: torch.Tensor, *args: Any, **kwargs: Any):
    # The distributed optimizer groups params by `param.type()` against torch.cuda.* names.
    if args or kwargs:
        return _original_tensor_type(self, *args, **kwargs)
    name = _original_tensor_type(self)
    # The function mode re-dispatches this call through the patched method: rename only once.
    if self.device.type == "cpu" and not name.startswith("torch.cuda."):
        return name.replace("torch.", "torch.cuda.", 1)
    return name


def enable_cpu_compat() -> None:
    """Install the CPU mappings (no-op when CUDA is available or when already installed)."""
    global _enabled, _mode
    if torch.cuda.is_available():
        return
    with _lock:
        if _enabled:
            return
        from megatron.core.tensor_parallel import random as mcore_random

        # Most of megatron's buffers are made with device=torch.cuda.current_device(); answering
        # "cpu" covers them, including those made in autograd's backward, where the function
        # mode below is not active.
        torch.cuda.current_device = lambda: torch.device("cpu")
        torch.cuda.device_count = lambda: 1
        torch.cuda.synchronize = lambda *a, **k: None
        torch.cuda.Stream = _FakeStream
        torch.cuda.Event = _FakeStream
        torch.cuda.current_stream = lambda *a, **k: _FakeStream()
        torch.cuda.default_stream = lambda *a, **k: _FakeStream()
        torch.cuda.stream = lambda *a, **k: contextlib.nullcontext()
        torch.cuda.get_rng_state = _cpu_rng_state
        torch.cuda.set_rng_state = _set_cpu_rng_state
        torch.cuda.manual_seed = _seed_cpu
        torch.cuda.manual_seed_all = _seed_cpu
        mcore_random._get_cuda_rng_state = _cpu_rng_state
        mcore_random._set_cuda_rng_state = _set_cpu_rng_state
        torch.Tensor.type = _type_with_cuda_names
        _mode = _CudaToCpu()
        _mode.__enter__()
        _enabled = True


def cpu_compat_enabled() -> bool:
    return _enabled
