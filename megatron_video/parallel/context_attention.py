"""Context-parallel attention without Transformer Engine: Ulysses, ring, and their hybrid (USP).

Each context-parallel (CP) rank holds one contiguous shard of the joint sequence. Three ways to let
every query see every key, over groups that megatron-core's parallel_state owns:

- Ulysses: an all-to-all over the CP group trades the sequence split for a head split, so each rank
  runs ordinary (fused, fastest-kernel) attention over the whole sequence for heads/CP heads, and a
  second all-to-all trades back. Needs CP to divide the local heads; carries the factorised ST-DiT
  attention unchanged, as each rank sees whole frames and whole time lines.
- Ring: K/V blocks travel around the CP group by P2P while each rank merges per-block results with
  an online softmax (running log-sum-exp); the backward sends the K/V blocks round again with their
  dK/dV accumulators, which arrive back at their owner after a full turn. Any CP size.
- USP: Ulysses inside megatron's hierarchical CP sub-groups of contiguous ranks, a ring across them.

The ring computes each block with plain matmuls in float32 (the blocks are CP times smaller than
the sequence), which runs on CPU and GPU alike; the fused kernels serve Ulysses and the local
attention. Key masks are never communicated: every rank knows the whole mask, and indexes the block
a K/V shard came from.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

# -- all-to-all between a sequence split and a head split --------------------------------------


def _all_to_all(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    x = x.contiguous()  # before empty_like, which would copy a view's permuted strides
    out = torch.empty_like(x)
    dist.all_to_all_single(out, x, group=group)
    return out


def _sequence_to_heads(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """[B, H, L, d] of this rank's tokens -> [B, H/u, u*L, d] of the group's tokens (rank order)."""
    b, h, length, d = x.shape
    u = dist.get_world_size(group)
    parts = x.reshape(b, u, h // u, length, d).transpose(0, 1)  # part j goes to rank j
    received = _all_to_all(parts, group)  # received[j]: rank j's tokens, this rank's heads
    return received.permute(1, 2, 0, 3, 4).reshape(b, h // u, u * length, d)


def _heads_to_sequence(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """The inverse of _sequence_to_heads: [B, H/u, u*L, d] -> [B, H, L, d]."""
    b, hu, total, d = x.shape
    u = dist.get_world_size(group)
    parts = x.reshape(b, hu, u, total // u, d).permute(2, 0, 1, 3, 4)  # part j: rank j's tokens
    received = _all_to_all(parts, group)  # received[j]: this rank's tokens, rank j's heads
    return received.transpose(0, 1).reshape(b, u * hu, total // u, d)


class _Resplit(torch.autograd.Function):
    """The all-to-all from a sequence split to a head split (or back); its backward is the opposite."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup, to_heads: bool) -> torch.Tensor:
        ctx.group, ctx.to_heads = group, to_heads
        return (_sequence_to_heads if to_heads else _heads_to_sequence)(x, group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return (_heads_to_sequence if ctx.to_heads else _sequence_to_heads)(grad, ctx.group), None, None


# -- ring attention ------------------------------------------------------------------------------


def _pass_around(tensors: list[torch.Tensor], group: dist.ProcessGroup) -> list[torch.Tensor]:
    """Send `tensors` to the next rank of the ring and receive the previous rank's."""
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    send = torch.cat([t.reshape(-1) for t in tensors])
    recv = torch.empty_like(send)
    to, frm = dist.get_global_rank(group, (rank + 1) % size), dist.get_global_rank(group, (rank - 1) % size)
    if dist.get_backend(group) == "nccl":  # NCCL needs the pair issued together to not deadlock
        requests = dist.batch_isend_irecv([dist.P2POp(dist.isend, send, to, group),
                                           dist.P2POp(dist.irecv, recv, frm, group)])
    else:  # gloo: plain point-to-point (its batched P2P is unreliable)
        requests = [dist.isend(send, to, group=group), dist.irecv(recv, frm, group=group)]
    for request in requests:
        request.wait()
    return [part.view_as(t) for part, t in zip(recv.split([t.numel() for t in tensors]), tensors, strict=True)]


def _scores(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    return scores


def _finite(lse: torch.Tensor) -> torch.Tensor:
    # A row whose keys are all masked in a block has lse = -inf: exp(s - 0) with s = -inf gives 0.
    return torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)


class _RingAttention(torch.autograd.Function):
    """softmax(q k^T * scale) v with K/V sharded over `group`; `masks[j]` [B, Lk] belongs to rank j's keys."""

    @staticmethod
    def forward(ctx, q, k, v, masks, group):
        rank, size = dist.get_rank(group), dist.get_world_size(group)
        scale = q.shape[-1] ** -0.5
        out = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        lse = torch.full(q.shape[:-1], float("-inf"), dtype=torch.float32, device=q.device)
        block_k, block_v = k, v
        for step in range(size):
            source = (rank - step) % size
            scores = _scores(q, block_k, None if masks is None else masks[source], scale)
            block_lse = torch.logsumexp(scores, dim=-1)
            block_out = torch.matmul(torch.exp(scores - _finite(block_lse)[..., None]), block_v.float())
            merged = _finite(torch.logaddexp(lse, block_lse))
            out = out * torch.exp(lse - merged)[..., None] + block_out * torch.exp(block_lse - merged)[..., None]
            lse = torch.logaddexp(lse, block_lse)
            if step + 1 < size:
                block_k, block_v = _pass_around([block_k, block_v], group)
        ctx.save_for_backward(q, k, v, out, lse, masks if masks is not None else torch.empty(0))
        ctx.group, ctx.scale, ctx.has_masks = group, scale, masks is not None
        return out.to(q.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, masks = ctx.saved_tensors
        group, scale = ctx.group, ctx.scale
        rank, size = dist.get_rank(group), dist.get_world_size(group)
        grad_out = grad_out.float()
        delta = (grad_out * out).sum(dim=-1, keepdim=True)  # rowsum(dO * O)
        grad_q = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        block_k, block_v = k, v
        grad_k = torch.zeros(k.shape, dtype=torch.float32, device=k.device)
        grad_v = torch.zeros(v.shape, dtype=torch.float32, device=v.device)
        for step in range(size):
            source = (rank - step) % size
            probs = torch.exp(_scores(q, block_k, masks[source] if ctx.has_masks else None, scale)
                              - _finite(lse)[..., None])
            grad_v = grad_v + torch.matmul(probs.transpose(-1, -2), grad_out)
            grad_scores = probs * (torch.matmul(grad_out, block_v.float().transpose(-1, -2)) - delta)
            grad_q = grad_q + torch.matmul(grad_scores, block_k.float()) * scale
            grad_k = grad_k + torch.matmul(grad_scores.transpose(-1, -2), q.float()) * scale
            # The accumulators travel with their block; after `size` passes they are home.
            block_k, block_v, grad_k, grad_v = _pass_around([block_k, block_v, grad_k, grad_v], group)
        return grad_q.to(q.dtype), grad_k.to(k.dtype), grad_v.to(v.dtype), None, None


# -- one forward's view of the context-parallel split ----------------------------------------------


@dataclass
class ContextParallelGroups:
    """The process groups one model's attention runs over (taken from parallel_state once, at build).

    mode: ulysses | ring | usp | te. For usp, `ulysses_group` holds contiguous CP ranks and
    `ring_group` the ranks at the same place of each; for ulysses the former is the whole CP group,
    for ring the latter.
    """

    mode: str
    group: dist.ProcessGroup
    ulysses_group: dist.ProcessGroup | None
    ring_group: dist.ProcessGroup | None

    @property
    def size(self) -> int:
        return dist.get_world_size(self.group)

    @property
    def rank(self) -> int:
        return dist.get_rank(self.group)


@dataclass
class ContextShard:
    """This rank's part of one forward's joint sequence, and how its attention reaches the rest.

    `full` is the sequence description of the whole padded sequence (JointSequence: key mask,
    text length, grid), as a rank sees it after the Ulysses all-to-all.
    """

    groups: ContextParallelGroups
    full: Any
    length: int  # tokens per CP rank

    @property
    def start(self) -> int:
        return self.groups.rank * self.length

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               local_attention: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], torch.Tensor],
               factorised: bool) -> torch.Tensor:
        """Attention of this rank's queries q [B, H, L, d] over the whole sequence's keys."""
        groups = self.groups
        if getattr(self.full, "pack", None) is not None and (groups.mode == "te" or groups.ring_group is not None):
            raise ValueError("packed sequences (data.packing) attend within each sample: built for "
                             "parallel.context_mode=ulysses only, not ring, usp or te")
        if groups.mode == "te":  # TE's DotProductAttention communicates over the CP group itself
            if self.full.key_mask is not None:
                raise ValueError("TE's context-parallel attention takes padding masks only in the THD layout, "
                                 "not built here: use parallel.context_mode ulysses, ring or usp for masked "
                                 "or padded sequences")
            return local_attention(q, k, v, self.local_view())
        if groups.ulysses_group is not None:
            q, k, v = (_Resplit.apply(t, groups.ulysses_group, True) for t in (q, k, v))
        if groups.ring_group is None:
            out = local_attention(q, k, v, self.full)
        else:
            if factorised:
                raise ValueError("the factorised ST-DiT attention needs context_mode=ulysses")
            out = _RingAttention.apply(q, k, v, self._ring_masks(q.shape[2]), groups.ring_group)
        if groups.ulysses_group is not None:
            out = _Resplit.apply(out, groups.ulysses_group, False)
        return out

    def _ring_masks(self, block: int) -> torch.Tensor | None:
        """[ring size, B, block]: the key mask of each ring rank's (post-all-to-all) K/V block."""
        mask = self.full.key_mask
        if mask is None:
            return None
        return mask.reshape(mask.shape[0], -1, block).transpose(0, 1)

    def local_view(self) -> Any:
        from dataclasses import replace

        mask = self.full.key_mask
        return replace(self.full, key_mask=None if mask is None else mask[:, self.start:self.start + self.length],
                       context=None)


def context_parallel_groups(mode: str) -> ContextParallelGroups | None:
    """The CP groups for `mode` (ulysses | ring | usp | te) from megatron's parallel_state; None
    when the CP group has one rank (mode "none", or any mode on a single rank)."""
    from megatron.core import parallel_state

    if parallel_state.get_context_parallel_world_size() == 1:
        return None
    group = parallel_state.get_context_parallel_group()
    if mode == "usp":
        ulysses_group, ring_group = parallel_state.get_hierarchical_context_parallel_groups()
        return ContextParallelGroups(mode, group, ulysses_group, ring_group)
    by_mode = {"ulysses": (group, None), "ring": (None, group), "te": (None, None)}
    if mode not in by_mode:
        raise ValueError(f"context-parallel mode {mode!r} on {dist.get_world_size(group)} CP ranks: "
                         f"pass the Layout's resolved mode (ulysses, ring, usp or te)")
    return ContextParallelGroups(mode, group, *by_mode[mode])
