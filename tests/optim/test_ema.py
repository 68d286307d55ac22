"""Post-hoc EMA against its closed form on synthetic series; reading streams one snapshot at a time;
the sweep picks the best exponent."""
import itertools

import pytest
import torch

from megatron_video.optim.ema import EmaConfig, Snapshot, posthoc_ema, sigma_rel, sweep, write_sweep


def _trajectory(step: int) -> dict:
    return {"w": torch.tensor([float(step), 2.0 * step + 1.0]), "count": torch.tensor(step)}


def _series(models: dict) -> list[Snapshot]:
    return [Snapshot(step, lambda model=model: model) for step, model in models.items()]


def test_each_checkpoint_gets_the_power_profile_mass_of_its_interval():
    steps = [10, 25, 40, 70, 100]
    series = _series({s: _trajectory(s) for s in reversed(steps)})  # order must not matter
    for gamma in (0.5, 4.0, 16.0):
        result = posthoc_ema(series, gamma)
        bounds = [0] + steps
        masses = [(b / 100) ** (gamma + 1) - (a / 100) ** (gamma + 1) for a, b in itertools.pairwise(bounds)]
        assert sum(masses) == pytest.approx(1.0)
        expected = sum(m * _trajectory(s)["w"].double() for m, s in zip(masses, steps))
        assert torch.allclose(result["w"].double(), expected, atol=1e-5)
        # Float tensors keep their dtype; integer buffers are the newest snapshot's.
        assert result["w"].dtype == torch.float32 and result["count"].item() == 100


def test_dense_snapshots_approach_the_continuous_average():
    gamma, last = 3.0, 400
    value = posthoc_ema(_series({s: {"w": torch.tensor([float(s)])} for s in range(4, last + 1, 4)}), gamma)["w"].item()
    # E[tau] under (gamma+1) tau^gamma / T^(gamma+1) on (0, T] is T (gamma+1)/(gamma+2); each
    # interval is attributed to its right end, a bias of at most one interval (4 steps).
    assert last * (gamma + 1) / (gamma + 2) < value < last * (gamma + 1) / (gamma + 2) + 4


def test_the_series_is_streamed_through_one_buffer():
    """As `mvideo ema` reads it: every read overwrites the same model tensors, so the average must
    consume a snapshot before the next read."""
    buffer = {"w": torch.zeros(3)}
    reads = []

    def reader(step: int):
        def read() -> dict:
            reads.append(step)
            buffer["w"].fill_(float(step))
            return buffer
        return read

    steps = [20, 40, 60, 80]
    result = posthoc_ema([Snapshot(s, reader(s)) for s in steps], 2.0)
    expected = sum(((b / 80) ** 3 - (a / 80) ** 3) * b for a, b in itertools.pairwise([0, *steps]))
    assert reads == steps
    assert torch.allclose(result["w"].double(), torch.full((3,), expected, dtype=torch.float64), atol=1e-5)
    assert result["w"].data_ptr() != buffer["w"].data_ptr()


def test_sweep_picks_the_exponent_with_the_lowest_validation_loss(tmp_path):
    series = _series({s: _trajectory(s) for s in range(10, 101, 10)})
    target = posthoc_ema(series, 6.94)["w"]
    points, best = sweep(series, [1.0, 6.94, 30.0], lambda state: float((state["w"] - target).abs().sum()))
    assert [p.gamma for p in points] == [1.0, 6.94, 30.0]
    assert min(points, key=lambda p: p.val_loss).gamma == 6.94
    assert torch.equal(best["w"], target)
    table, plot = write_sweep(points, tmp_path / "ema")
    assert table.read_text().count("\n") == 4 and plot.stat().st_size > 1000
    assert sigma_rel(6.94) == pytest.approx(0.10, abs=2e-3)  # Karras et al.'s pairing
    with pytest.raises(ValueError):
        EmaConfig(gammas=[-1.0])
