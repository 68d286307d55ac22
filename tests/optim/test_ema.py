"""Post-hoc EMA against its closed form on synthetic snapshot series; the sweep picks the best."""
import itertools

import pytest
import torch

from megatron_video.optim.ema import (
    EmaConfig,
    posthoc_ema,
    sigma_rel,
    sweep,
    write_sweep,
)


def _trajectory(step: int) -> dict:
    return {"w": torch.tensor([float(step), 2.0 * step + 1.0]), "count": torch.tensor(step)}


def test_raw_snapshots_get_the_power_profile_mass_of_their_interval(write_snapshots):
    steps = [10, 25, 40, 70, 100]
    paths = write_snapshots({s: _trajectory(s) for s in reversed(steps)})  # order must not matter
    for gamma in (0.5, 4.0, 16.0):
        result = posthoc_ema(paths, None, gamma)
        bounds = [0] + steps
        masses = [(b / 100) ** (gamma + 1) - (a / 100) ** (gamma + 1) for a, b in itertools.pairwise(bounds)]
        expected = sum(m * _trajectory(s)["w"].double() for m, s in zip(masses, steps))
        assert torch.allclose(result["w"].double(), expected, atol=1e-5)
        assert result["w"].dtype == torch.float32 and result["count"].dtype == torch.int64
    assert torch.equal(posthoc_ema(paths, steps[::-1], 4.0)["w"], posthoc_ema(paths, None, 4.0)["w"])


def test_dense_snapshots_approach_the_continuous_average(write_snapshots):
    gamma, last = 3.0, 400
    paths = write_snapshots({s: {"w": torch.tensor([float(s)])} for s in range(4, last + 1, 4)})
    # E[tau] under (gamma+1) tau^gamma / T^(gamma+1) on (0, T] is T (gamma+1)/(gamma+2); the boxes
    # attribute each interval to its right end, a bias of at most one interval (4 steps).
    value = posthoc_ema(paths, None, gamma)["w"].item()
    assert last * (gamma + 1) / (gamma + 2) < value < last * (gamma + 1) / (gamma + 2) + 4


def test_least_squares_recovers_a_stored_ema_snapshot_exactly(write_snapshots):
    models = {s: _trajectory(s) for s in (20, 50, 80)}
    models[100] = {"w": torch.tensor([123.0, -7.0]), "count": torch.tensor(100)}
    paths = write_snapshots(models, extra={100: {"ema_gamma": 6.94}})
    assert torch.allclose(posthoc_ema(paths, None, 6.94)["w"], torch.tensor([123.0, -7.0]), atol=1e-4)


def test_sweep_picks_the_exponent_with_the_lowest_validation_loss(write_snapshots, tmp_path):
    paths = write_snapshots({s: _trajectory(s) for s in range(10, 101, 10)})
    target = posthoc_ema(paths, None, 6.94)["w"]
    points, best = sweep(paths, [1.0, 6.94, 30.0], lambda state: float((state["w"] - target).abs().sum()))
    assert [p.gamma for p in points] == [1.0, 6.94, 30.0]
    assert min(points, key=lambda p: p.val_loss).gamma == 6.94
    assert torch.equal(best["w"], target)
    table, plot = write_sweep(points, tmp_path / "ema")
    assert table.read_text().count("\n") == 4 and plot.stat().st_size > 1000
    assert sigma_rel(6.94) == pytest.approx(0.10, abs=2e-3)  # Karras et al.'s pairing
    with pytest.raises(ValueError):
        EmaConfig(gammas=[-0.6])


def test_entries_that_are_not_float_tensors_pass_through(tmp_path):
    import torch

    from megatron_video.optim.ema import posthoc_ema

    paths = []
    for step in (10, 20):
        path = tmp_path / f"step_{step:07d}.pt"
        torch.save({"step": step, "model": {"w": torch.full((2,), float(step)), "layer._extra_state": None,
                                            "count": torch.tensor(step)}}, path)
        paths.append(path)
    averaged = posthoc_ema(paths, [10, 20], gamma=6.94)
    assert averaged["layer._extra_state"] is None
    assert averaged["count"].item() == 10
    assert 10.0 < averaged["w"][0].item() <= 20.0
