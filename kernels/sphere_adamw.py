"""Fused SphereAdamW step: Triton kernels over every tensor of the optimizer in a few launches.

The PyTorch reference is megatron_video/optim/sphere_adamw.py (`SphereAdamW(fused=False)`); this
file computes the same update with the same operation order, and `FusedSphereStep` is what that
optimizer calls when its kernels are on.

Multi-tensor layout: a per-tensor table of addresses (parameter, gradient, exp_avg, exp_avg_sq) and
a per-tensor table of step scalars (lr, betas, eps, bias corrections, decay), both rebuilt each
step (gradients and state may move), and a static table of work items pointing into them:
- a sphere row held whole by this rank (its full length in one tensor, and not split over TP ranks)
  is one program: dot product, tangent projection, moments, update, norm and retraction in one pass
  over memory when the row fits one block, else three passes over the row (L2-resident);
- a row segment cut by a distributed-optimizer shard boundary or by tensor parallelism goes through
  three launches: partial <w, g> into the row buffer -> the RowGeometry's all-reduce -> moments and
  partial ||w_new||^2 -> all-reduce -> retraction. The update is recomputed from the stored moments
  in the last launch rather than stored unnormalised, so bf16 parameters round once, as in the
  reference;
- unconstrained tensors are cut into chunks of one block, one program each (AdamW).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.rounding import cast_rtne
from kernels.tiles import TORCH_TO_TRITON

MAX_ROW_BLOCK = 8192  # longest row held in registers by one program; longer rows loop
ROW_TILE = 4096  # elements per program of whole rows: short rows share a program
SEGMENT_BLOCK = 1024  # chunk of the looped paths
ADAMW_BLOCK = 4096

# Columns of the per-tensor scalar table.
LR, BETA1, BETA2, EPS, BIAS1, BIAS2_SQRT, DECAY = range(7)
SCALARS = 7
PHASE_ALL, PHASE_DOT, PHASE_MOMENTS, PHASE_WRITE = 0, 1, 2, 3


@triton.jit
def _adam_moments(g, m, v, beta1, beta2):
    # exp_avg.lerp_(g, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    m = m + (1.0 - beta1) * (g - m)
    v = v * beta2 + (1.0 - beta2) * g * g
    return m, v


@triton.jit
def _adam_update(w, m, v, lr, eps, bias1, bias2_sqrt):
    # w - lr * (exp_avg / bias1) / (sqrt(exp_avg_sq) / sqrt(bias2) + eps)
    return w - lr * (m / bias1 / (tl.sqrt(v) / bias2_sqrt + eps))


@triton.jit
def _sphere_rows_kernel(rows, n_rows, addresses, scalars, ROWS: tl.constexpr, BLOCK: tl.constexpr,
                        W_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr):
    """ROWS whole rows per program, each held in registers (length <= BLOCK): one read and one
    write of each array. rows: [n_rows, 4] int64 of tensor, first element, length, slot."""
    item = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    valid = item < n_rows
    tensor = tl.load(rows + item * 4, mask=valid, other=0)
    first = tl.load(rows + item * 4 + 1, mask=valid, other=0)[:, None]
    length = tl.load(rows + item * 4 + 2, mask=valid, other=0)[:, None]
    w_ptr = tl.load(addresses + tensor * 4).to(tl.pointer_type(W_DTYPE))[:, None] + first
    g_ptr = tl.load(addresses + tensor * 4 + 1).to(tl.pointer_type(G_DTYPE))[:, None] + first
    m_ptr = tl.load(addresses + tensor * 4 + 2).to(tl.pointer_type(tl.float32))[:, None] + first
    v_ptr = tl.load(addresses + tensor * 4 + 3).to(tl.pointer_type(tl.float32))[:, None] + first
    lr = tl.load(scalars + tensor * 7 + 0)[:, None]
    beta1 = tl.load(scalars + tensor * 7 + 1)[:, None]
    beta2 = tl.load(scalars + tensor * 7 + 2)[:, None]
    eps = tl.load(scalars + tensor * 7 + 3)[:, None]
    bias1 = tl.load(scalars + tensor * 7 + 4)[:, None]
    bias2_sqrt = tl.load(scalars + tensor * 7 + 5)[:, None]
    cols = tl.arange(0, BLOCK)[None, :]
    mask = cols < length
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    m = tl.load(m_ptr + cols, mask=mask, other=0.0)
    v = tl.load(v_ptr + cols, mask=mask, other=0.0)
    dot = tl.sum(w * g, axis=1)[:, None]
    m, v = _adam_moments(g - dot * w, m, v, beta1, beta2)
    new = tl.where(mask, _adam_update(w, m, v, lr, eps, bias1, bias2_sqrt), 0.0)
    norm = tl.sqrt(tl.where(valid, tl.sum(new * new, axis=1), 1.0))[:, None]  # 1: padding rows
    tl.store(m_ptr + cols, m, mask=mask)
    tl.store(v_ptr + cols, v, mask=mask)
    tl.store(w_ptr + cols, cast_rtne(new / norm, W_DTYPE), mask=mask)


@triton.jit
def _sphere_segments_kernel(rows, addresses, scalars, dots, norms, PHASE: tl.constexpr, BLOCK: tl.constexpr,
                            W_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr):
    """One program per row segment, looping over it in chunks of BLOCK.

    PHASE_ALL: a whole row longer than one block, in three passes (dot; moments and norm; write);
    PHASE_DOT / PHASE_MOMENTS / PHASE_WRITE: one of those passes over a segment of a cut row,
    partial sums added into dots[slot] and norms[slot] (squared norms), which the caller
    all-reduces between the launches.
    """
    item = tl.program_id(0).to(tl.int64)
    tensor = tl.load(rows + item * 4)
    first = tl.load(rows + item * 4 + 1)
    length = tl.load(rows + item * 4 + 2)
    slot = tl.load(rows + item * 4 + 3)
    w_ptr = tl.load(addresses + tensor * 4).to(tl.pointer_type(W_DTYPE)) + first
    g_ptr = tl.load(addresses + tensor * 4 + 1).to(tl.pointer_type(G_DTYPE)) + first
    m_ptr = tl.load(addresses + tensor * 4 + 2).to(tl.pointer_type(tl.float32)) + first
    v_ptr = tl.load(addresses + tensor * 4 + 3).to(tl.pointer_type(tl.float32)) + first
    lr = tl.load(scalars + tensor * 7 + 0)
    beta1 = tl.load(scalars + tensor * 7 + 1)
    beta2 = tl.load(scalars + tensor * 7 + 2)
    eps = tl.load(scalars + tensor * 7 + 3)
    bias1 = tl.load(scalars + tensor * 7 + 4)
    bias2_sqrt = tl.load(scalars + tensor * 7 + 5)
    cols = tl.arange(0, BLOCK)
    if PHASE == 0 or PHASE == 1:
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, length, BLOCK):
            mask = start + cols < length
            w = tl.load(w_ptr + start + cols, mask=mask, other=0.0).to(tl.float32)
            g = tl.load(g_ptr + start + cols, mask=mask, other=0.0).to(tl.float32)
            acc += w * g
        dot = tl.sum(acc, axis=0)
        if PHASE == 1:
            tl.atomic_add(dots + slot, dot)
    if PHASE == 2:
        dot = tl.load(dots + slot)
    if PHASE == 0 or PHASE == 2:
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, length, BLOCK):
            mask = start + cols < length
            w = tl.load(w_ptr + start + cols, mask=mask, other=0.0).to(tl.float32)
            g = tl.load(g_ptr + start + cols, mask=mask, other=0.0).to(tl.float32)
            m = tl.load(m_ptr + start + cols, mask=mask, other=0.0)
            v = tl.load(v_ptr + start + cols, mask=mask, other=0.0)
            m, v = _adam_moments(g - dot * w, m, v, beta1, beta2)
            tl.store(m_ptr + start + cols, m, mask=mask)
            tl.store(v_ptr + start + cols, v, mask=mask)
            new = tl.where(mask, _adam_update(w, m, v, lr, eps, bias1, bias2_sqrt), 0.0)
            acc += new * new
        norm_sq = tl.sum(acc, axis=0)
        if PHASE == 2:
            tl.atomic_add(norms + slot, norm_sq)
    if PHASE == 3:
        norm_sq = tl.load(norms + slot)
    if PHASE == 0 or PHASE == 3:
        # The update again from the stored moments (the same fp32 operations, so the same values):
        # cheaper than a round trip through memory, and a bf16 parameter is rounded only once.
        norm = tl.sqrt(norm_sq)
        for start in range(0, length, BLOCK):
            mask = start + cols < length
            w = tl.load(w_ptr + start + cols, mask=mask, other=0.0).to(tl.float32)
            m = tl.load(m_ptr + start + cols, mask=mask, other=0.0)
            v = tl.load(v_ptr + start + cols, mask=mask, other=0.0)
            new = _adam_update(w, m, v, lr, eps, bias1, bias2_sqrt)
            tl.store(w_ptr + start + cols, cast_rtne(new / norm, W_DTYPE), mask=mask)


@triton.jit
def _adamw_kernel(chunks, addresses, scalars, BLOCK: tl.constexpr, W_DTYPE: tl.constexpr,
                  G_DTYPE: tl.constexpr):
    """One program per chunk (chunks: [n, 3] int64 of tensor, first element, length <= BLOCK)."""
    item = tl.program_id(0).to(tl.int64)
    tensor = tl.load(chunks + item * 3)
    first = tl.load(chunks + item * 3 + 1)
    length = tl.load(chunks + item * 3 + 2)
    w_ptr = tl.load(addresses + tensor * 4).to(tl.pointer_type(W_DTYPE))
    g_ptr = tl.load(addresses + tensor * 4 + 1).to(tl.pointer_type(G_DTYPE))
    m_ptr = tl.load(addresses + tensor * 4 + 2).to(tl.pointer_type(tl.float32))
    v_ptr = tl.load(addresses + tensor * 4 + 3).to(tl.pointer_type(tl.float32))
    lr = tl.load(scalars + tensor * 7 + 0)
    beta1 = tl.load(scalars + tensor * 7 + 1)
    beta2 = tl.load(scalars + tensor * 7 + 2)
    eps = tl.load(scalars + tensor * 7 + 3)
    bias1 = tl.load(scalars + tensor * 7 + 4)
    bias2_sqrt = tl.load(scalars + tensor * 7 + 5)
    decay = tl.load(scalars + tensor * 7 + 6)
    cols = first + tl.arange(0, BLOCK)
    mask = cols < first + length
    w = tl.load(w_ptr + cols, mask=mask).to(tl.float32)
    g = tl.load(g_ptr + cols, mask=mask).to(tl.float32)
    m = tl.load(m_ptr + cols, mask=mask)
    v = tl.load(v_ptr + cols, mask=mask)
    m, v = _adam_moments(g, m, v, beta1, beta2)
    tl.store(m_ptr + cols, m, mask=mask)
    tl.store(v_ptr + cols, v, mask=mask)
    tl.store(w_ptr + cols, cast_rtne(_adam_update(w * decay, m, v, lr, eps, bias1, bias2_sqrt), W_DTYPE), mask=mask)


class FusedSphereStep:
    """Launch plan for one optimizer: static work tables, rebuilt only when its tensors change.

    `step(sphere, adamw, geometry)` takes (param, grad, state, group) tuples (state holding fp32
    exp_avg/exp_avg_sq, `step` already incremented) and the RowGeometry of the sphere tensors.
    """

    def __init__(self):
        self._key = None
        self._launches: list = []

    def step(self, sphere: list, adamw: list, geometry) -> None:
        items = sphere + adamw
        device = items[0][0].device if items else geometry.device
        key = (id(geometry), len(sphere), tuple((id(p), p.numel(), p.dtype, g.dtype) for p, g, _, _ in items))
        if key != self._key:
            self._launches = self._plan(sphere, adamw, geometry, device)
            self._key = key
        addresses = torch.tensor([[p.data_ptr(), g.data_ptr(), s["exp_avg"].data_ptr(), s["exp_avg_sq"].data_ptr()]
                                  for p, g, s, _ in items] or [[0, 0, 0, 0]], dtype=torch.int64).to(device)
        scalars = torch.tensor([_step_scalars(s, group) for _, _, s, group in items] or [[0.0] * SCALARS],
                               dtype=torch.float32).to(device)
        split = geometry.reduces
        dots = torch.zeros(geometry.total_rows if split else 1, dtype=torch.float32, device=device)
        norms = torch.zeros_like(dots)
        for phase in (PHASE_ALL, PHASE_DOT, PHASE_MOMENTS, PHASE_WRITE):
            for launch_phase, kernel, grid, table, kwargs in self._launches:
                if launch_phase != phase:
                    continue
                if kernel is _sphere_rows_kernel:
                    kernel[grid](table, table.shape[0], addresses, scalars, **kwargs)
                elif kernel is _sphere_segments_kernel:
                    kernel[grid](table, addresses, scalars, dots, norms, **kwargs)
                else:
                    kernel[grid](table, addresses, scalars, **kwargs)
            # Every rank joins both all-reduces, whether it holds cut rows or not.
            if split and phase == PHASE_DOT:
                geometry.reduce_(dots)
            if split and phase == PHASE_MOMENTS:
                geometry.reduce_(norms)

    @staticmethod
    def _plan(sphere: list, adamw: list, geometry, device: torch.device) -> list:
        """(phase, work table, kernel keyword arguments) for every launch of a step."""
        whole: dict[tuple, list] = {}  # (one block, block, dtypes) -> row tables
        cut: dict[tuple, list] = {}
        chunks: dict[tuple, list] = {}
        for index, (param, grad, _, _) in enumerate(sphere):
            dtypes = (TORCH_TO_TRITON[param.dtype], TORCH_TO_TRITON[grad.dtype])
            rows, is_whole = _row_segments(index, param, geometry)
            length = geometry.slice_of(param).row_length
            one_block = length <= MAX_ROW_BLOCK
            block = triton.next_power_of_2(length) if one_block else SEGMENT_BLOCK
            whole.setdefault((one_block, block, *dtypes), []).append(rows[is_whole])
            cut.setdefault(dtypes, []).append(rows[~is_whole])
        for index, (param, grad, _, _) in enumerate(adamw, start=len(sphere)):
            dtypes = (TORCH_TO_TRITON[param.dtype], TORCH_TO_TRITON[grad.dtype])
            first = torch.arange(0, param.numel(), ADAMW_BLOCK, dtype=torch.int64)
            length = (param.numel() - first).clamp(max=ADAMW_BLOCK)
            chunks.setdefault(dtypes, []).append(torch.stack([torch.full_like(first, index), first, length], dim=1))

        def plan(phase: int, kernel, tables: list, rows_per_program: int = 1, **kwargs) -> None:
            table = torch.cat(tables)
            if table.shape[0]:
                tile = kwargs["BLOCK"] * kwargs.get("ROWS", 1)
                launches.append((phase, kernel, (triton.cdiv(table.shape[0], rows_per_program),), table.to(device),
                                 {**kwargs, "num_warps": min(16, max(4, tile // 512))}))

        launches: list = []
        for (one_block, block, w_dtype, g_dtype), tables in whole.items():
            if one_block:
                rows = max(1, ROW_TILE // block)
                plan(PHASE_ALL, _sphere_rows_kernel, tables, rows, ROWS=rows, BLOCK=block, W_DTYPE=w_dtype,
                     G_DTYPE=g_dtype)
            else:
                plan(PHASE_ALL, _sphere_segments_kernel, tables, PHASE=PHASE_ALL, BLOCK=block, W_DTYPE=w_dtype,
                     G_DTYPE=g_dtype)
        for (w_dtype, g_dtype), tables in cut.items():
            for phase in (PHASE_DOT, PHASE_MOMENTS, PHASE_WRITE):
                plan(phase, _sphere_segments_kernel, tables, PHASE=phase, BLOCK=SEGMENT_BLOCK, W_DTYPE=w_dtype,
                     G_DTYPE=g_dtype)
        for (w_dtype, g_dtype), tables in chunks.items():
            plan(PHASE_ALL, _adamw_kernel, tables, BLOCK=ADAMW_BLOCK, W_DTYPE=w_dtype, G_DTYPE=g_dtype)
        return launches


def _step_scalars(state: dict, group: dict) -> list[float]:
    beta1, beta2 = group["betas"]
    step = float(state["step"])
    scalars = [0.0] * SCALARS
    scalars[LR], scalars[BETA1], scalars[BETA2], scalars[EPS] = group["lr"], beta1, beta2, group["eps"]
    scalars[BIAS1], scalars[BIAS2_SQRT] = 1 - beta1 ** step, (1 - beta2 ** step) ** 0.5
    scalars[DECAY] = 1 - group["lr"] * group["weight_decay"]
    return scalars


def _row_segments(index: int, tensor: torch.Tensor, geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows [k, 4] (tensor index, first element, length, slot) of each row the tensor's elements
    touch, and whether each is whole: this rank holds all of it and no other rank a part."""
    piece = geometry.slice_of(tensor)
    length, start, n = piece.row_length, piece.first_element, tensor.numel()
    rows = torch.arange(start // length, (start + n - 1) // length + 1, dtype=torch.int64)
    begin = (rows * length).clamp(min=start) - start
    size = ((rows + 1) * length).clamp(max=start + n) - start - begin
    slot = piece.slot + rows
    is_whole = (size == length) & (slot >= geometry.reduced_tensor_parallel_rows)
    return torch.stack([torch.full_like(rows, index), begin, size, slot], dim=1), is_whole
