"""The shards load through megatron-energon: `prepare` (its programmatic form), then a loader that
decodes every clip's video."""
import shutil
from typing import ClassVar

from megatron.energon import (
    Cooker,
    DefaultTaskEncoder,
    WorkerConfig,
    get_loader,
    get_train_dataset,
    stateless,
)
from megatron.energon.flavors.webdataset.prepare import WebdatasetPreparator

DATASET_YAML = "__module__: megatron.energon\n__class__: CrudeWebdataset\nsubflavors: {}\n"


@stateless
def cook_clip(sample):
    video = sample["mp4"].get_frames()
    return {"key": sample["__key__"], "meta": sample["json"], "frames": video.video_clips[0]}


class ClipEncoder(DefaultTaskEncoder):
    cookers: ClassVar[list[Cooker]] = [Cooker(cook_clip)]


def test_energon_prepare_and_load(demo_run, tmp_path):
    summary, output = demo_run
    root = tmp_path / "energon"
    shutil.copytree(output / "shards", root)
    tars = sorted(p.name for p in root.glob("*.tar"))
    parts = WebdatasetPreparator.prepare_dataset(root, tars, split_parts_ratio=[("train", 1.0)], workers=1)
    assert parts == {"mp4", "json"}
    (root / ".nv-meta" / "dataset.yaml").write_text(DATASET_YAML)

    dataset = get_train_dataset(root, worker_config=WorkerConfig(rank=0, world_size=1, num_workers=0),
                                batch_size=None, shuffle_buffer_size=None, max_samples_per_sequence=None,
                                task_encoder=ClipEncoder(), repeat=False)
    keys = []
    for sample in get_loader(dataset):
        frames, meta = sample["frames"], sample["meta"]
        assert frames.shape[0] == meta["num_frames"], sample["key"]
        assert {meta["height"], meta["width"]} <= set(frames.shape[1:]), frames.shape
        keys.append(sample["key"])
    assert len(keys) == summary.clips_written == len(set(keys))
