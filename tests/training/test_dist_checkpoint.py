"""Distributed checkpoints on gloo (megatron-core dist_checkpointing): a run killed by SIGKILL in the
middle of an asynchronous save resumes from the previous complete checkpoint and repeats an
uninterrupted run exactly, under DP2 with the distributed optimizer and under PP2; a TP2xPP2
checkpoint loads at TP1 and at DP2 with equal outputs and goes on training. The resharding check
runs on NCCL too (4 GPUs), in float32 with the math attention kernel (the fused kernels' backward
accumulates with atomics) and TF32 off, so only the layouts' summation orders differ."""
import os
import shutil

import pytest
import torch
from torch.multiprocessing import ProcessExitedException

from megatron_video.parallel.state import destroy_distributed
from megatron_video.testing import leaks
from megatron_video.testing.distributed import requires_gpus, run_distributed

LAYOUTS = {
    "dp2_dist_opt": ["parallel.distributed_optimizer=true"],
    "pp2": ["parallel.pipeline=2", "parallel.microbatches=2"],
}


# Float32 and a deterministic attention kernel on GPUs: the same equalities as on gloo can then hold.
DEVICE_OVERRIDES = {"cpu": ["run.device=cpu"],
                    "cuda": ["run.device=cuda", "train.precision=fp32", "model.attention_backend=math"]}
# How close two layouts' losses and outputs are: float32 on both; on GPUs cuBLAS picks its own
# reduction order per GEMM shape, and a TP shard is another shape.
TOLERANCE = {"cpu": 1e-5, "cuda": 1e-4}


def run_config(shard_root: str, run_dir: str, *extra: str, device: str = "cpu"):
    from megatron_video.config.loader import load_config

    return load_config("demo", [
        f"run.output_dir={run_dir}", f"data.shards={shard_root}", "train.steps=4", "optim.warmup_steps=1",
        "train.val_every=1000", "train.checkpoint_every=2", "train.val_batches=1", "train.tensorboard=false",
        "data.num_workers=0", "data.val_fraction=0.25", "data.frames=4", "data.batch_size=2", "run.progress=false",
        *DEVICE_OVERRIDES[device], "checkpoint.keep_last=5", *extra])


def _train_in_layout(cfg):
    """Train `cfg` in its own layout (the launch's process groups stay, megatron's are rebuilt)."""
    from megatron.core import parallel_state

    from megatron_video.training.trainer import Trainer

    parallel_state.destroy_model_parallel()
    return Trainer(cfg)


def _crash_during_async_save(shard_root: str, run_dir: str, layout: list[str]) -> None:
    from megatron_video.testing.crash import kill_during_async_save

    kill_during_async_save(4)
    _train_in_layout(run_config(shard_root, run_dir, "checkpoint.async_save=true", *layout)).train()


def _resume_and_straight(shard_root: str, tmp: str) -> dict:
    results = {}
    for name, layout in LAYOUTS.items():
        resumed = _train_in_layout(run_config(shard_root, f"{tmp}/{name}/crashed", "checkpoint.async_save=true",
                                              *layout)).train()
        straight = _train_in_layout(run_config(shard_root, f"{tmp}/{name}/straight", "checkpoint.async_save=true",
                                               *layout)).train()
        results[name] = {"resumed": resumed.losses, "start": resumed.start_step, "straight": straight.losses}
    return results


@pytest.mark.slow
def test_a_run_killed_during_an_async_save_resumes_exactly(shard_root, tmp_path):
    for name, layout in LAYOUTS.items():
        run_dir = tmp_path / name / "crashed"
        with pytest.raises(ProcessExitedException) as killed:
            run_distributed(_crash_during_async_save, 2, str(shard_root), str(run_dir), layout)
        assert killed.value.signal_name == "SIGKILL"
        # The interrupted save is there but invisible; the previous one is the latest.
        names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
        assert names == ["ckpt_0000002", "ckpt_0000004.partial"], names
        # Nothing the killed ranks started outlives them (megatron's async-writer queue server).
        assert leaks.wait_for_orphans(os.environ[leaks.MARK], grace_s=30) == {}
    results = run_distributed(_resume_and_straight, 2, str(shard_root), str(tmp_path))
    for rank in results:
        for name in LAYOUTS:
            assert rank[name]["start"] == 2
            assert rank[name]["resumed"] == rank[name]["straight"], name
            assert len(rank[name]["straight"]) == 4
    for name in LAYOUTS:
        assert not (tmp_path / name / "crashed" / "checkpoints" / "ckpt_0000004.partial").exists()
        assert (tmp_path / name / "crashed" / "checkpoints" / "ckpt_0000004" / "metadata.json").exists()


# -- resharding -------------------------------------------------------------------------------
RESHARD = ["train.val_every=2", "parallel.microbatches=2"]
SOURCE = ["parallel.tensor=2", "parallel.pipeline=2"]


def _train_source(shard_root: str, run_dir: str, device: str) -> dict:
    """TP2xPP2: stop at step 2 (validated, checkpointed), then go on to step 4 from that checkpoint."""
    first = _train_in_layout(run_config(shard_root, run_dir, *RESHARD, *SOURCE, "train.stop_after=2",
                                        device=device)).train()
    rest = _train_in_layout(run_config(shard_root, run_dir, *RESHARD, *SOURCE, device=device)).train()
    return {"val2": first.val_loss, "losses": rest.losses, "val4": rest.val_loss}


def _probe(trainer) -> torch.Tensor:
    """The whole model's output on a fixed input (on the CPU)."""
    cfg, device = trainer.cfg.model, trainer.device
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(1, cfg.in_channels, 2, 4, 4, generator=generator).to(device)
    text = torch.randn(1, 4, cfg.text_dim, generator=generator).to(device)
    mask = torch.ones(1, 4, dtype=torch.bool, device=device)
    with torch.no_grad():
        return trainer.parts.model.eval()(x, torch.tensor([0.3], device=device), text, mask).cpu()


def _load_and_continue(shard_root: str, run_dir: str, layout: list[str], device: str) -> dict:
    trainer = _train_in_layout(run_config(shard_root, run_dir, *RESHARD, *layout, device=device))
    found = trainer.resume()
    val2, output = trainer.validate(), _probe(trainer)
    for chunk in trainer.chunks:
        chunk.train()
    summary = trainer.train()
    return {"resumed_from": found.name, "val2": val2, "output": output, "losses": summary.losses,
            "val4": summary.val_loss, "step": trainer.step}


def _refused_then_loaded(shard_root: str, run_dir: str, layout: list[str], device: str) -> dict:
    """Asked to resume with the other optimizer kind, the run refuses, naming the key; then loads."""
    from megatron_video.config.errors import ConfigError

    try:
        _train_in_layout(run_config(shard_root, run_dir, *RESHARD, "parallel.distributed_optimizer=true",
                                    device=device)).resume()
        refused = None
    except ConfigError as err:
        refused = err.key
    return {"refused": refused, **_load_and_continue(shard_root, run_dir, layout, device)}


def check_reshards(shard_root, tmp_path, device: str) -> None:
    source = run_distributed(_train_source, 4, str(shard_root), str(tmp_path / "source"), device,
                             device=device)[-1]  # the last stage
    for target in ("tp1", "dp2"):
        shutil.copytree(tmp_path / "source" / "checkpoints" / "ckpt_0000002", tmp_path / target / "checkpoints" /
                        "ckpt_0000002")
    if device == "cpu":  # in this process: one spawn fewer
        try:
            tp1 = _load_and_continue(str(shard_root), str(tmp_path / "tp1"), [], device)
        finally:
            destroy_distributed()
    else:
        (tp1,) = run_distributed(_load_and_continue, 1, str(shard_root), str(tmp_path / "tp1"), [], device,
                                 device=device)
    rel = TOLERANCE[device]
    assert tp1["resumed_from"] == "ckpt_0000002" and tp1["step"] == 4
    assert tp1["val2"] == pytest.approx(source["val2"], rel=rel)
    # The optimizer's moments came along: the steps after the checkpoint repeat the source run's.
    assert tp1["losses"] == pytest.approx(source["losses"], rel=rel)
    assert tp1["val4"] == pytest.approx(source["val4"], rel=rel)
    dp2 = run_distributed(_refused_then_loaded, 2, str(shard_root), str(tmp_path / "dp2"), ["parallel.microbatches=1"],
                          device, device=device)
    for rank in dp2:
        assert rank["refused"] == "parallel.distributed_optimizer"
        torch.testing.assert_close(rank["output"], tp1["output"], rtol=rel / 10, atol=rel / 10)
        assert rank["step"] == 4 and all(torch.isfinite(torch.tensor(rank["losses"])))
    assert (tmp_path / "dp2" / "checkpoints" / "ckpt_0000004" / "metadata.json").exists()


@pytest.mark.slow
def test_a_tp2_pp2_checkpoint_loads_at_tp1_and_at_dp2(shard_root, tmp_path):
    check_reshards(shard_root, tmp_path, "cpu")


@pytest.mark.gpu
@requires_gpus(4)
def test_a_tp2_pp2_checkpoint_loads_at_tp1_and_at_dp2_nccl(shard_root, tmp_path):
    check_reshards(shard_root, tmp_path, "cuda")
