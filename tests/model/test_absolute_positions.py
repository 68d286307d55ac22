"""Absolute positions (model.absolute_positions): fixed sin/cos features of each video token's
normalised (t, h, w) position are added to its patch embedding.

In float64: the features are sin and cos of every axis at RoPE's log-spaced frequencies, zeros in
the channels left over; the embedded sequence differs from the model without them by exactly those
features on the video rows and by nothing on the text rows; they add no parameter, so weights load
either way; a frame of one repeated patch enters the blocks as distinct tokens. The packed path (each
sample's own positions) and the parallel layouts are checked with the option on in test_packing,
test_packing_parallel and test_layouts_equal_one_process.
"""
import math

import torch

from megatron_video.model import VideoDiTConfig, build_model
from megatron_video.model.embeddings import position_features
from megatron_video.model.patchify import patch_grid
from megatron_video.model.rope import video_positions


def model_with(absolute_positions: bool, **kw):
    torch.manual_seed(0)
    cfg = VideoDiTConfig(in_channels=8, hidden=32, layers=2, heads=2, mlp_ratio=2.0, text_dim=12,
                         absolute_positions=absolute_positions, **kw)
    return build_model(cfg).double()


def test_features_are_sin_and_cos_of_each_axis_at_rope_frequencies():
    positions = torch.tensor([[0.0, 0.25, 0.5], [0.75, 1.0, 0.125]], dtype=torch.float64)
    features = position_features(positions, 32, 1.0, 100.0)  # 32 // 6 = 5 frequencies, 2 spare channels
    assert features.shape == (2, 32) and features.dtype == torch.float32
    freqs = [10 ** (2 * j / 4) for j in range(5)]
    for n, (t, h, w) in enumerate(positions.tolist()):
        for axis, p in enumerate((t, h, w)):
            row = features[n, axis * 10:(axis + 1) * 10].double()
            expected = torch.tensor([math.sin(p * f) for f in freqs] + [math.cos(p * f) for f in freqs],
                                    dtype=torch.float64)
            torch.testing.assert_close(row, expected, atol=1e-6, rtol=0)
    assert torch.equal(features[:, 30:], torch.zeros(2, 2))


def test_features_are_added_to_the_video_rows_only_and_add_no_parameter(megatron_single):
    on, off = model_with(True), model_with(False)
    assert on.state_dict().keys() == off.state_dict().keys()
    off.load_state_dict(on.state_dict())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 2, 4, 6, generator=g, dtype=torch.float64)
    text = torch.randn(2, 5, 12, generator=g, dtype=torch.float64)
    rows = slice(0, 5 + 2 * 2 * 3)
    positions = video_positions(patch_grid((2, 4, 6), on.cfg.patch))
    difference = on.embed(x, text, positions, 0, rows) - off.embed(x, text, positions, 0, rows)  # [S, B, hidden]
    features = position_features(positions, 32, on.cfg.rope_w_min, on.cfg.rope_w_max).double()
    assert torch.equal(difference[:5], torch.zeros_like(difference[:5]))
    torch.testing.assert_close(difference[5:], features[:, None].expand(-1, 2, -1), atol=1e-12, rtol=0)


def test_only_absolute_positions_tell_where_in_the_frame_content_sits(megatron_single):
    """A frame of one repeated patch: without absolute positions every video token enters the blocks
    the same (only RoPE inside attention, relative to the other tokens, can tell them apart); with
    them every token differs."""
    g = torch.Generator().manual_seed(2)
    patch = torch.randn(8, 1, 2, 2, generator=g, dtype=torch.float64)
    x = patch.repeat(1, 1, 4, 4)[None]  # [1, 8, 1, 8, 8]: a 1 x 4 x 4 token grid of one patch
    text = torch.randn(1, 3, 12, generator=g, dtype=torch.float64)
    for absolute, distinct in ((False, 1), (True, 16)):
        tokens = model_with(absolute).embed(x, text, video_positions((1, 4, 4)), 0, slice(0, 3 + 16))[3:, 0]
        assert len({tuple(row.tolist()) for row in tokens}) == distinct
