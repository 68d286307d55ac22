"""Run a function on N processes with megatron's parallel groups, collect each rank's result.

Every parallel path (TP, SP, CP, PP, DP, distributed optimizer) is tested by running it here and
comparing with a single-process reference: on CPU with gloo, then on GPUs with NCCL (the same case
functions, device="cuda"). Spawning costs 10-25 s per launch on 2 cores (imports), so tests group
several cases into one function.
"""
from __future__ import annotations

import importlib.util
import inspect
import os
import pathlib
import tempfile
import traceback
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from megatron_video.parallel.state import ParallelConfig, destroy_distributed, free_port, init_distributed


def _load_function(source_file: str, qualname: str) -> Callable:
    # Test modules are imported by file (pytest's importlib mode: the transnetv2 wheel ships a
    # top-level `tests` package), so a spawned child cannot import them by name; load by path.
    spec = importlib.util.spec_from_file_location(f"_mvideo_dist_{pathlib.Path(source_file).stem}",
                                                  source_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


DEVICES = ("cpu", "cuda")


def requires_gpus(count: int) -> pytest.MarkDecorator:
    """Skip mark for an NCCL test that runs one rank per GPU."""
    return pytest.mark.skipif(torch.cuda.device_count() < count,
                              reason=f"needs {count} CUDA GPUs: runs on the {count}-GPU machine "
                                     f"(scripts/gpu_check.sh)")


def _worker(rank: int, world_size: int, port: int, parallel: ParallelConfig, hierarchical_context_sizes: list | None,
            device: str, fn_ref: tuple[str, str], args: tuple, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    if device == "cuda":
        # float32 results are compared with a float32 reference: TF32's 10-bit mantissa would
        # swamp the rounding-level tolerances.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    result_path = pathlib.Path(out_dir) / f"rank{rank}.pt"
    try:
        # CUDA: init_distributed picks NCCL and binds this rank to GPU LOCAL_RANK; CPU: gloo and
        # the CPU compatibility layer.
        init_distributed(parallel, torch.device(device), seed=1234,
                         hierarchical_context_sizes=hierarchical_context_sizes)
        result = _load_function(*fn_ref)(*args)
        torch.save({"ok": True, "result": result}, result_path)
    except BaseException:  # noqa: BLE001  (any failure, assertion errors included, goes to the parent)
        torch.save({"ok": False, "error": traceback.format_exc()}, result_path)
    finally:
        destroy_distributed()


def run_distributed(fn: Callable[..., Any], world_size: int, *args: Any,
                    parallel: ParallelConfig | None = None, device: str = "cpu",
                    hierarchical_context_sizes: list[int] | None = None) -> list[Any]:
    """Call fn(*args) on `world_size` spawned ranks; return the list of per-rank return values.

    `fn` must be defined at module level; `args` must pickle without the test module (tensors,
    numbers, dicts). Inside it, megatron's parallel_state is initialised with `parallel` (default:
    all ranks data parallel; `hierarchical_context_sizes` as Layout gives them for USP).
    device="cpu": gloo, with the CPU compatibility layer on. device="cuda": NCCL, rank r on GPU r
    (current device), TF32 off; `fn` places its own tensors and should return CPU tensors (results
    are loaded onto the CPU here in any case).
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cuda" and torch.cuda.device_count() < world_size:
        raise RuntimeError(f"{world_size} CUDA ranks need {world_size} GPUs, "
                           f"{torch.cuda.device_count()} visible")
    parallel = parallel or ParallelConfig()
    fn_ref = (inspect.getfile(fn), fn.__qualname__)
    with tempfile.TemporaryDirectory() as out_dir:
        mp.start_processes(_worker, args=(world_size, free_port(), parallel, hierarchical_context_sizes, device,
                                          fn_ref, args, out_dir),
                           nprocs=world_size, join=True, start_method="spawn")
        # map_location: the parent never needs a CUDA context of its own.
        results = [torch.load(pathlib.Path(out_dir) / f"rank{r}.pt", weights_only=False, map_location="cpu")
                   for r in range(world_size)]
    failures = [f"rank {r}:\n{res['error']}" for r, res in enumerate(results) if not res["ok"]]
    if failures:
        raise AssertionError("distributed run failed\n" + "\n".join(failures))
    return [res["result"] for res in results]
