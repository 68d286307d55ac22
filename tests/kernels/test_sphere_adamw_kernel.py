"""The fused SphereAdamW kernels against the PyTorch reference optimizer (SphereAdamW(fused=False)).

Under TRITON_INTERPRET=1 on CPU: odd shapes, rows longer than one block, bf16 and fp32 parameters,
unconstrained AdamW tensors; and on 2 gloo ranks, rows cut by a distributed-optimizer shard boundary
and rows split over tensor-parallel ranks, 100 steps each.
"""
import itertools

import pytest
import torch

from megatron_video.optim.sphere_adamw import SphereAdamW
from megatron_video.parallel.state import ParallelConfig
from megatron_video.testing.distributed import run_distributed

LR, BETAS, EPS, WD = 2e-2, (0.9, 0.95), 1e-8, 0.1


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def _run_pair(make_params, steps: int, gen: torch.Generator, geometry=None, grad_scale: float = 1.0):
    """The same parameters and gradients through the reference and the fused optimizer."""
    results = []
    start = make_params()
    grads = [[torch.randn(p.shape, generator=gen) * grad_scale * (1 + 5 * (t % 3)) for p, _ in start]
             for t in range(steps)]
    for fused in (False, True):
        params = [(torch.nn.Parameter(p.detach().clone()), sphere) for p, sphere in start]
        groups = [{"params": [p for p, s in params if s], "sphere": True, "lr": LR / 2},
                  {"params": [p for p, s in params if not s], "sphere": False, "weight_decay": WD}]
        opt = SphereAdamW(groups, lr=LR, betas=BETAS, eps=EPS, fused=fused)
        if geometry is not None:
            opt.set_row_geometry(geometry([p for p, s in params if s]))
        for step_grads in grads:
            for (p, _), g in zip(params, step_grads):
                p.grad = g.to(device=p.device, dtype=p.dtype)
            opt.step()
        results.append((params, opt))
    return results


def small_blocks(monkeypatch) -> None:
    """Blocks of a few dozen elements, so that small tensors take every path the real sizes take:
    rows longer than one block (three passes), chunks looped over cut rows, several AdamW chunks."""
    import kernels.sphere_adamw as fused

    monkeypatch.setattr(fused, "MAX_ROW_BLOCK", 64)
    monkeypatch.setattr(fused, "SEGMENT_BLOCK", 32)
    monkeypatch.setattr(fused, "ROW_TILE", 64)
    monkeypatch.setattr(fused, "ADAMW_BLOCK", 64)


def test_fused_step_matches_reference_fp32_and_bf16(seed, monkeypatch):
    """10 steps; rows shorter than, equal to, and longer than one block, of odd lengths."""
    small_blocks(monkeypatch)
    gen = torch.Generator().manual_seed(seed)

    def make_params():
        sphere = [_unit_rows(torch.randn(s, generator=gen)) for s in [(5, 7), (3, 64), (1, 100), (1, 1)]]
        free = [torch.randn(6, 4, generator=gen), torch.randn(5, generator=gen), torch.randn(97, generator=gen)]
        return [(p, True) for p in sphere] + [(p, False) for p in free] + \
            [(sphere[0].bfloat16(), True), (free[0].bfloat16(), False)]

    (ref, _), (fused, opt) = _run_pair(make_params, 10, gen)
    for (a, sphere), (b, _) in zip(ref, fused):
        tol = 1e-5 if a.dtype == torch.float32 else 1e-2  # bf16: a rare 1-ulp rounding flip
        err = (a.detach().float() - b.detach().float()).abs().max().item()
        assert err < tol, f"seed {seed}: {tuple(a.shape)} {a.dtype} differs by {err}"
        if sphere and a.dtype == torch.float32:
            assert (b.detach().norm(dim=1) - 1).abs().max() < 1e-5, f"seed {seed}"
    state = opt.state[fused[0][0]]
    assert float(state["step"]) == 10 and state["exp_avg"].dtype == torch.float32
    assert (fused[4][0].detach() - make_params()[4][0]).abs().max() > 0.05  # it moved (fresh draw differs)


def _distributed_case(seed: int, dp_steps: int, tp_steps: int) -> dict:
    """Rank r of 2 holds (a) its distributed-optimizer shard of one flat buffer of all parameters,
    cut inside rows, and (b) column halves of a row-parallel matrix plus a local column-parallel one."""
    import torch.distributed as dist

    from megatron_video.optim.rows import RowGeometry, RowSlice

    rank, world = dist.get_rank(), dist.get_world_size()
    gen = torch.Generator().manual_seed(seed)
    out = {}

    # (a) DP: matrices (3, 50), (4, 33) and a free vector (40,) in one flat buffer of 322 elements;
    # shard boundary at 161: inside row 2 of the second matrix (150 + 11 = row 0 ends at 183).
    shapes = [(3, 50), (4, 33)]
    full = [_unit_rows(torch.randn(s, generator=gen)) for s in shapes]
    flat = torch.cat([m.reshape(-1) for m in full] + [torch.randn(40, generator=gen)])
    bounds = [0, 161, flat.numel()]
    lo, hi = bounds[rank], bounds[rank + 1]
    offsets = [0, 150, 282, 322]
    pieces = []  # (local tensor, sphere, first element in its matrix, matrix index)
    for index, (a, b) in enumerate(itertools.pairwise(offsets)):
        if max(a, lo) < min(b, hi):
            pieces.append((flat[max(a, lo):min(b, hi)].clone(), index < 2, max(a, lo) - a, index))
    slots = [0, 3]

    def dp_geometry(tensors):
        placed = [(first, m) for _, sphere, first, m in pieces if sphere]
        slices = {id(t): RowSlice(shapes[m][1], first, slots[m]) for t, (first, m) in zip(tensors, placed)}
        return RowGeometry(slices, 7, 0, torch.device("cpu"), data_parallel_group=dist.group.WORLD)

    (ref, _), (fused, _) = _run_pair(lambda: [(p, s) for p, s, _, _ in pieces], dp_steps, gen, dp_geometry)
    out["dp"] = [(a.detach().clone(), b.detach().clone()) for (a, _), (b, _) in zip(ref, fused)]

    # (b) TP: a row-parallel (5, 2 x 9) matrix split by columns (its rows span both ranks) and a
    # column-parallel (4, 6) one held whole; the row-parallel rows take the first slots.
    row_parallel = _unit_rows(torch.randn(5, 18, generator=gen)).chunk(world, dim=1)[rank].contiguous()
    column = _unit_rows(torch.randn(4, 6, generator=gen))

    def tp_geometry(tensors):
        slices = {id(tensors[0]): RowSlice(9, 0, 0), id(tensors[1]): RowSlice(6, 0, 5)}
        return RowGeometry(slices, 9, 5, torch.device("cpu"), tensor_parallel_group=dist.group.WORLD)

    (ref, _), (fused, _) = _run_pair(lambda: [(row_parallel, True), (column, True)], tp_steps, gen, tp_geometry)
    out["tp"] = [(a.detach().clone(), b.detach().clone()) for (a, _), (b, _) in zip(ref, fused)]
    return out


def test_fused_step_matches_reference_on_cut_rows_over_100_steps_gloo(seed):
    """100 steps with a distributed-optimizer shard cut through a row; 20 with TP-split rows."""
    results = run_distributed(_distributed_case, 2, seed, 100, 20, parallel=ParallelConfig())
    for rank, result in enumerate(results):
        for case in ("dp", "tp"):
            for ref, fused in result[case]:
                err = (ref - fused).abs().max().item()
                assert err < 1e-5, f"seed {seed}: rank {rank} {case} {tuple(ref.shape)} differs by {err}"
    # The TP matrix's rows are unit-norm only across both ranks' halves.
    halves = torch.cat([r["tp"][0][1] for r in results], dim=1)
    assert (halves.norm(dim=1) - 1).abs().max() < 1e-5, f"seed {seed}"
    assert (results[0]["tp"][0][1].norm(dim=1) - 1).abs().max() > 1e-2
    # The DP shards put together: the matrices' rows are unit-norm, including row 2 of the second.
    flat = torch.cat([fused.reshape(-1) for r in results for _, fused in r["dp"]])
    assert (flat[:150].view(3, 50).norm(dim=1) - 1).abs().max() < 1e-5, f"seed {seed}"
    assert (flat[150:282].view(4, 33).norm(dim=1) - 1).abs().max() < 1e-5, f"seed {seed}"


def _float64_steps(start, grads):
    """The same steps in float64, vectorised: sphere rows (lr LR / 2) and AdamW (lr LR, decay WD)."""
    ref = []
    for k, (p, sphere) in enumerate(start):
        w = p.detach().double().clone()
        m, v = torch.zeros_like(w), torch.zeros_like(w)
        lr = LR / 2 if sphere else LR
        for t, step_grads in enumerate(grads, start=1):
            g = step_grads[k].to(p.dtype).double().to(w.device)
            if sphere:
                g = g - (w * g).sum(dim=1, keepdim=True) * w
            else:
                w = w * (1 - lr * WD)
            m = BETAS[0] * m + (1 - BETAS[0]) * g
            v = BETAS[1] * v + (1 - BETAS[1]) * g * g
            w = w - lr * (m / (1 - BETAS[0] ** t)) / ((v / (1 - BETAS[1] ** t)).sqrt() + EPS)
            if sphere:
                w = w / w.norm(dim=1, keepdim=True)
        ref.append(w)
    return ref


@pytest.mark.gpu
def test_fused_step_matches_float64_on_gpu_at_1b_row_shapes(seed):
    """Rows of the 1B preset (w_in 1536, w_out 7680) and 16K rows (looped), fp32 and bf16 params,
    rows and a tensor of odd lengths (the scalar-access variants), 10 steps: the fused step and the
    PyTorch one against the float64 equations."""
    gen = torch.Generator().manual_seed(seed)
    start = [(_unit_rows(torch.randn(s, generator=gen)).cuda(), True)
             for s in [(512, 1536), (64, 7680), (8, 16384), (7, 1531)]]
    start += [(torch.randn(1536, 1536, generator=gen).cuda(), False), (torch.randn(1536, generator=gen).cuda(), False),
              (torch.randn(1537, generator=gen).cuda(), False), (start[0][0].bfloat16(), True)]
    grad_gen = torch.Generator().manual_seed(seed + 1)
    grads = [[torch.randn(p.shape, generator=grad_gen) * (1 + 5 * (t % 3)) for p, _ in start] for t in range(10)]
    expected = _float64_steps(start, grads)
    for fused in (False, True):
        params = [(torch.nn.Parameter(p.detach().clone()), sphere) for p, sphere in start]
        opt = SphereAdamW([{"params": [p for p, s in params if s], "sphere": True, "lr": LR / 2},
                           {"params": [p for p, s in params if not s], "sphere": False, "weight_decay": WD}],
                          lr=LR, betas=BETAS, eps=EPS, fused=fused)
        for step_grads in grads:
            for (p, _), g in zip(params, step_grads):
                p.grad = g.to(device=p.device, dtype=p.dtype)
            opt.step()
        for (p, _), want in zip(params, expected):
            tol = 1e-5 if p.dtype == torch.float32 else 2e-2  # bf16 params round every step
            err = (p.detach().double() - want).abs().max().item()
            assert err < tol, f"seed {seed}: fused={fused} {tuple(p.shape)} {p.dtype} differs by {err}"


def test_vector_launches_hold_only_aligned_items_and_every_item_once():
    """The hints of a VECTOR launch are promises: its items start on a multiple of VECTOR, span a
    multiple of it, and belong to tensors whose four arrays are ALIGNMENT-aligned (a view one
    element into its storage is not). Every row, segment and chunk is in exactly one launch."""
    import kernels.sphere_adamw as fused
    from megatron_video.optim.rows import RowGeometry, RowSlice

    def item(param):
        return param, torch.zeros_like(param), {"exp_avg": torch.zeros_like(param),
                                                "exp_avg_sq": torch.zeros_like(param)}, {}

    odd_view = torch.zeros(4 * 64 + 1)[1:].view(4, 64)
    shard = torch.zeros(3 * 48 - 6)  # a shard starting 6 elements into a matrix of rows of 48
    sphere = [item(torch.zeros(3, 64)), item(torch.zeros(2, 7)), item(odd_view), item(shard)]
    adamw = [item(torch.zeros(4097)), item(torch.zeros(5))]
    slices = {id(t): RowSlice(t.shape[-1], 0, slot) for t, slot in [(sphere[0][0], 0), (sphere[1][0], 3),
                                                                   (odd_view, 5)]}
    slices[id(shard)] = RowSlice(48, 6, 9)
    geometry = RowGeometry(slices, 12, 0, torch.device("cpu"))
    items = sphere + adamw
    aligned = [not (p.data_ptr() | g.data_ptr() | s["exp_avg"].data_ptr() | s["exp_avg_sq"].data_ptr())
               % fused.ALIGNMENT for p, g, s, _ in items]
    assert aligned == [True, True, False, True, True, True]
    launches = fused._plan(sphere, adamw, geometry, aligned, torch.device("cpu"))
    covered = [0] * len(items)
    for launch in launches:
        table = launch.table
        if launch.constants["VECTOR"] > 1:
            assert all(aligned[t] for t in table[:, 0].tolist())
            assert (table[:, 1] % fused.VECTOR == 0).all() and (table[:, 2] % fused.VECTOR == 0).all()
        if launch.constants.get("PHASE", fused.PHASE_DOT) in (fused.PHASE_ALL, fused.PHASE_DOT):
            for tensor, length in table[:, [0, 2]].tolist():  # one count per item: the first launch of its path
                covered[tensor] += length
    assert covered == [p.numel() for p, *_ in items]
    vector_kinds = {(launch.kernel.fn.__name__, launch.constants["VECTOR"]) for launch in launches}
    assert ("_sphere_rows_kernel", 1) in vector_kinds and ("_sphere_rows_kernel", fused.VECTOR) in vector_kinds
    assert ("_adamw_kernel", 1) in vector_kinds and ("_adamw_kernel", fused.VECTOR) in vector_kinds
    assert {launch.constants.get("PHASE") for launch in launches} >= {fused.PHASE_DOT, fused.PHASE_WRITE}
