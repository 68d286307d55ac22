"""Base-LR schedule shape (warmup -> constant -> cooldown from 98%), muP rules, LR scaling helpers."""
import itertools

import pytest
import torch

from megatron_video.config.errors import ConfigError
from megatron_video.optim.config import OptimConfig
from megatron_video.optim.mup import (
    lr_for_batch_size,
    lr_for_duration,
    lr_multiplier,
    scale_for_compute,
)
from megatron_video.optim.schedule import build_scheduler
from megatron_video.optim.sphere_adamw import SphereAdamW


def test_schedule_warms_up_holds_then_cools_down_from_98_percent():
    cfg = OptimConfig(lr=1e-3, warmup_steps=100, min_lr_fraction=0.1)
    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizer = SphereAdamW([{"params": params, "max_lr": 2e-3, "min_lr": 2e-4}])  # a muP x2 group
    scheduler = build_scheduler(optimizer, cfg, total_steps=10_000)
    base, group = [], []
    for _ in range(10_000):
        base.append(scheduler.current_lr())
        group.append(optimizer.param_groups[0]["lr"])
        scheduler.step(1)
    base.append(scheduler.current_lr())
    assert base[0] == 0.0 and base[50] == pytest.approx(5e-4) and base[100] == pytest.approx(1e-3)
    assert all(b == pytest.approx(1e-3) for b in base[100:9801])  # constant until 98% of the run
    assert base[9900] == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))  # linear cooldown half way
    assert base[10_000] == pytest.approx(1e-4)  # min_lr_fraction at the end
    assert all(a >= b for a, b in itertools.pairwise(base[9800:]))
    assert group[5000] == pytest.approx(2e-3)  # per-group max_lr carries the multiplier
    assert group[9999] == pytest.approx(2e-4 + 1.8e-3 / 200)  # one cooldown step before the end


def test_mup_rules_scale_hidden_and_output_but_not_vectors_or_inputs():
    cfg = OptimConfig(base_width=256, layer_lr_multipliers=["*attn*=2.0"])
    matrix, vector = torch.zeros(4, 4), torch.zeros(4)
    assert lr_multiplier("blocks.0.mlp.weight", matrix, 1024, cfg) == pytest.approx(0.25)
    assert lr_multiplier("final_proj.weight", matrix, 1024, cfg) == pytest.approx(0.25)
    assert lr_multiplier("blocks.0.attn.weight", matrix, 1024, cfg) == pytest.approx(0.5)
    assert lr_multiplier("blocks.0.mlp.bias", vector, 1024, cfg) == 1.0
    assert lr_multiplier("blocks.0.value_lambdas", vector, 1024, cfg) == 1.0
    assert lr_multiplier("patch_embed.weight", matrix, 1024, cfg) == 1.0
    assert lr_multiplier("blocks.0.mlp.weight", matrix, 1024, OptimConfig(mup=False)) == 1.0


def test_lr_scaling_helpers_follow_their_power_laws():
    cfg = OptimConfig(lr=1e-3, lr_batch_exponent=0.5, lr_duration_exponent=0.25,
                      reference_batch_size=256, reference_steps=10_000)
    assert lr_for_batch_size(1e-3, 1024, cfg) == pytest.approx(2e-3)
    assert lr_for_duration(1e-3, 160_000, cfg) == pytest.approx(5e-4)
    batch, steps, lr = scale_for_compute(cfg, 16.0, batch_share=0.5)
    assert (batch, steps) == (1024, 40_000)
    assert lr == pytest.approx(1e-3 * 2 * 4 ** -0.25)


def test_config_rejects_bad_values_naming_the_key():
    with pytest.raises(ConfigError, match="betas"):
        OptimConfig(betas=[0.9])
    with pytest.raises(ConfigError, match="layer_lr_multipliers"):
        OptimConfig(layer_lr_multipliers=["*attn*"])
    with pytest.raises(ConfigError, match="cooldown_start_fraction"):
        OptimConfig(cooldown_start_fraction=0.0)


def test_a_resumed_schedule_with_more_steps_follows_the_config_and_says_so(caplog):
    """Resumed with a larger train.steps, the schedule is the new run's at the checkpoint's step
    (megatron's --override-opt_param-scheduler), not the finished one of the checkpoint."""
    cfg = OptimConfig(lr=1e-3, warmup_steps=10, min_lr_fraction=0.0)

    def scheduler(total_steps, steps_taken):
        optimizer = SphereAdamW([{"params": [torch.nn.Parameter(torch.zeros(2))], "max_lr": 1e-3, "min_lr": 0.0}])
        made = build_scheduler(optimizer, cfg, total_steps)
        made.step(steps_taken)
        return made, optimizer

    finished, _ = scheduler(120, 120)
    assert finished.current_lr() == 0.0  # the 120-step run ended its cooldown
    extended, optimizer = scheduler(300, 0)
    with caplog.at_level("WARNING", logger="megatron_video.optim.schedule"):
        extended.load_state_dict(finished.state_dict())
    straight, _ = scheduler(300, 120)
    assert extended.num_steps == 120
    assert extended.current_lr() == straight.current_lr() == pytest.approx(1e-3)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert "train.steps (lr_decay_steps) 120 -> 300" in caplog.text
    assert extended.wsd_decay_steps == straight.wsd_decay_steps  # the cooldown is the new run's too
    caplog.clear()
    resumed, _ = scheduler(300, 0)
    with caplog.at_level("WARNING", logger="megatron_video.optim.schedule"):
        resumed.load_state_dict(straight.state_dict())  # same config: the same schedule, nothing to say
    assert resumed.current_lr() == straight.current_lr() and caplog.text == ""
