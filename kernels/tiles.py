"""Tiling rules and dtype names shared by the block kernels."""
import torch
import triton.language as tl

TORCH_TO_TRITON = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}
TILE = 4096  # elements per program for row-wise kernels: short rows share a program


def rows_per_program(block: int) -> int:
    return max(1, TILE // block)
