"""`mvideo demo`: the whole stack end to end on the sample footage, on this machine."""
from __future__ import annotations

import collections
import logging
import pathlib
import time

from megatron_video.config import ConfigError
from megatron_video.config.schema import RootConfig

DEFAULT_RECIPE = "demo"
log = logging.getLogger("mvideo.demo")


def run(cfg: RootConfig) -> int:
    from curator.run import curate
    from megatron_video.data.catalog import load_catalog
    from megatron_video.demo.fidelity import sample_fidelity, training_windows
    from megatron_video.demo.grid import dataset_grid, fidelity_strip, video_strip
    from megatron_video.demo.report import write_report
    from megatron_video.inference.sample import sample_videos
    from megatron_video.training.environment import resolve_device
    from megatron_video.training.trainer import train

    if not pathlib.Path(cfg.curate.input).is_dir():
        raise ConfigError("curate.input", f"'{cfg.curate.input}' does not exist: run `make samples` first")
    out_dir = pathlib.Path(cfg.run.output_dir)
    timings: dict[str, float] = {}

    started = time.perf_counter()
    curation = curate(cfg.curate, progress=cfg.run.progress)
    catalog = load_catalog(cfg.curate.output)
    per_source = collections.Counter(pathlib.Path(s).name for s in catalog["source"])
    dataset_grid(cfg.curate.output, out_dir / "dataset_grid.png")
    timings["curate (probe, decode, shots, clip, resize, encode, shard)"] = time.perf_counter() - started
    log.info("curated %d clips from %s", curation.clips_written, dict(per_source))

    started = time.perf_counter()
    training = train(cfg)
    timings[f"train ({training.steps - training.start_step} steps)"] = time.perf_counter() - started

    started = time.perf_counter()
    samples = sample_videos(cfg)
    video_strip(samples[0], out_dir / "sample_strip.png")
    timings[f"sample ({len(samples)} videos, {cfg.sample.steps} steps)"] = time.perf_counter() - started

    started = time.perf_counter()
    windows = training_windows(cfg.data, seed=cfg.run.seed)
    fidelity = [sample_fidelity(path, prompt, windows) for path, prompt in zip(samples, cfg.sample.prompts)]
    fidelity_strip(fidelity, out_dir / "fidelity_strip.png")
    timings["fidelity (PSNR against the training clips)"] = time.perf_counter() - started
    report = write_report(out_dir, timings, curation, training, samples, len(catalog), per_source,
                          resolve_device(cfg.run.device), fidelity)
    first, last = training.loss_drop()
    log.info("demo done in %.0f s: loss %.4f -> %.4f; report %s", sum(timings.values()), first, last, report)
    print(report.read_text())
    return 0
