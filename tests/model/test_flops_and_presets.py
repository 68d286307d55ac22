"""FLOPs against a hand count and torch's FlopCounterMode; presets' sizes against their names."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from megatron_video.config import ConfigError
from megatron_video.model import VideoDiTConfig, build_model, load_preset, model_flops


def test_flops_hand_count_tiny_config():
    cfg = VideoDiTConfig(in_channels=4, hidden=8, layers=2, heads=2, mlp_ratio=2.0, text_dim=6, timestep_dim=4)
    # latent (4, 2, 4, 4), patch 1x2x2: 2*2*2 = 8 tokens of 16 features; 3 text tokens; S = 11; m = 16
    embed = 2 * 8 * 16 * 8 + 2 * 3 * (6 * 8 + 8 * 8) + 2 * (4 * 8 + 8 * 8)  # patch, text, timestep
    block = 2 * (8 * 8 + 8 * 24) + 2 * 11 * (8 * 56 + 24 * 8) + 4 * 8 * 11 * 11  # modulation, W_in/W_out, attn
    final = 2 * (8 * 8 + 8 * 16) + 2 * 8 * 8 * 16
    assert model_flops(cfg, (4, 2, 4, 4), 3) == 3 * (embed + 2 * block + final)


@pytest.mark.parametrize("variant", [dict(block="parallel"), dict(block="sequential"),
                                     dict(spatio_temporal=True, adaln_lora_rank=4)])
def test_flops_match_flop_counter_on_the_real_model(megatron_single, variant):
    # math backend: FlopCounterMode has no formula for the CPU flash kernel, but counts math's bmm.
    cfg = VideoDiTConfig(in_channels=8, hidden=64, layers=2, heads=4, text_dim=32, attention_backend="math",
                         **variant)
    model = build_model(cfg)
    x, text = torch.randn(1, 8, 4, 8, 8), torch.randn(1, 16, 32)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x, torch.rand(1), text, torch.ones(1, 16, dtype=torch.bool)).sum().backward()
    # FlopCounterMode skips the input gradients nobody needs (patch embedding, timestep MLP): within 3%.
    assert counter.get_total_flops() == pytest.approx(model_flops(cfg, (8, 4, 8, 8), 16), rel=0.03)


PRESETS = {"30m": 30e6, "100m": 100e6, "1b": 1e9, "7b": 7e9, "22b": 22e9}


def test_a_packed_row_counts_the_flops_of_its_samples_each_alone():
    from megatron_video.model.flops import batch_model_flops
    from megatron_video.model.packing import PackLayout, Segment
    from megatron_video.model.patchify import patch_grid

    cfg = load_preset("demo")
    shapes, text_len = [(12, 1, 8, 14), (12, 4, 8, 14), (12, 8, 4, 6)], 8  # an image and two clips
    segments = [Segment(text_len, patch_grid(shape[1:], cfg.patch)) for shape in shapes]
    pack = PackLayout.of(segments, length=sum(s.length for s in segments) + 10)  # padding does no work
    packed = batch_model_flops(cfg, torch.zeros(1, pack.length, 1), text_len, pack)
    assert packed == pytest.approx(sum(model_flops(cfg, shape, text_len) for shape in shapes), rel=1e-12)
    assert packed < model_flops(cfg, (12, 13, 8, 14), text_len)  # below one sample of all the frames


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_parameter_counts_match_their_names(megatron_single, name):
    with torch.device("meta"):  # no memory: 22B parameters only as shapes
        model = build_model(load_preset(name))
    count = sum(p.numel() for p in model.parameters())
    assert count == pytest.approx(PRESETS[name], rel=0.15), f"{name}: {count / 1e6:.1f}M"


def test_demo_preset_is_tiny_and_cpu_sized():
    cfg = load_preset("demo")
    assert (cfg.hidden, cfg.layers, cfg.heads, cfg.text_dim, cfg.in_channels) == (256, 4, 4, 384, 48)


def test_config_validation_names_the_key():
    with pytest.raises(ConfigError, match="heads"):
        VideoDiTConfig(hidden=100, heads=3)
    with pytest.raises(ConfigError, match="patch"):
        VideoDiTConfig(patch=[1, 2])
    with pytest.raises(ConfigError, match="block"):
        VideoDiTConfig(block="mixture")
    with pytest.raises(ConfigError, match="model"):
        load_preset("demo") and load_preset("3b")
    assert VideoDiTConfig(layers=8).offset == 0.125 and VideoDiTConfig(residual_offset=0.0).offset == 0.0
