"""Layouts are checked against the world size and the model before any work; the context-parallel
attention is resolved from the heads; a bad layout on the command line fails naming its key."""
import time

import pytest

from megatron_video.cli.main import main
from megatron_video.config import ConfigError
from megatron_video.model import VideoDiTConfig
from megatron_video.model.attention import transformer_engine_available
from megatron_video.parallel.layout import validate_layout
from megatron_video.parallel.state import ParallelConfig

MODEL = VideoDiTConfig(hidden=64, heads=4, layers=4, mlp_ratio=2.0)


def layout(world: int = 8, model: VideoDiTConfig = MODEL, tokens: int | None = None, **parallel):
    return validate_layout(ParallelConfig(**parallel), model, world, tokens)


def refused(key: str, problem: str, **kwargs) -> None:
    with pytest.raises(ConfigError) as err:
        layout(**kwargs)
    assert err.value.key == key, err.value
    assert problem in err.value.problem, err.value


def test_a_4d_layout_resolves_its_groups_and_context_attention():
    full = layout(world=16, tensor=2, context=2, pipeline=2, virtual_pipeline=2, microbatches=4)
    assert (full.tensor, full.context, full.pipeline, full.virtual_pipeline, full.data) == (2, 2, 2, 2, 2)
    assert (full.context_mode, full.ulysses, full.ring) == ("ulysses", 2, 1)
    # 4 heads over CP=8: Ulysses over 4, ring over 2; over CP=4 with TP=4 (1 head each): ring only.
    usp = layout(world=8, context=8)
    assert (usp.context_mode, usp.ulysses, usp.ring, usp.hierarchical_context_sizes) == ("usp", 4, 2, [4, 2])
    assert layout(world=16, tensor=4, context=4).context_mode == "ring"
    assert layout(world=2, context=2, context_mode="ring").ulysses == 1
    assert layout(world=1).context_mode == "none"


def test_impossible_and_unbuilt_layouts_name_their_key():
    refused("parallel", "does not divide the world size 8", tensor=3)
    refused("parallel.tensor", "does not divide model.heads", world=8, tensor=8)
    refused("parallel.context_mode", "does not divide them", context=8, context_mode="ulysses")
    refused("parallel.context_mode", "use ulysses", context=2, context_mode="usp")
    refused("parallel.context_mode", "use ring", world=16, tensor=4, context=4, context_mode="usp")
    refused("parallel.context_mode", "ST-DiT", model=VideoDiTConfig(hidden=64, heads=2, spatio_temporal=True),
            context=4)
    refused("parallel.context", "fewer than the 4 context ranks", context=4, tokens=3)
    refused("parallel.pipeline", "must split evenly", pipeline=8)
    refused("parallel.pipeline", "virtual_pipeline (2)", world=4, pipeline=4, virtual_pipeline=2)
    refused("parallel.virtual_pipeline", "needs parallel.pipeline > 1", virtual_pipeline=2)
    refused("parallel.virtual_pipeline", "0 (off) or >= 2", pipeline=2, virtual_pipeline=1)
    refused("parallel.microbatches", "multiple of parallel.pipeline (2)", pipeline=2, virtual_pipeline=2,
            microbatches=3)
    with pytest.raises(ConfigError, match="context_mode"):
        ParallelConfig(context_mode="allgather")


@pytest.mark.skipif(transformer_engine_available(), reason="checks the refusal where TE is missing")
def test_te_context_attention_is_refused_without_transformer_engine():
    refused("parallel.context_mode", "Transformer Engine", world=2, context=2, context_mode="te")


def test_mvideo_train_refuses_a_bad_layout_in_seconds(shard_root, capsys):
    started = time.perf_counter()
    code = main(["train", "recipe=demo", f"data.shards={shard_root}", "parallel.context=3"])
    assert code == 2
    assert "config key 'parallel'" in capsys.readouterr().err
    assert time.perf_counter() - started < 30


@pytest.mark.parametrize("recipe, model", [("single", "demo"), ("tp2_sp", "100m"), ("tp8_sp_dist_opt", "22b"),
                                           ("cp2", "demo"), ("pp2_interleaved", "demo"), ("tp2_cp2_pp2", "22b")])
def test_parallel_recipes_are_valid_layouts(recipe, model):
    from megatron_video.config.loader import load_config

    cfg = load_config("default", [f"parallel={recipe}", f"model={model}"])
    p = cfg.parallel
    validated = validate_layout(p, cfg.model, 2 * p.tensor * p.context * p.pipeline)
    assert validated.data == 2
