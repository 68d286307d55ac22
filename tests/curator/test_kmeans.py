"""The GPU k-means (run here on CPU): blob recovery, dead-cluster reseeding, oversized-cluster
splitting, and inertia against scikit-learn's k-means++ / Lloyd on the same points."""
from __future__ import annotations

import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from curator.dedup.kmeans import KMeansConfig, fit_kmeans
from megatron_video.config import ConfigError


def blobs(centers: torch.Tensor, per_blob: int, std: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    truth = torch.arange(len(centers)).repeat_interleave(per_blob)
    points = centers[truth] + std * torch.randn(len(truth), centers.shape[1], generator=generator)
    return points, truth


def ari(truth: torch.Tensor, labels: torch.Tensor) -> float:
    return adjusted_rand_score(truth.numpy(), labels.numpy())


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_recovers_synthetic_blobs(metric):
    centers = 8 * torch.nn.functional.normalize(torch.randn(8, 16, generator=torch.Generator().manual_seed(1)), dim=1)
    points, truth = blobs(centers, 250, std=1.0)
    result = fit_kmeans(points, KMeansConfig(clusters=8, metric=metric, batch_size=512))
    assert ari(truth, result.labels) >= 0.95
    assert result.distances.shape == (2000,) and result.inertia == pytest.approx(float(result.distances.sum()))
    again = fit_kmeans(points, KMeansConfig(clusters=8, metric=metric, batch_size=512))
    assert torch.equal(result.labels, again.labels)


@pytest.mark.parametrize("minibatch_steps", [10, 0])
def test_dead_cluster_is_reseeded_far_from_the_others(minibatch_steps):
    """One starting centre sits where no point is: left alone it stays empty and two blobs share
    a centre; reseeded (in the mini-batch steps, or in the full passes) every blob gets its own."""
    centers = 10 * torch.eye(6, 12)
    points, truth = blobs(centers, 200, std=0.7)
    init = torch.cat([centers[:5], torch.full((1, 12), 500.0)])
    kept = fit_kmeans(points, KMeansConfig(clusters=6, reseed_dead=False, minibatch_steps=minibatch_steps,
                                           batch_size=256), init=init)
    assert kept.reseeded == 0 and torch.bincount(kept.labels, minlength=6).min() == 0
    assert ari(truth, kept.labels) < 0.9
    revived = fit_kmeans(points, KMeansConfig(clusters=6, minibatch_steps=minibatch_steps, batch_size=256), init=init)
    assert revived.reseeded >= 1 and torch.bincount(revived.labels, minlength=6).min() > 0
    assert ari(truth, revived.labels) >= 0.95


@pytest.mark.parametrize("minibatch_steps", [10, 0])
def test_oversized_cluster_is_split(minibatch_steps):
    """Lloyd stuck with three centres in one blob and one centre on the mean of the other three
    (75% of the points): splitting clusters above 1.5x the mean share gives each blob its own."""
    centers = torch.zeros(4, 8)
    centers[0, 0] = -40
    centers[1, :2] = torch.tensor([0.0, 6.0])
    centers[2, :2] = torch.tensor([5.0, -3.0])
    centers[3, :2] = torch.tensor([-5.0, -3.0])
    points, truth = blobs(centers, 300, std=0.5)
    init = torch.cat([centers[:1] + 0.1 * torch.eye(3, 8), centers[1:].mean(0, keepdim=True)])
    stuck = fit_kmeans(points, KMeansConfig(clusters=4, split_factor=0, minibatch_steps=minibatch_steps,
                                            batch_size=512), init=init)
    assert stuck.splits == 0 and torch.bincount(stuck.labels).max() == 900
    split = fit_kmeans(points, KMeansConfig(clusters=4, split_factor=1.5, minibatch_steps=minibatch_steps,
                                            batch_size=512), init=init)
    assert split.splits >= 2 and ari(truth, split.labels) >= 0.95
    assert torch.bincount(split.labels, minlength=4).max() <= 1.5 * 1200 / 4


@pytest.mark.parametrize("seed", [0, 1])
def test_inertia_within_two_percent_of_scikit_learn(seed):
    """Overlapping blobs of unequal spread (many local optima): same points, k-means++ / Lloyd in
    scikit-learn against Bradley-Fayyad / mini-batch / Lloyd here."""
    generator = torch.Generator().manual_seed(seed)
    centers = 0.6 * torch.randn(20, 32, generator=generator)
    truth = torch.randint(20, (4000,), generator=generator)
    spread = 0.5 + torch.rand(20, 1, generator=generator)
    points = centers[truth] + spread[truth] * torch.randn(4000, 32, generator=generator)
    ours = fit_kmeans(points, KMeansConfig(clusters=20, batch_size=1024, seed=seed))
    reference = KMeans(20, random_state=seed).fit(points.numpy())
    assert ours.inertia <= 1.02 * reference.inertia_


def test_config_refuses_unknown_metric_and_too_few_points():
    with pytest.raises(ConfigError, match="metric"):
        KMeansConfig(metric="dot")
    with pytest.raises(ConfigError, match="split_factor"):
        KMeansConfig(split_factor=0.5)
    with pytest.raises(ValueError, match="at least as many points"):
        fit_kmeans(torch.randn(3, 4), KMeansConfig(clusters=5))


def test_benchmark_quick_mode_writes_a_result(tmp_path):
    """benchmarks/kmeans_vs_sklearn.py --quick: the GPU benchmark's whole path, small, on CPU."""
    import json

    from benchmarks.kmeans_vs_sklearn import main

    path = main(["--quick", "--results-dir", str(tmp_path)])
    result = json.loads(path.read_text())
    assert result["name"] == "kmeans_vs_sklearn" and result["metrics"]["points"] == 4000
    assert result["metrics"]["inertia_ratio"] <= 1.02 and result["ratio"] > 0
    assert result["baseline"]["sklearn_inertia"] > 0


@pytest.mark.gpu
def test_cuda_fit_matches_the_cpu_fit():
    centers = 8 * torch.nn.functional.normalize(torch.randn(8, 16, generator=torch.Generator().manual_seed(1)), dim=1)
    points, truth = blobs(centers, 250, std=1.0)
    cpu = fit_kmeans(points, KMeansConfig(clusters=8, batch_size=512))
    cuda = fit_kmeans(points.cuda(), KMeansConfig(clusters=8, batch_size=512))
    assert cuda.labels.is_cuda and ari(truth, cuda.labels.cpu()) >= 0.95
    assert cuda.inertia == pytest.approx(cpu.inertia, rel=1e-3)
