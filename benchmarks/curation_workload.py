"""What every side of the curation benchmark runs on its inputs, in this process or in one part's
(benchmarks/part_processes.py): the input listing, the untimed warm-up and the bare-decode baseline."""
from __future__ import annotations

import pathlib
from concurrent.futures import ThreadPoolExecutor


def input_videos(inputs: pathlib.Path, rules: dict) -> list[str]:
    """The videos under `inputs` as the pipeline lists them (its extensions, sub-directories
    included, sorted), so the baseline decodes what the pipeline curates, also in a directory of
    the user's (`--inputs`) that holds other files."""
    from curator import storage
    from curator.config import CurateConfig

    return storage.list_videos(str(inputs), CurateConfig(**rules).extensions)


def bare_decode(cfg, sources: list[str]) -> int:
    """The baseline: every frame of `sources` decoded with the pipeline's decoder, nothing else, on
    as many threads as the pipeline decodes at once; returns the frame count."""
    from curator.executors.local import video_threads
    from curator.video.backend import NVDEC, PYAV, decode_range, use_gpu

    decoder = NVDEC if use_gpu(cfg.device) else PYAV  # its inputs are H.264 in MP4, which NVDEC takes

    def decode_all(source: str) -> int:
        return sum(len(c.indices) for c in decode_range(source, decoder, cfg.decode_chunk_frames))

    with ThreadPoolExecutor(video_threads(cfg)) as pool:
        return sum(pool.map(decode_all, sources))


def warm_up(rules: dict, source: str, work: pathlib.Path):
    """One-time start-up (imports, the TransNetV2 weights, the CUDA context and NVDEC initialisation,
    the first file reads), paid untimed: `source` curated alone into a scratch output under `work`,
    then decoded once. Returns that run's config, whose decode settings every timed run shares."""
    from curator.config import CurateConfig
    from curator.run import curate

    inputs = work / "warm_inputs"
    inputs.mkdir(parents=True)
    (inputs / pathlib.Path(source).name).symlink_to(source)
    cfg = CurateConfig(input=str(inputs), output=str(work / "warm_out"), **rules)
    curate(cfg, progress=False)
    bare_decode(cfg, [source])
    return cfg
