"""Per-row sums of weight matrices whose rows may be split across ranks.

Sphere AdamW needs two per-row quantities each step, <w_i, g_i> and ||w_i||^2. A row can be split
two ways:
- tensor parallelism: a row-parallel weight holds a slice of every row on each TP rank;
- the distributed optimizer: each DP rank updates one contiguous range of the flat gradient
  buffer, and a range boundary may fall inside a row.

Choice for the second case: every rank adds the partial sums of the rows it holds into a flat buffer
with one slot per row of every constrained matrix, and the buffer is all-reduced over the
distributed optimizer's DP group; a row cut by a shard boundary thus receives both halves. The
alternative, aligning shard boundaries to rows, would mean changing megatron's buffer layout (its
padding rules and bucket sizes); the buffer costs one float per row (1/fan_in of the parameters)
and two small all-reduces per step. Rows of row-parallel weights sit first in the buffer so that one
contiguous slice of it is then all-reduced over the TP group.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class RowSlice:
    """Where a (possibly sharded) tensor's elements sit among the rows of its local matrix."""

    row_length: int
    first_element: int  # offset of the tensor's first element in the row-major local matrix
    slot: int  # position of the matrix's row 0 in the flat row buffer


class RowGeometry:
    """Maps each constrained tensor the optimizer updates to rows, and completes row sums."""

    def __init__(self, slices: dict[int, RowSlice], total_rows: int, tensor_parallel_rows: int,
                 device: torch.device, data_parallel_group: dist.ProcessGroup | None = None,
                 tensor_parallel_group: dist.ProcessGroup | None = None):
        self.slices = slices  # keyed by id() of the tensor the inner optimizer holds
        self.total_rows = total_rows
        self.tensor_parallel_rows = tensor_parallel_rows
        self.device = device
        self.data_parallel_group = data_parallel_group
        self.tensor_parallel_group = tensor_parallel_group

    @classmethod
    def for_whole_matrices(cls, tensors: list[torch.Tensor]) -> RowGeometry:
        """Each tensor is a complete local 2-D matrix and nothing is reduced (single process)."""
        slices, slot = {}, 0
        for tensor in tensors:
            if tensor.dim() != 2:
                raise ValueError(f"a sphere-constrained tensor of shape {tuple(tensor.shape)} is not a "
                                 "matrix; sharded tensors need a RowGeometry from the builder")
            slices[id(tensor)] = RowSlice(tensor.shape[1], 0, slot)
            slot += tensor.shape[0]
        device = tensors[0].device if tensors else torch.device("cpu")
        return cls(slices, slot, 0, device)

    @property
    def reduced_tensor_parallel_rows(self) -> int:
        """How many leading slots are completed over the TP group (0 without TP)."""
        tp = self.tensor_parallel_group
        return self.tensor_parallel_rows if tp is not None and dist.get_world_size(tp) > 1 else 0

    @property
    def reduces(self) -> bool:
        """Whether row sums are all-reduced at all (a DP-sharded optimizer or TP-split rows)."""
        dp = self.data_parallel_group
        return bool(self.reduced_tensor_parallel_rows) or (dp is not None and dist.get_world_size(dp) > 1)

    def slice_of(self, tensor: torch.Tensor) -> RowSlice:
        piece = self.slices.get(id(tensor))
        if piece is None:  # other ranks would wait in the all-reduce: fail loudly instead
            raise ValueError(f"a sphere-constrained tensor of shape {tuple(tensor.shape)} has no row "
                             "slice: the optimizer's row geometry was built for other tensors")
        return piece

    def row_totals(self, items: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        """For each (tensor, x) with x the tensor's elements as a flat fp32 vector: the sum of x
        over each element's full row (across all ranks), broadcast back to x's elements."""
        buffer = torch.zeros(self.total_rows, dtype=torch.float32, device=self.device)
        spans = []
        for tensor, x in items:
            piece = self.slice_of(tensor)
            length = piece.row_length
            lead = piece.first_element % length
            first_row = piece.slot + piece.first_element // length
            rows = -(-(lead + x.numel()) // length)
            if lead == 0 and x.numel() == rows * length:
                sums = x.view(rows, length).sum(dim=1)
            else:  # a shard that starts or ends inside a row: pad to whole rows
                padded = x.new_zeros(rows * length)
                padded[lead:lead + x.numel()] = x
                sums = padded.view(rows, length).sum(dim=1)
            buffer[first_row:first_row + rows] += sums
            spans.append((first_row, rows, lead, x.numel(), length))
        self.reduce_(buffer)
        return [buffer[first:first + rows].repeat_interleave(length)[lead:lead + n]
                for first, rows, lead, n, length in spans]

    def reduce_(self, buffer: torch.Tensor) -> None:
        """Complete per-slot partial sums [total_rows] in place: over the DP group, then the
        TP-split rows over the TP group."""
        dp = self.data_parallel_group
        if dp is not None and dist.get_world_size(dp) > 1:
            dist.all_reduce(buffer, group=dp)
        if self.reduced_tensor_parallel_rows:
            dist.all_reduce(buffer[:self.tensor_parallel_rows], group=self.tensor_parallel_group)
