"""HEBO over layer-wise LR multipliers: a second, longer run reuses the saved observations."""
import math

from megatron_video.optim.hpo import HpoConfig, load_trials, run_hpo


def _objective(calls):
    def objective(multipliers, trial):
        calls.append(trial)
        # Best at attn x2, mlp x0.5: a bowl in log2 space.
        return (math.log2(multipliers["*attn*"]) - 1) ** 2 + (math.log2(multipliers["*mlp*"]) + 1) ** 2
    return objective


def test_search_resumes_from_saved_observations(tmp_path):
    first_calls, second_calls = [], []
    short = HpoConfig(iterations=3, initial_random=2, patterns=["*attn*", "*mlp*"])
    first = run_hpo(_objective(first_calls), short, tmp_path)
    assert first_calls == [0, 1, 2] and len(first) == 3
    saved = load_trials(tmp_path, short)
    assert [t.multipliers for t in saved] == [t.multipliers for t in first]

    longer = HpoConfig(iterations=5, initial_random=2, patterns=["*attn*", "*mlp*"])
    second = run_hpo(_objective(second_calls), longer, tmp_path)
    assert second_calls == [3, 4]  # only the missing trials ran
    assert [t.multipliers for t in second[:3]] == [t.multipliers for t in first]
    assert len(load_trials(tmp_path, longer)) == 5
    assert all(2 ** -3 <= m <= 2 ** 3 for t in second for m in t.multipliers.values())
    assert (tmp_path / "results.md").read_text().count("\n") == 2 + 5
    assert (tmp_path / "convergence.png").stat().st_size > 1000
