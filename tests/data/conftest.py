"""VP9 shards with a catalog, which DALI's CPU video decoder reads (it has no H.264): real footage,
clips of several lengths, and two clips a DALI pipeline must never see (a truncated one whose
header still opens, and bytes that are no video at all)."""
import json
import pathlib

import av
import numpy as np
import pandas as pd
import pytest
import webdataset as wds

from megatron_video.testing.clips import encode_clip

VP9_LENGTHS = (12, 14, 16, 18, 20, 13, 15, 17, 19, 12)  # frames of each good clip, 5 per shard


@pytest.fixture(scope="session")
def vp9_root(tmp_path_factory, samples_dir) -> pathlib.Path:
    """A curated-output layout (shards/ + catalog/) of 10 VP9 clips of Megamind, 64 x 112."""
    with av.open(str(samples_dir / "Megamind.avi")) as container:
        footage = [f.to_ndarray(format="rgb24", width=112, height=64)
                   for _, f in zip(range(sum(VP9_LENGTHS)), container.decode(video=0))]
    root = tmp_path_factory.mktemp("vp9")
    (root / "shards").mkdir()
    (root / "catalog").mkdir()
    start = 0
    for shard in range(2):
        name = f"shard-{shard:06d}.tar"
        rows = []
        with wds.TarWriter(str(root / "shards" / name)) as sink:
            for number in range(shard * 5, shard * 5 + 5):
                length = VP9_LENGTHS[number]
                key = f"megamind_{start:06d}"
                # faststart: a cut-off copy still opens, so only the demux check catches the truncated one
                data = encode_clip(np.stack(footage[start:start + length]), fps=12, faststart=True)
                start += length
                row = {"key": key, "shard": name, "num_frames": length, "caption": f"clip number {number}"}
                sink.write({"__key__": key, "mp4": data, "json": json.dumps(row).encode()})
                rows.append(row)
                if shard == 1 and number == 5:
                    broken = {"truncated_000000": data[:len(data) * 2 // 3], "garbage_000000": b"\x00not a video"}
                    for bad_key, bad in broken.items():
                        rows.append({**row, "key": bad_key, "caption": "broken"})
                        sink.write({"__key__": bad_key, "mp4": bad, "json": json.dumps(rows[-1]).encode()})
        pd.DataFrame(rows).to_parquet(root / "catalog" / f"shard-{shard:06d}.parquet", index=False)
    return root
