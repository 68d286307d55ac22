"""Tiling rules, dtype names and autotuning shared by the block kernels."""
import os

import torch
import triton
import triton.language as tl

TORCH_TO_TRITON = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}
TILE = 4096  # elements per program for row-wise kernels: short rows share a program


def rows_per_program(block: int) -> int:
    return max(1, TILE // block)


def autotune(configs: list[triton.Config], key: list[str]):
    """triton.autotune over a few tile shapes: the first call per key times them on the GPU and keeps
    the fastest. Interpreted (TRITON_INTERPRET=1, the CPU tests) only the first one runs: timing needs
    a GPU. The kernels it wraps only write their outputs, so the trial launches leave nothing behind."""
    def first_when_interpreted(configs, named_args, **kwargs):
        return configs[:1] if os.environ.get("TRITON_INTERPRET") == "1" else configs

    return triton.autotune(configs, key=key, prune_configs_by={"early_config_prune": first_when_interpreted})
