"""SphereAdamW against independent float64 equations and torch.optim.AdamW; row sums over shards."""
import itertools

import torch

from megatron_video.optim.rows import RowGeometry, RowSlice
from megatron_video.optim.sphere_adamw import SphereAdamW

LR, BETAS, EPS = 3e-2, (0.9, 0.95), 1e-8


def reference_sphere_adamw(weights, grads_per_step, lr, betas, eps):
    """The equations of Summer-22B 4.3 in float64, row by row."""
    w = [x.double().clone() for x in weights]
    m = [torch.zeros_like(x) for x in w]
    v = [torch.zeros_like(x) for x in w]
    for t, grads in enumerate(grads_per_step, start=1):
        for k, g in enumerate(grads):
            g = g.double()
            for i in range(w[k].shape[0]):
                row = w[k][i]
                gi = g[i] - torch.dot(row, g[i]) * row
                m[k][i] = betas[0] * m[k][i] + (1 - betas[0]) * gi
                v[k][i] = betas[1] * v[k][i] + (1 - betas[1]) * gi * gi
                m_hat = m[k][i] / (1 - betas[0] ** t)
                v_hat = v[k][i] / (1 - betas[1] ** t)
                new = row - lr * m_hat / (v_hat.sqrt() + eps)
                w[k][i] = new / new.norm()
    return w


def test_update_matches_float64_equations_over_100_steps():
    gen = torch.Generator().manual_seed(0)
    shapes = [(8, 16), (5, 7)]
    start = [torch.randn(s, generator=gen) for s in shapes]
    start = [x / x.norm(dim=1, keepdim=True) for x in start]
    grads = [[torch.randn(s, generator=gen) * (1 + 10 * (t % 3)) for s in shapes] for t in range(100)]
    params = [torch.nn.Parameter(x.clone()) for x in start]
    opt = SphereAdamW([{"params": params, "sphere": True}], lr=LR, betas=BETAS, eps=EPS)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()
    expected = reference_sphere_adamw(start, grads, LR, BETAS, EPS)
    for p, e in zip(params, expected):
        assert (p.detach().double() - e).abs().max() < 1e-6
        assert (p.detach().norm(dim=1) - 1).abs().max() < 1e-6


def test_unconstrained_groups_follow_torch_adamw():
    gen = torch.Generator().manual_seed(1)
    start = [torch.randn(6, 4, generator=gen), torch.randn(6, generator=gen)]
    ours = [torch.nn.Parameter(x.clone()) for x in start]
    theirs = [torch.nn.Parameter(x.clone()) for x in start]
    opt = SphereAdamW([{"params": ours, "sphere": False}], lr=LR, betas=BETAS, eps=EPS, weight_decay=0.1)
    ref = torch.optim.AdamW(theirs, lr=LR, betas=BETAS, eps=EPS, weight_decay=0.1, foreach=False)
    for _ in range(100):
        grads = [torch.randn(x.shape, generator=gen) for x in start]
        for a, b, g in zip(ours, theirs, grads):
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        assert (a - b).abs().max() < 1e-6
    assert (ours[0] - start[0]).abs().max() > 0.5  # it did move


def test_each_param_group_steps_with_its_own_hyperparameters():
    """Two sphere and two AdamW groups in one optimizer, each with its own LR, betas or weight decay,
    against the float64 equations and torch.optim.AdamW run per group."""
    gen = torch.Generator().manual_seed(4)
    sphere_settings = [{"lr": 3e-2, "betas": (0.9, 0.95)}, {"lr": 1e-3, "betas": (0.5, 0.9)}]
    adamw_settings = [{"lr": 3e-2, "weight_decay": 0.0}, {"lr": 1e-2, "weight_decay": 0.3}]
    sphere_start = [torch.randn(4, 6, generator=gen) for _ in sphere_settings]
    sphere_start = [x / x.norm(dim=1, keepdim=True) for x in sphere_start]
    adamw_start = [torch.randn(5, generator=gen) for _ in adamw_settings]
    sphere_params = [torch.nn.Parameter(x.clone()) for x in sphere_start]
    adamw_params = [torch.nn.Parameter(x.clone()) for x in adamw_start]
    opt = SphereAdamW([{"params": [p], "sphere": True, **kw} for p, kw in zip(sphere_params, sphere_settings)]
                      + [{"params": [p], **kw} for p, kw in zip(adamw_params, adamw_settings)], betas=BETAS, eps=EPS)
    theirs = [torch.nn.Parameter(x.clone()) for x in adamw_start]
    refs = [torch.optim.AdamW([p], betas=BETAS, eps=EPS, foreach=False, **kw) for p, kw in zip(theirs, adamw_settings)]
    sphere_grads = []
    for _ in range(20):
        sphere_grads.append([torch.randn(x.shape, generator=gen) for x in sphere_start])
        adamw_grads = [torch.randn(x.shape, generator=gen) for x in adamw_start]
        for p, g in zip(sphere_params, sphere_grads[-1]):
            p.grad = g.clone()
        for a, b, g in zip(adamw_params, theirs, adamw_grads):
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        for ref in refs:
            ref.step()
    for k, (param, kw) in enumerate(zip(sphere_params, sphere_settings)):
        [expected] = reference_sphere_adamw([sphere_start[k]], [g[k:k + 1] for g in sphere_grads], eps=EPS, **kw)
        assert (param.detach().double() - expected).abs().max() < 1e-6
    for a, b in zip(adamw_params, theirs):
        assert (a - b).abs().max() < 1e-6


def test_row_totals_complete_rows_cut_by_shard_boundaries():
    gen = torch.Generator().manual_seed(2)
    matrix = torch.randn(5, 7, generator=gen)
    flat = matrix.view(-1)
    cuts = [0, 10, 23, 35]  # boundaries inside rows 1, 3 and at the end
    pieces = [flat[a:b].clone() for a, b in itertools.pairwise(cuts)]
    slices = {id(piece): RowSlice(7, start, slot=3) for piece, start in zip(pieces, cuts)}
    geometry = RowGeometry(slices, total_rows=3 + 5, tensor_parallel_rows=0, device=torch.device("cpu"))
    totals = geometry.row_totals([(piece, piece) for piece in pieces])
    expected = matrix.sum(dim=1).repeat_interleave(7)
    assert torch.allclose(torch.cat(totals), expected, atol=1e-6)
