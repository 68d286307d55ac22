"""The loaders through the trainer: `data.filter` decides what trains (DALI and CPU loader), and a
DALI-fed run stopped and resumed from its checkpoint (DALI's reader checkpoint inside) repeats an
uninterrupted one exactly."""
import pandas as pd
import pytest

from megatron_video.config.loader import load_config
from megatron_video.parallel.state import destroy_distributed
from megatron_video.training import trainer as trainer_module
from megatron_video.training.trainer import train

FILTER = "num_frames >= 16"


def _config(root, run_dir, steps: int, loader: str, *extra: str):
    return load_config("demo", [
        f"run.output_dir={run_dir}", f"data.shards={root}", f"train.steps={steps}", f"data.loader={loader}",
        f"data.filter='{FILTER}'", "optim.warmup_steps=1", "train.val_every=1000", "train.checkpoint_every=1000",
        "train.val_batches=1", "train.tensorboard=false", "data.num_workers=1", "data.val_fraction=0.3",
        "data.frames=4", "data.batch_size=4", "run.progress=false", *extra])


@pytest.fixture(autouse=True)
def _fresh_process_groups():
    yield
    destroy_distributed()


@pytest.fixture
def trained_captions(monkeypatch) -> list[str]:
    """The captions of every clip the trainer's steps encode (its loader's batches, as trained)."""
    seen: list[str] = []
    condition = trainer_module.condition_batch

    def recording(parts, batch, device, drop):
        seen.extend(batch["caption"])
        return condition(parts, batch, device, drop)

    monkeypatch.setattr(trainer_module, "condition_batch", recording)
    return seen


def _selected_captions(root) -> tuple[set[str], set[str]]:
    catalog = pd.concat([pd.read_parquet(p) for p in sorted((root / "catalog").glob("*.parquet"))])
    return set(catalog[catalog["num_frames"] >= 16]["caption"]), set(catalog["caption"])


def test_a_dali_run_trains_the_selection_and_resumes_exactly(vp9_root, tmp_path, trained_captions):
    straight = train(_config(vp9_root, tmp_path / "straight", 5, "dali"))
    selected, every = _selected_captions(vp9_root)
    assert len(trained_captions) == 20 and set(trained_captions) <= selected < every
    destroy_distributed()
    train(_config(vp9_root, tmp_path / "resumed", 5, "dali", "train.stop_after=2"))
    destroy_distributed()
    resumed = train(_config(vp9_root, tmp_path / "resumed", 5, "dali"))
    assert resumed.start_step == 2
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-6, abs=0)


def test_the_cpu_loader_trains_the_selection(vp9_root, tmp_path, trained_captions):
    train(_config(vp9_root, tmp_path / "cpu", 3, "cpu", "data.num_workers=0"))
    selected, every = _selected_captions(vp9_root)
    assert len(trained_captions) == 12 and set(trained_captions) <= selected < every
