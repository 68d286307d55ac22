"""ND-RoPE: an isometry, relative in every axis, with its zero bands and per-layer axes."""
import torch

from megatron_video.model.rope import NDRope, band_frequencies, fibonacci_sphere, video_positions


def make_rope(seed=0, head_dim=40):
    return NDRope(head_dim, w_min=1.0, w_max=100.0, zero_fraction=0.1, seed=seed)


def test_rotation_keeps_norms():
    rope = make_rope()
    x = torch.randn(3, 2, 48, 40, dtype=torch.float64)
    pos = video_positions((3, 4, 4))
    y = NDRope.rotate(x, rope.angles(pos).double())
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), atol=1e-10, rtol=1e-10)
    assert (y - x).abs().max() > 0.1  # it does rotate


def test_scores_depend_only_on_relative_position_along_each_axis():
    rope = make_rope(seed=3)
    grid = (4, 5, 6)
    pos = video_positions(grid).reshape(*grid, 3)
    q, k = torch.randn(40, dtype=torch.float64), torch.randn(40, dtype=torch.float64)

    def score(p_q, p_k):
        qa = NDRope.rotate(q[None], rope.angles(p_q[None]).double())
        ka = NDRope.rotate(k[None], rope.angles(p_k[None]).double())
        return (qa * ka).sum()

    base_q, base_k = pos[1, 2, 1], pos[0, 1, 3]
    for axis in range(3):
        shift = [0, 0, 0]
        shift[axis] = 2  # an integer token shift along one axis, applied to both ends
        shifted_q = pos[1 + shift[0], 2 + shift[1], 1 + shift[2]]
        shifted_k = pos[0 + shift[0], 1 + shift[1], 3 + shift[2]]
        # angles are float32 (up to ~170 rad here): 1e-5 covers their rounding, an offset error is O(1)
        torch.testing.assert_close(score(shifted_q, shifted_k), score(base_q, base_k), atol=1e-5, rtol=1e-5)
    # and a different relative offset does change the score
    assert abs(score(pos[1, 2, 1], pos[0, 0, 0]) - score(base_q, base_k)) > 1e-3


def test_ten_percent_of_bands_are_unrotated():
    freq = band_frequencies(20, 1.0, 100.0, 0.1)
    assert int((freq == 0).sum()) == 2
    active = freq[freq > 0]
    assert active.min() == 1.0 and torch.isclose(active.max(), torch.tensor(100.0, dtype=torch.float64))
    ratios = active[1:] / active[:-1]
    torch.testing.assert_close(ratios, ratios[0].expand_as(ratios))  # log-spaced
    rope = make_rope()
    x = torch.randn(10, 40)
    y = NDRope.rotate(x, rope.angles(video_positions((2, 1, 5))))
    zero = torch.nonzero(rope.freq == 0).flatten()
    for band in zero.tolist():  # the pair (i, i + d/2) of a zero band passes through unchanged
        torch.testing.assert_close(y[:, [band, band + 20]], x[:, [band, band + 20]])


def test_band_axes_are_unit_spread_and_differ_per_layer():
    a, b = make_rope(seed=0), make_rope(seed=1)
    torch.testing.assert_close(a.axes.norm(dim=-1), torch.ones(20, dtype=torch.float64))
    assert (a.axes - b.axes).abs().max() > 0.1
    points = fibonacci_sphere(64)
    gram = points @ points.T - 2 * torch.eye(64, dtype=torch.float64)
    # A golden spiral keeps neighbours apart; 64 uniform random points typically come within ~3 degrees.
    assert torch.arccos(gram.max()).rad2deg() > 15


def test_text_tokens_are_not_rotated():
    rope = make_rope()
    x = torch.randn(3, 40)
    torch.testing.assert_close(NDRope.rotate(x, rope.angles(torch.zeros(3, 3))), x)
