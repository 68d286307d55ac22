"""Bradley-Fayyad initialisation ("Refining Initial Points for K-Means Clustering", ICML 1998) with
greedy k-means++ as its start point, batched over the subsamples so the GPU runs all of them at once.

Refine(X, k, J): draw J subsamples S_i; cluster each from k-means++ seeds (Lloyd, an empty cluster
moved to the subsample's farthest point) into CM_i; pool the J*k centroids into CM; cluster CM
again from each CM_i into FM_i; return the FM_i of least distortion over CM. Solutions that fit
one subsample's noise fall away: the chosen set is the one that summarises all the subsamples best.
Here the pooled centres are weighted by the points each won in its subsample (weighted Lloyd and
distortion), so a centre that captured a lone outlier does not steer the refinement.
"""
from __future__ import annotations

import math

import torch


def squared_distances(x: torch.Tensor, x_sq: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """||x - c||^2 for points [..., n, d] (their squared norms x_sq [..., n]) against centers
    [..., k, d]: [..., n, k], through one matmul."""
    dots = x @ centers.transpose(-1, -2)
    return (x_sq[..., :, None] - 2 * dots + (centers * centers).sum(-1)[..., None, :]).clamp_min_(0)


def greedy_seed(x: torch.Tensor, x_sq: torch.Tensor, closest: torch.Tensor, trials: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One k-means++ step on J point sets x [J, s, d] whose squared distances to their nearest
    seed are closest [J, s]: of `trials` candidates drawn with probability proportional to D^2
    (far from every seed), the one that lowers the potential most. Returns it [J, d] and the
    updated closest [J, s]."""
    rows = torch.arange(x.shape[0], device=x.device)
    # A tiny floor keeps the draw defined when every point already sits on a seed (duplicates).
    candidates = torch.multinomial(closest + 1e-30, trials, replacement=True, generator=generator)
    points = x[rows[:, None], candidates]
    candidate_closest = torch.minimum(closest[..., None], squared_distances(x, x_sq, points))
    best = candidate_closest.sum(1).argmin(1)
    return points[rows, best], candidate_closest[rows, :, best]


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ seeds [J, k, d] for each of J point sets x [J, s, d]: every new seed is the
    best of 2 + ln k candidates (as scikit-learn does)."""
    sets, size, _ = x.shape
    x_sq = (x * x).sum(-1)
    first = torch.randint(size, (sets,), generator=generator, device=x.device)
    centers = [x[torch.arange(sets, device=x.device), first]]
    closest = squared_distances(x, x_sq, centers[0][:, None]).squeeze(-1)
    for _ in range(1, k):
        seed, closest = greedy_seed(x, x_sq, closest, seed_trials(k), generator)
        centers.append(seed)
    return torch.stack(centers, dim=1)


def seed_trials(k: int) -> int:
    return 2 + int(math.log(k))


def cluster_sums(x: torch.Tensor, labels: torch.Tensor, k: int,
                 weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster sums [..., k, d] of points x [..., n, d] labelled [..., n], and their counts (or
    summed weights) [..., k]: a one-hot matmul, deterministic on GPUs (unlike atomic scatter-adds)."""
    # scatter, not F.one_hot: one_hot validates the labels with a device-to-host copy on GPUs
    one_hot = torch.zeros(*labels.shape, k, dtype=x.dtype, device=x.device).scatter_(-1, labels[..., None], 1.0)
    counts = one_hot.sum(-2) if weights is None else (one_hot * weights[..., None]).sum(-2)
    return one_hot.transpose(-1, -2) @ x, counts


def lloyd_batched(x: torch.Tensor, weights: torch.Tensor, centers: torch.Tensor, iterations: int,
                  spherical: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted Lloyd iterations on J independent problems (points x [J, s, d] of weights [J, s],
    from centers [J, k, d]); an empty cluster moves to the points that add the most distortion,
    in turn. Returns the centres and each problem's weighted distortion [J]."""
    k = centers.shape[1]
    rows = torch.arange(x.shape[0], device=x.device)[:, None]
    x_sq = (x * x).sum(-1)
    for _ in range(iterations):
        nearest, labels = squared_distances(x, x_sq, centers).min(-1)
        sums, counts = cluster_sums(x * weights[..., None], labels, k, weights)
        means = sums / counts.clamp_min(1e-12)[..., None]
        empty = counts == 0
        farthest = (nearest * weights).topk(k, dim=1).indices
        rank = (empty.cumsum(1) - 1).clamp_min(0)
        centers = torch.where(empty[..., None], x[rows, farthest.gather(1, rank)], means)
        if spherical:
            centers = torch.nn.functional.normalize(centers, dim=-1)
    distortion = (squared_distances(x, x_sq, centers).min(-1).values * weights).sum(-1)
    return centers, distortion


def bradley_fayyad(x: torch.Tensor, k: int, subsamples: int, subsample_size: int, iterations: int,
                   spherical: bool, generator: torch.Generator) -> torch.Tensor:
    """k initial centres [k, d] for points x [n, d] (n >= k) by Bradley-Fayyad refinement."""
    n, dim = x.shape
    size = min(n, max(subsample_size, k))
    picks = torch.stack([torch.randperm(n, generator=generator, device=x.device)[:size]
                         for _ in range(subsamples)])
    samples = x[picks]
    ones = torch.ones(samples.shape[:2], device=x.device)
    solutions, _ = lloyd_batched(samples, ones, kmeans_plus_plus(samples, k, generator), iterations, spherical)
    # Each subsample centre stands for the points it won, so the pool is a weighted summary of the
    # data: a centre that won a single outlier barely counts in the distortion that picks the winner.
    labels = squared_distances(samples, (samples * samples).sum(-1), solutions).argmin(-1)
    won = torch.zeros(subsamples, k, device=x.device).scatter_add_(1, labels, ones)
    pool = solutions.reshape(1, subsamples * k, dim).expand(subsamples, -1, -1)
    pool_weights = won.reshape(1, subsamples * k).expand(subsamples, -1)
    refined, distortion = lloyd_batched(pool, pool_weights, solutions, iterations, spherical)
    return refined[distortion.argmin()]
