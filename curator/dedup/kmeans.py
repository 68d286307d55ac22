"""Mini-batch k-means in torch (any device) after Summer-22B's Algorithm 1.

1. Initial centres by Bradley-Fayyad refinement of k-means++ over subsamples (kmeans_init.py).
2. Mini-batch steps (Sculley 2010) with count-weighted updates: each centre is the running mean of
   every point ever assigned to it, c <- c + (S - m c) / N, with S and m the batch's sum and count
   for it and N its total count (a per-centre learning rate of 1/N).
3. Full passes (Lloyd steps over the data in chunks of chunk_size: exact means, cheap on a GPU)
   until the inertia stops falling, so the result matches a full-batch solver's quality.
4. Every `maintain_every` steps (and after every pass), the assignment counts since the last check
   are inspected: a dead cluster (in the mini-batch steps: under dead_ratio of the largest one's
   points; in the passes: none) is reseeded far from all the other centres by a greedy k-means++
   step; an oversized cluster (more than split_factor times the mean share) is split along its
   principal axis into itself and the slot of the smallest cluster, whose points go to their
   next-nearest centres. Reseeded and split centres restart their counts.

metric "l2" clusters by squared Euclidean distance; "cosine" is spherical k-means (points and
centres on the unit sphere; the inertia is then the sum of 1 - cos).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from curator.dedup.kmeans_init import bradley_fayyad, cluster_sums, greedy_seed, seed_trials, squared_distances
from megatron_video.config import require

METRICS = ("l2", "cosine")


@dataclass
class KMeansConfig:
    clusters: int = 50
    metric: str = "l2"
    batch_size: int = 16384  # points per mini-batch step
    chunk_size: int = 131072  # points per matmul in full passes, at most 2^28 / clusters
    minibatch_steps: int = 20
    max_passes: int = 30
    tol: float = 1e-4  # a pass that lowers the inertia by less than this fraction ends the fit
    init_subsamples: int = 10
    # 0: half the points, at most 50,000 and 5e7 / (init_subsamples k) (memory), at least k
    init_subsample_size: int = 0
    init_iterations: int = 10
    maintain_every: int = 5
    reseed_dead: bool = True
    # In the mini-batch steps a cluster is dead below this share of the largest one's points (as
    # scikit-learn's MiniBatchKMeans reassignment_ratio); in the full passes only when empty.
    dead_ratio: float = 0.01
    split_factor: float = 4.0  # 0: never split
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.clusters >= 1, "clusters", "must be >= 1")
        require(self.metric in METRICS, "metric", f"must be one of {METRICS}")
        require(self.batch_size >= 1 and self.chunk_size >= 1, "batch_size", "batch_size and chunk_size must be >= 1")
        require(self.minibatch_steps >= 0 and self.max_passes >= 0, "max_passes",
                "minibatch_steps and max_passes must be >= 0")
        require(self.init_subsamples >= 1, "init_subsamples", "must be >= 1")
        require(self.maintain_every >= 1, "maintain_every", "must be >= 1")
        require(self.split_factor == 0 or self.split_factor > 1, "split_factor", "must be 0 (off) or > 1")


@dataclass
class KMeansResult:
    centroids: torch.Tensor  # [k, d]
    labels: torch.Tensor  # [n]
    distances: torch.Tensor  # [n] each point's distance to its centre under the metric
    inertia: float
    reseeded: int  # dead clusters reseeded
    splits: int  # oversized clusters split
    passes: int


def chunk_rows(cfg: KMeansConfig) -> int:
    """Points per distance matmul: chunk_size, fewer where chunk x clusters would pass 2^28 floats."""
    return max(1, min(cfg.chunk_size, 2 ** 28 // cfg.clusters))


def prepare(x: torch.Tensor, metric: str) -> torch.Tensor:
    x = x.float()
    return torch.nn.functional.normalize(x, dim=1) if metric == "cosine" else x


def nearest(x: torch.Tensor, centroids: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each point's nearest centre and squared distance to it, chunk points at a time."""
    labels, distances = [], []
    for part in x.split(chunk):
        d, i = squared_distances(part, (part * part).sum(1), centroids).min(1)
        labels.append(i)
        distances.append(d)
    return torch.cat(labels), torch.cat(distances)


def metric_distance(squared: torch.Tensor, metric: str) -> torch.Tensor:
    """The metric's distance from the squared Euclidean one (unit vectors: |a - b|^2 = 2 - 2 cos)."""
    return squared / 2 if metric == "cosine" else squared


class _Fit:
    """One fit's state: centres, running counts, assignment counts since the last check."""

    def __init__(self, x: torch.Tensor, cfg: KMeansConfig, centroids: torch.Tensor):
        self.x, self.cfg = x, cfg
        self.spherical = cfg.metric == "cosine"
        self.centroids = centroids.clone()
        k = centroids.shape[0]
        self.counts = torch.zeros(k, device=x.device)
        self.window = torch.zeros(k, device=x.device)
        self.generator = torch.Generator(device=x.device).manual_seed(cfg.seed + 1)
        self.reseeded = self.splits = 0

    def sample(self) -> torch.Tensor:
        n = self.x.shape[0]
        if n <= self.cfg.batch_size:
            return self.x
        return self.x[torch.randint(n, (self.cfg.batch_size,), generator=self.generator, device=self.x.device)]

    def minibatch_step(self) -> None:
        batch = self.sample()
        labels = squared_distances(batch, (batch * batch).sum(1), self.centroids).argmin(1)
        sums, m = cluster_sums(batch, labels, self.centroids.shape[0])
        self.counts += m
        self.window += m
        step = (sums - m[:, None] * self.centroids) / self.counts.clamp_min(1)[:, None]
        self._set(self.centroids + step)

    def lloyd_pass(self) -> float:
        """One full Lloyd step over the data; returns the inertia before it (squared distances)."""
        k, dim = self.centroids.shape
        sums = torch.zeros(k, dim, device=self.x.device)
        counts = torch.zeros(k, device=self.x.device)
        inertia = torch.zeros((), device=self.x.device)
        for part in self.x.split(chunk_rows(self.cfg)):
            d, labels = squared_distances(part, (part * part).sum(1), self.centroids).min(1)
            part_sums, part_counts = cluster_sums(part, labels, k)
            sums += part_sums
            counts += part_counts
            inertia += d.sum()
        self.window += counts
        self._set(torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], self.centroids))
        return float(inertia)

    def _set(self, centroids: torch.Tensor) -> None:
        self.centroids = torch.nn.functional.normalize(centroids, dim=1) if self.spherical else centroids

    def maintain(self, dead_ratio: float) -> None:
        """Reseed dead clusters (fewer points than dead_ratio times the largest's; none at all when
        it is 0) and split oversized ones, by the assignment counts since the last check."""
        cfg, window, k = self.cfg, self.window, self.centroids.shape[0]
        dead = window <= dead_ratio * window.max() if cfg.reseed_dead else torch.zeros_like(window, dtype=torch.bool)
        limit = cfg.split_factor * window.sum() / k
        oversized = window > limit if cfg.split_factor else torch.zeros_like(dead)
        self.window = torch.zeros_like(window)
        if k < 2 or not bool((dead | oversized).any()):
            return
        sample = self.sample()
        touched = dead.clone()
        for j in dead.nonzero().flatten().tolist():
            self._reseed_far(j, sample)
        largest_first = window.masked_fill(~oversized, -1).argsort(descending=True)[:int(oversized.sum())]
        for j in largest_first.tolist():
            slots = window.masked_fill(touched | oversized, float("inf"))
            free = int(slots.argmin())
            if math.isinf(float(slots[free])):
                break
            if self._split(j, free, sample):
                touched[[j, free]] = True

    def _reseed_far(self, j: int, sample: torch.Tensor) -> None:
        """Move centre j far from all the other centres: a greedy k-means++ step over the sample
        (the candidate, drawn by squared distance to the nearest other centre, that lowers the
        sample's inertia most), so an isolated outlier does not capture it."""
        others = torch.cat([self.centroids[:j], self.centroids[j + 1:]])
        sample_sq = (sample * sample).sum(1)
        closest = squared_distances(sample, sample_sq, others).min(1).values
        seed, _ = greedy_seed(sample[None], sample_sq[None], closest[None], seed_trials(self.centroids.shape[0]),
                              self.generator)
        self.centroids[j] = seed[0]
        self.counts[j] = 0
        self.reseeded += 1

    def _split(self, j: int, free: int, sample: torch.Tensor) -> bool:
        """Centres j and free become j's centre plus and minus one standard deviation along the
        principal axis of j's points in the sample (power iteration)."""
        labels = squared_distances(sample, (sample * sample).sum(1), self.centroids).argmin(1)
        members = sample[labels == j]
        if members.shape[0] < 2:
            return False
        centred = members - members.mean(0)
        axis = centred[centred.norm(dim=1).argmax()]
        for _ in range(10):
            axis = centred.T @ (centred @ axis)
            axis = axis / axis.norm().clamp_min(1e-12)
        offset = axis * (centred @ axis).square().mean().sqrt()
        centre = self.centroids[j].clone()
        self.centroids[j], self.centroids[free] = centre + offset, centre - offset
        self._set(self.centroids)
        self.counts[[j, free]] = 0
        self.splits += 1
        return True


def fit_kmeans(x: torch.Tensor, cfg: KMeansConfig, init: torch.Tensor | None = None) -> KMeansResult:
    """Cluster points x [n, d] (n >= cfg.clusters) on x's device; `init` [k, d] skips the
    Bradley-Fayyad initialisation (tests use it to start from a chosen bad state)."""
    x = prepare(x, cfg.metric)
    n, k = x.shape[0], cfg.clusters
    if n < k:
        raise ValueError(f"k-means needs at least as many points ({n}) as clusters ({k})")
    if init is None:
        generator = torch.Generator(device=x.device).manual_seed(cfg.seed)
        size = cfg.init_subsample_size or min(n // 2, 50_000, 50_000_000 // (cfg.init_subsamples * k))
        init = bradley_fayyad(x, k, cfg.init_subsamples, size, cfg.init_iterations, cfg.metric == "cosine",
                              generator)
    fit = _Fit(x, cfg, prepare(init.to(x.device), cfg.metric))
    for step in range(cfg.minibatch_steps):
        fit.minibatch_step()
        if (step + 1) % cfg.maintain_every == 0:
            fit.maintain(cfg.dead_ratio)
    previous, passes = float("inf"), 0
    for passes in range(1, cfg.max_passes + 1):
        inertia = fit.lloyd_pass()
        before = (fit.reseeded, fit.splits)
        fit.maintain(0.0)
        if (fit.reseeded, fit.splits) == before and previous - inertia <= cfg.tol * inertia:
            break
        previous = inertia
    labels, squared = nearest(x, fit.centroids, chunk_rows(cfg))
    distances = metric_distance(squared, cfg.metric)
    return KMeansResult(fit.centroids, labels, distances, float(distances.sum()), fit.reseeded, fit.splits, passes)
