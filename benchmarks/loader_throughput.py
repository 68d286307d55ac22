"""loader_throughput: training clips/s through the DALI loader vs the CPU loader vs what training
consumes, 352 x 640 x 81 clips, one GPU.

Both loaders read the same WebDataset shards of H.264 clips (24 fps, longer than the window, so each
sample seeks to a random start) and yield the training contract: float [B, 3, 81, 352, 640] in
[-1, 1]. The process is confined to `--cores` CPU cores (sched_setaffinity; DALI's threads and the
CPU loader's workers inherit it) and the CPU time all of them used is measured beside the wall time.

Consumption: clips/s one GPU trains on the 1B preset at the Wan2.2 latent of such a clip
(48 x 21 x 22 x 40 -> 4,620 video tokens + 512 text tokens), from the measured time of one bf16
forward + backward of one sample (benchmarks/dit_step.py's step; the optimizer step and VAE encode,
which only slow training down further, left out); without a GPU it is stated from `--train-tflops`
and the model FLOPs formula. ratio = DALI clips/s / consumed clips/s; target 3.

`--quick` runs here on the CPU: small VP9 clips (DALI's CPU decoder has no H.264) through DALI's CPU
pipeline and the CPU loader, consumption stated; it checks the script, not the claim.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time
from dataclasses import replace

import numpy as np
import psutil
import torch
import webdataset as wds

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.common import write_result
from curator.video.synthetic import shot_frames
from megatron_video.config.run import DataConfig
from megatron_video.data.dataset import build_loader
from megatron_video.data.loaders import build_train_loader
from megatron_video.model import load_preset, model_flops
from megatron_video.testing.clips import encode_clip

LATENT = (48, 21, 22, 40)  # Wan2.2 VAE (x16 spatial, x4 temporal) of 81 x 352 x 640
TEXT_TOKENS = 512
TRAIN_TFLOPS = 485.6  # the 1B preset's sustained bf16 rate on one H200 (benchmarks/results/dit_step.json)


def write_shards(root: pathlib.Path, clips: int, frames: int, height: int, width: int, codec: str) -> None:
    (root / "shards").mkdir(parents=True)
    per_shard = max(clips // 4, 1)
    for first in range(0, clips, per_shard):
        with wds.TarWriter(str(root / "shards" / f"shard-{first // per_shard:06d}.tar")) as sink:
            for number in range(first, min(first + per_shard, clips)):
                key = f"clip_{number:06d}"
                # Two shots per clip: a cut, motion and texture for the decoder.
                video = np.concatenate([shot_frames(height, width, frames // 2, 2 * number),
                                        shot_frames(height, width, frames - frames // 2, 2 * number + 1)])
                meta = {"key": key, "num_frames": frames, "caption": f"clip {number}"}
                sink.write({"__key__": key, "mp4": encode_clip(video, codec), "json": json.dumps(meta).encode()})


def cpu_seconds() -> float:
    """CPU time of this process and its children (the CPU loader's workers) so far."""
    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def throughput(loader, batches: int, warmup: int, device: torch.device) -> dict:
    """Clips/s over `batches` batches after `warmup`, with the CPU cores they kept busy."""
    iterator = iter(loader)
    for _ in range(warmup):
        next(iterator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    clips, cpu_start, start = 0, cpu_seconds(), time.perf_counter()
    for _ in range(batches):
        batch = next(iterator)
        clips += len(batch["key"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    shape = list(batch["video"].shape)
    return {"clips_per_s": round(clips / wall, 2), "cpu_cores_busy": round((cpu_seconds() - cpu_start) / wall, 2),
            "clips": clips, "wall_s": round(wall, 3), "batch_shape": shape, "dtype": str(batch["video"].dtype)}


def training_consumption(device: torch.device, quick: bool, stated_tflops: float) -> dict:
    """Clips/s one GPU trains on at LATENT: measured where a GPU is, else stated."""
    cfg = load_preset("1b")
    flops = model_flops(cfg, LATENT, TEXT_TOKENS)
    result = {"flops_per_clip": flops, "latent": list(LATENT), "text_tokens": TEXT_TOKENS, "preset": "1b"}
    if device.type == "cuda" and not quick:
        from benchmarks.common import time_call
        from benchmarks.dit_step import training_step
        from megatron_video.model.fp8.settings import Fp8Settings
        from megatron_video.parallel.state import ParallelConfig, init_distributed

        init_distributed(ParallelConfig(), device)
        step, model, _ = training_step("1b", LATENT[1:], torch.bfloat16, device, Fp8Settings("off"))
        seconds = time_call(step, repeats=5, warmup=2, sync=torch.cuda.synchronize)
        del model, step
        torch.cuda.empty_cache()
        return {**result, "step_s": round(seconds, 4), "tflops": round(flops / seconds / 1e12, 1),
                "clips_per_s": round(1.0 / seconds, 2), "source": "measured: one bf16 fwd+bwd of one sample"}
    return {**result, "tflops": stated_tflops, "clips_per_s": round(stated_tflops * 1e12 / flops, 2),
            "source": f"stated: {stated_tflops} TFLOP/s / model_flops"}


def main(argv: list[str] | None = None) -> pathlib.Path:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small VP9 clips on the CPU (smoke test)")
    parser.add_argument("--cores", type=int, default=4, help="CPU cores the loaders may use")
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--clip-frames", type=int, default=120, help="frames of each stored clip (24 fps)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--train-tflops", type=float, default=TRAIN_TFLOPS)
    parser.add_argument("--results-dir", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    if args.quick:
        height, width, frames, clip_frames, codec, batches = 64, 112, 8, 16, "libvpx-vp9", 4
        args.clips = min(args.clips, 8)
    else:
        height, width, frames, clip_frames, codec, batches = 352, 640, 81, args.clip_frames, "libx264", args.batches
    consumption = training_consumption(device, args.quick, args.train_tflops)
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        write_shards(root, args.clips, clip_frames, height, width, codec)  # on every core, before the limit
        cores = sorted(os.sched_getaffinity(0))[:args.cores]
        os.sched_setaffinity(0, cores)
        torch.set_num_threads(len(cores))
        cfg = DataConfig(shards=str(root), frames=frames, height=height, width=width, batch_size=args.batch_size,
                         num_workers=len(cores), shuffle_buffer=args.clips, val_fraction=0.0)
        dali = throughput(build_train_loader(replace(cfg, loader="dali"), device, seed=0), batches, warmup=2,
                          device=device)
        # Warm-up: one batch from each worker (each is a spawned process that imports torch first).
        cpu = throughput(build_loader(cfg, "train", seed=0, repeat=True), max(batches // 2, len(cores)),
                         warmup=len(cores), device=torch.device("cpu"))
    ratio = dali["clips_per_s"] / consumption["clips_per_s"]
    metrics = {"dali": dali, "dali_decode": "mixed (NVDEC)" if device.type == "cuda" else "cpu",
               "clip": [frames, height, width], "stored_clip_frames": clip_frames, "codec": codec,
               "cores": len(cores), "batch_size": args.batch_size, "dali_over_cpu_loader":
               round(dali["clips_per_s"] / cpu["clips_per_s"], 2), "quick": args.quick}
    baseline = {"cpu_loader": cpu, "training_consumption": consumption}
    return write_result("loader_throughput", metrics, baseline, ratio, target=3.0, results_dir=args.results_dir)


if __name__ == "__main__":
    main()
