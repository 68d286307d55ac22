"""Packed rows under tensor, sequence, context and pipeline parallelism equal one process.

One 2-rank launch rebuilds megatron's groups for each layout: TP=2 with sequence parallelism
(per-row modulation of each rank's rows) and CP=2 Ulysses (each rank attends whole rows for its
heads) give the single process's output and every gradient; CP=2 ring refuses packed rows by
naming parallel.context_mode instead of attending across samples. PP=2 runs two packed
microbatches through megatron's 1F1B schedule (training.step, megatron DDP) and gives the one
process's loss and reduced gradients.
"""
import pytest
import torch

from megatron_video.model import VideoDiTConfig, build_model, gather_canonical_grads, shard_canonical_state
from megatron_video.model.packing import pack_samples
from megatron_video.parallel.state import ParallelConfig
from megatron_video.testing.distributed import run_distributed
from megatron_video.testing.weights import exercised_state

ATOL, RTOL = 2e-5, 1e-4  # float32: only the summation order differs
CASES = {"tp2_sp": ParallelConfig(tensor=2, sequence_parallel=True),
         "cp2_ulysses": ParallelConfig(context=2, context_mode="ulysses"),
         "cp2_ring": ParallelConfig(context=2, context_mode="ring")}


def config() -> VideoDiTConfig:
    return VideoDiTConfig(in_channels=4, hidden=32, layers=2, heads=4, mlp_ratio=2.0, text_dim=12, adaln_lora_rank=4,
                          pooled_text_conditioning=True, absolute_positions=True)


def packed_inputs(cfg):
    g = torch.Generator().manual_seed(11)
    latents = [torch.randn(cfg.in_channels, t, h, w, generator=g) for t, h, w in ((1, 4, 4), (2, 4, 6), (3, 2, 4))]
    texts = [torch.randn(3, cfg.text_dim, generator=g) for _ in latents]
    masks = [torch.tensor([True, index != 2, True]) for index in range(len(latents))]
    video, text, mask, layout = pack_samples(latents, texts, masks, cfg.patch, length=50, multiple=4)
    return video, torch.rand(len(latents), generator=g), text, mask, layout, torch.randn(video.shape, generator=g)


def output_and_grads(model, inputs):
    video, t, text, mask, layout, probe = inputs
    out = model(video, t, text, mask, pack=layout)
    (out * probe).sum().backward()
    return out.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def packed_microbatches(cfg):
    from megatron_video.diffusion.flow_matching import FlowMatching
    from megatron_video.training.bucketed_batches import packed_microbatch

    g = torch.Generator().manual_seed(5)
    microbatches = []
    for shapes in (((1, 4, 4), (2, 4, 6)), ((3, 2, 4), (1, 2, 2), (2, 2, 2))):
        latents = [torch.randn(cfg.in_channels, *shape, generator=g) for shape in shapes]
        texts = [torch.randn(3, cfg.text_dim, generator=g) for _ in shapes]
        masks = [torch.tensor([True, True, index == 0]) for index in range(len(shapes))]
        microbatches.append(packed_microbatch(FlowMatching(), latents, texts, masks, cfg.patch, 48, 4, g))
    return microbatches


def scheduled_loss_and_grads(state, parallel):
    """Loss and DDP-reduced gradients (global layer names) of the packed microbatches, run
    through training.step's schedules on this rank's stage."""
    from megatron_video.config.schema import RootConfig
    from megatron_video.diffusion.flow_matching import FlowMatching
    from megatron_video.model import build_model_chunks
    from megatron_video.training.build import Components
    from megatron_video.training.step import configure_schedules, run_microbatches
    from megatron_video.training.trainer import wrap_ddp

    cfg = config()
    (chunk,) = build_model_chunks(cfg)
    first = chunk.layers.start

    def global_name(name):
        if not name.startswith("blocks."):
            return name
        _, index, rest = name.split(".", 2)
        return f"blocks.{first + int(index)}.{rest}"

    chunk.load_state_dict({n: state[global_name(n)] for n in chunk.state_dict()})
    (ddp,) = [wrap_ddp(chunk, RootConfig(model=cfg, parallel=parallel), 0)]
    configure_schedules([ddp])
    ddp.zero_grad_buffer()
    parts = Components(chunks=[ddp], codec=None, text=None, flow=FlowMatching())
    loss = run_microbatches([ddp], parts, packed_microbatches(cfg), torch.float32, forward_only=False)
    return loss, {global_name(n): p.main_grad.detach().clone() for n, p in chunk.named_parameters()}


def worker(state):
    from megatron.core import parallel_state

    from megatron_video.parallel.layout import validate_layout
    from megatron_video.parallel.state import init_distributed

    cfg, results = config(), {}
    for name, parallel in CASES.items():
        parallel_state.destroy_model_parallel()
        init_distributed(parallel, torch.device("cpu"), seed=1234)
        layout = validate_layout(parallel, cfg, 2)
        model = build_model(cfg, parallel.sequence_parallel, context_mode=layout.context_mode)
        tp_rank = parallel_state.get_tensor_model_parallel_rank()
        model.load_state_dict(shard_canonical_state(state, model.tensor_parallel_layout(), tp_rank,
                                                    parallel_state.get_tensor_model_parallel_world_size()))
        try:
            out, grads = output_and_grads(model, packed_inputs(cfg))
        except ValueError as err:
            results[name] = str(err)
            continue
        for grad in grads.values():  # as megatron's DDP sums over the data x context group
            torch.distributed.all_reduce(grad, group=parallel_state.get_context_parallel_group())
        results[name] = (out, grads, model.tensor_parallel_layout())
    parallel_state.destroy_model_parallel()
    pipeline = ParallelConfig(pipeline=2, microbatches=2)
    init_distributed(pipeline, torch.device("cpu"), seed=1234)
    results["pp2"] = scheduled_loss_and_grads(state, pipeline)
    return results


def test_packed_rows_under_tp_sp_ulysses_and_pipeline_match_one_process(megatron_single):
    torch.manual_seed(0)
    model = build_model(config())
    state = exercised_state(model)
    ref_out, ref_grads = output_and_grads(model, packed_inputs(config()))
    ref_loss, ref_scheduled = scheduled_loss_and_grads(state, ParallelConfig(microbatches=2))
    ranks = run_distributed(worker, 2, state)
    for rank in ranks:
        assert rank["pp2"][0] == pytest.approx(ref_loss, rel=1e-6)
    pipelined = {**ranks[0]["pp2"][1], **ranks[1]["pp2"][1]}
    # The conditioning lives on both stages: each holds the whole (finalize-summed) gradient.
    assert pipelined.keys() == ref_scheduled.keys()
    for pname, ref in ref_scheduled.items():
        assert ref.abs().max() > 0, pname
        torch.testing.assert_close(pipelined[pname], ref, atol=ATOL, rtol=RTOL, msg=f"pp2 {pname}")
    for rank in ranks:
        assert "parallel.context_mode" in rank["cp2_ring"] and "ulysses" in rank["cp2_ring"]
        for name in ("tp2_sp", "cp2_ulysses"):
            torch.testing.assert_close(rank[name][0], ref_out, atol=ATOL, rtol=RTOL, msg=name)
    for name in ("tp2_sp", "cp2_ulysses"):
        tp_layout = ranks[0][name][2]
        grads = (gather_canonical_grads([rank[name][1] for rank in ranks], tp_layout) if name == "tp2_sp"
                 else ranks[0][name][1])
        assert grads.keys() == ref_grads.keys()
        for pname, ref in ref_grads.items():
            assert ref.abs().max() > 0, pname
            torch.testing.assert_close(grads[pname], ref, atol=ATOL, rtol=RTOL, msg=f"{name} {pname}")
