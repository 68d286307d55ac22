"""Fused SphereAdamW step: Triton kernels over every tensor of the optimizer in a few launches.

The PyTorch reference is megatron_video/optim/sphere_adamw.py (`SphereAdamW(fused=False)`); this
file computes the same update with the same operation order, and `FusedSphereStep` is what that
optimizer calls when its kernels are on.

Multi-tensor layout: a per-tensor table of addresses (parameter, gradient, exp_avg, exp_avg_sq),
uploaded again only when one of them moves, a per-tensor table of step scalars (lr, betas, eps,
bias corrections, decay), uploaded each step without waiting for the device, and a static table of
work items pointing into them:
- a sphere row held whole by this rank (its full length in one tensor, and not split over TP ranks)
  is one pass over memory when the row fits one block: dot product, tangent projection, moments,
  update, norm and retraction with the row in registers; short rows share a program. A longer row
  takes three passes (L2-resident);
- a row segment cut by a distributed-optimizer shard boundary or by tensor parallelism goes through
  three launches: partial <w, g> into the row buffer -> the RowGeometry's all-reduce -> moments and
  partial ||w_new||^2 -> all-reduce -> retraction. The update is recomputed from the stored moments
  in the last launch rather than stored unnormalised, so bf16 parameters round once, as in the
  reference;
- unconstrained tensors are cut into chunks of one block, one program each (AdamW).

Bandwidth: the step is memory-bound (28 bytes per fp32 parameter), so the kernels are shaped for
it. Work items whose four arrays are 16-byte aligned and whose first element and length are
multiples of VECTOR are launched apart from the rest, with the kernels' VECTOR constant set: they
then tell Triton so (tl.multiple_of), which turns the loads and stores into 16-byte vector accesses
(without the hints every element is a 4-byte access through its own 64-bit address, and the
registers those take leave room for one program per SM); other items (odd shapes, shards cut at odd
offsets) take the same kernels with scalar accesses. Each thread holds ELEMENTS_PER_THREAD elements
of each array in MAX_REGISTERS registers, so that several programs share an SM and one program's
reductions and stores overlap the others' loads. The host side waits for nothing: the small
tables go up from pinned memory.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.rounding import cast_rtne
from kernels.tiles import TORCH_TO_TRITON

MAX_ROW_BLOCK = 8192  # longest row held in registers by one program; longer rows loop
ROW_TILE = 2048  # elements per program of whole rows (padded to powers of two): short rows share a program
SEGMENT_BLOCK = 1024  # chunk of the looped paths
ADAMW_BLOCK = 2048
VECTOR = 4  # elements per vector access of an aligned work item
ALIGNMENT = VECTOR * 4  # bytes an aligned work item's arrays start on (VECTOR fp32 elements)
ELEMENTS_PER_THREAD = 8  # of each array: sets num_warps
MAX_WARPS = 32
MAX_REGISTERS = 64  # per thread of the vector variants: four programs of 8 warps per SM (65536 registers)

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
def _item(table, item, addresses, W_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, VECTOR: tl.constexpr):
    """Tensor index, first element, length, slot and the four arrays' base pointers of work items
    (`item` one index or a 1-D block of them: rows of the [n, 4] int64 table). VECTOR > 1 declares
    first and length multiples of VECTOR and the pointers aligned to VECTOR fp32 elements (the plan
    puts only such items in such a launch), which lets Triton emit vector accesses. The loads take
    no mask: a masked scalar load becomes a select, which folds away with its hint."""
    tensor = tl.load(table + item * 4)
    first = tl.load(table + item * 4 + 1)
    length = tl.load(table + item * 4 + 2)
    slot = tl.load(table + item * 4 + 3)
    w = tl.load(addresses + tensor * 4).to(tl.pointer_type(W_DTYPE))
    g = tl.load(addresses + tensor * 4 + 1).to(tl.pointer_type(G_DTYPE))
    m = tl.load(addresses + tensor * 4 + 2).to(tl.pointer_type(tl.float32))
    v = tl.load(addresses + tensor * 4 + 3).to(tl.pointer_type(tl.float32))
    if VECTOR > 1:
        first, length = tl.multiple_of(first, VECTOR), tl.multiple_of(length, VECTOR)
        w, g = tl.multiple_of(w, VECTOR * 4), tl.multiple_of(g, VECTOR * 4)
        m, v = tl.multiple_of(m, VECTOR * 4), tl.multiple_of(v, VECTOR * 4)
    return tensor, first, length, slot, w, g, m, v


@triton.jit
def _step_scalars_of(scalars, tensor):
    """lr, beta1, beta2, eps, bias1, sqrt(bias2), decay of the tensor(s) (a scalar index or a block)."""
    row = scalars + tensor * 7
    return (tl.load(row + 0), tl.load(row + 1), tl.load(row + 2), tl.load(row + 3), tl.load(row + 4),
            tl.load(row + 5), tl.load(row + 6))


@triton.jit
def _sphere_rows_kernel(rows, n_rows, addresses, scalars, dots, norms, ROWS: tl.constexpr, BLOCK: tl.constexpr,
                        W_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, VECTOR: tl.constexpr):
    """ROWS whole rows per program, each held in registers (length <= BLOCK): one read and one
    write of each array. rows: [n_rows, 4] int64 of tensor, first element, length, slot."""
    item = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    valid = item < n_rows  # the last program's padding rows read row 0's entry and write nothing
    tensor, first, length, _, w_ptr, g_ptr, m_ptr, v_ptr = _item(rows, tl.where(valid, item, 0), addresses,
                                                                 W_DTYPE, G_DTYPE, VECTOR)
    tensor, first, length = tensor[:, None], first[:, None], length[:, None]
    w_ptr, g_ptr, m_ptr, v_ptr = w_ptr[:, None], g_ptr[:, None], m_ptr[:, None], v_ptr[:, None]
    lr, beta1, beta2, eps, bias1, bias2_sqrt, _ = _step_scalars_of(scalars, tensor)
    cols = tl.arange(0, BLOCK)[None, :]
    offsets = first + cols
    mask = (cols < length) & valid[:, None]
    w = tl.load(w_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    m = tl.load(m_ptr + offsets, mask=mask, other=0.0)
    v = tl.load(v_ptr + offsets, mask=mask, other=0.0)
    dot = tl.sum(w * g, axis=1)[:, None]
    m, v = _adam_moments(g - dot * w, m, v, beta1, beta2)
    new = tl.where(mask, _adam_update(w, m, v, lr, eps, bias1, bias2_sqrt), 0.0)
    norm = tl.sqrt(tl.where(valid, tl.sum(new * new, axis=1), 1.0))[:, None]  # 1: padding rows
    tl.store(m_ptr + offsets, m, mask=mask)
    tl.store(v_ptr + offsets, v, mask=mask)
    tl.store(w_ptr + offsets, cast_rtne(new / norm, W_DTYPE), mask=mask)


@triton.jit
def _sphere_segments_kernel(rows, n_rows, addresses, scalars, dots, norms, PHASE: tl.constexpr, BLOCK: tl.constexpr,
                            W_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, VECTOR: tl.constexpr):
    """One program per row segment, looping over it in chunks of BLOCK.

    PHASE_ALL: a whole row longer than one block, in three passes (dot; moments and norm; write);
    PHASE_DOT / PHASE_MOMENTS / PHASE_WRITE: one of those passes over a segment of a cut row,
    partial sums added into dots[slot] and norms[slot] (squared norms), which the caller
    all-reduces between the launches.
    """
    tensor, first, length, slot, w_ptr, g_ptr, m_ptr, v_ptr = _item(rows, tl.program_id(0).to(tl.int64),
                                                                    addresses, W_DTYPE, G_DTYPE, VECTOR)
    w_ptr, g_ptr, m_ptr, v_ptr = w_ptr + first, g_ptr + first, m_ptr + first, v_ptr + first
    lr, beta1, beta2, eps, bias1, bias2_sqrt, _ = _step_scalars_of(scalars, tensor)
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
def _adamw_kernel(chunks, n_chunks, addresses, scalars, dots, norms, BLOCK: tl.constexpr, W_DTYPE: tl.constexpr,
                  G_DTYPE: tl.constexpr, VECTOR: tl.constexpr):
    """One program per chunk (chunks: [n, 4] int64 of tensor, first element, length <= BLOCK, unused)."""
    tensor, first, length, _, w_ptr, g_ptr, m_ptr, v_ptr = _item(chunks, tl.program_id(0).to(tl.int64),
                                                                 addresses, W_DTYPE, G_DTYPE, VECTOR)
    lr, beta1, beta2, eps, bias1, bias2_sqrt, decay = _step_scalars_of(scalars, tensor)
    cols = tl.arange(0, BLOCK)
    offsets = first + cols
    mask = cols < length
    w = tl.load(w_ptr + offsets, mask=mask).to(tl.float32)
    g = tl.load(g_ptr + offsets, mask=mask).to(tl.float32)
    m = tl.load(m_ptr + offsets, mask=mask)
    v = tl.load(v_ptr + offsets, mask=mask)
    m, v = _adam_moments(g, m, v, beta1, beta2)
    tl.store(m_ptr + offsets, m, mask=mask)
    tl.store(v_ptr + offsets, v, mask=mask)
    tl.store(w_ptr + offsets, cast_rtne(_adam_update(w * decay, m, v, lr, eps, bias1, bias2_sqrt), W_DTYPE),
             mask=mask)


class FusedSphereStep:
    """Launch plan for one optimizer: static work tables, rebuilt only when its tensors change.

    `step(sphere, adamw, geometry)` takes (param, grad, state, group) tuples (state holding fp32
    exp_avg/exp_avg_sq, `step` already incremented) and the RowGeometry of the sphere tensors.
    Nothing in a step waits for the device: the step scalars go up from pinned memory.
    """

    def __init__(self):
        self._key = None
        self._launches: list[_Launch] = []
        self._pointers: list | None = None
        self._addresses: torch.Tensor | None = None

    @property
    def launches(self) -> list[_Launch]:
        """The launches of the last step in the order they ran (the benchmark times each one)."""
        return sorted(self._launches, key=lambda launch: launch.phase)

    def step(self, sphere: list, adamw: list, geometry) -> None:
        items = sphere + adamw
        device = items[0][0].device if items else geometry.device
        pointers = [(p.data_ptr(), g.data_ptr(), s["exp_avg"].data_ptr(), s["exp_avg_sq"].data_ptr())
                    for p, g, s, _ in items]
        aligned = [not (w | g | m | v) % ALIGNMENT for w, g, m, v in pointers]
        key = (id(geometry), len(sphere), tuple((id(p), p.numel(), p.dtype, g.dtype) for p, g, _, _ in items), aligned)
        if key != self._key:
            self._launches = _plan(sphere, adamw, geometry, aligned, device)
            self._key = key
        if pointers != self._pointers:
            self._addresses = _upload(pointers or [(0, 0, 0, 0)], torch.int64, device)
            self._pointers = pointers
        scalars = _upload(_scalar_table(items), torch.float32, device)
        split = geometry.reduces
        dots = torch.zeros(geometry.total_rows, dtype=torch.float32, device=device) if split else scalars
        norms = torch.zeros_like(dots) if split else scalars  # unused without cut rows
        for phase in (PHASE_ALL, PHASE_DOT, PHASE_MOMENTS, PHASE_WRITE):
            for launch in self._launches:
                if launch.phase == phase:
                    launch.kernel[launch.grid](launch.table, launch.table.shape[0], self._addresses, scalars, dots,
                                               norms, **launch.constants)
            # Every rank joins both all-reduces, whether it holds cut rows or not.
            if split and phase == PHASE_DOT:
                geometry.reduce_(dots)
            if split and phase == PHASE_MOMENTS:
                geometry.reduce_(norms)


class _Launch:
    """One kernel launch of a step: its phase, grid, work table and compile-time constants."""

    def __init__(self, phase: int, kernel, table: torch.Tensor, items_per_program: int, block: int, **constants):
        self.phase, self.kernel, self.table = phase, kernel, table
        self.grid = (triton.cdiv(table.shape[0], items_per_program),)
        tile = items_per_program * block
        warps = min(MAX_WARPS, max(1, tile // (32 * ELEMENTS_PER_THREAD)))
        # Scalar accesses take a 64-bit address per element: more registers than the budget.
        registers = {"maxnreg": MAX_REGISTERS} if constants["VECTOR"] > 1 else {}
        self.constants = {**constants, "BLOCK": block, "num_warps": warps, **registers}

    @property
    def elements(self) -> int:
        """How many parameter elements the launch's items span (reads the table back: for reports)."""
        return int(self.table[:, 2].sum())


def _plan(sphere: list, adamw: list, geometry, aligned: list[bool], device: torch.device) -> list[_Launch]:
    """Every launch of a step. Work items are grouped by kernel variant: path and block, dtypes,
    and whether the item may take vector accesses (its tensor's four arrays ALIGNMENT-aligned,
    its first element and length multiples of VECTOR)."""
    groups: dict[tuple, list] = {}

    def add(path: str, block: int, param: torch.Tensor, grad: torch.Tensor, table: torch.Tensor, index: int):
        dtypes = (TORCH_TO_TRITON[param.dtype], TORCH_TO_TRITON[grad.dtype])
        vector = aligned[index] & (table[:, 1] % VECTOR == 0) & (table[:, 2] % VECTOR == 0)
        for flag in (True, False):
            groups.setdefault((path, block, *dtypes, VECTOR if flag else 1), []).append(table[vector == flag])

    for index, (param, grad, _, _) in enumerate(sphere):
        rows, is_whole = _row_segments(index, param, geometry)
        length = geometry.slice_of(param).row_length
        if length <= MAX_ROW_BLOCK:
            add("rows", triton.next_power_of_2(length), param, grad, rows[is_whole], index)
        else:
            add("long", SEGMENT_BLOCK, param, grad, rows[is_whole], index)
        add("cut", SEGMENT_BLOCK, param, grad, rows[~is_whole], index)
    for index, (param, grad, _, _) in enumerate(adamw, start=len(sphere)):
        first = torch.arange(0, param.numel(), ADAMW_BLOCK, dtype=torch.int64)
        length = (param.numel() - first).clamp(max=ADAMW_BLOCK)
        add("adamw", ADAMW_BLOCK, param, grad, torch.stack([torch.full_like(first, index), first, length,
                                                             torch.zeros_like(first)], dim=1), index)
    launches = []
    for (path, block, w_dtype, g_dtype, vector), tables in groups.items():
        table = torch.cat(tables)
        if not table.shape[0]:
            continue
        table = table.to(device)
        dtypes = {"W_DTYPE": w_dtype, "G_DTYPE": g_dtype, "VECTOR": vector}
        if path == "rows":
            rows = max(1, ROW_TILE // block)
            launches.append(_Launch(PHASE_ALL, _sphere_rows_kernel, table, rows, block, ROWS=rows, **dtypes))
        elif path == "adamw":
            launches.append(_Launch(PHASE_ALL, _adamw_kernel, table, 1, block, **dtypes))
        else:
            for phase in ((PHASE_ALL,) if path == "long" else (PHASE_DOT, PHASE_MOMENTS, PHASE_WRITE)):
                launches.append(_Launch(phase, _sphere_segments_kernel, table, 1, block, PHASE=phase, **dtypes))
    # The largest launch first: the host's work on the others then overlaps the device's.
    return sorted(launches, key=lambda launch: -launch.table.shape[0] * launch.constants["BLOCK"])


def _upload(rows: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small host table on the device without a synchronisation: a copy from pinned memory, which
    torch's host allocator keeps until the copy has run."""
    if device.type != "cuda":
        return torch.tensor(rows, dtype=dtype, device=device)
    return torch.tensor(rows, dtype=dtype, pin_memory=True).to(device, non_blocking=True)


def _scalar_table(items: list) -> list[list[float]]:
    """The step scalars of every tensor, computed once per (param group, step tensor): the tensors
    of a group usually share them."""
    rows, known = [], {}
    for _, _, state, group in items:
        key = (id(group), id(state["step"]))
        if key not in known:
            known[key] = _step_scalars(float(state["step"]), group)
        rows.append(known[key])
    return rows


def _step_scalars(step: float, group: dict) -> list[float]:
    beta1, beta2 = group["betas"]
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
