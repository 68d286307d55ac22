"""3D patchify: exact round trip, (t, h, w) token order, rejects indivisible latents."""
import pytest
import torch

from megatron_video.model.patchify import patch_grid, patchify, unpatchify


@pytest.mark.parametrize("patch", [[1, 2, 2], [2, 2, 2], [1, 1, 1], [2, 1, 3]])
def test_round_trip(patch):
    x = torch.randn(2, 5, 4, 6, 6)
    grid = patch_grid((4, 6, 6), patch)
    tokens = patchify(x, patch)
    assert tokens.shape == (2, grid[0] * grid[1] * grid[2], 5 * patch[0] * patch[1] * patch[2])
    torch.testing.assert_close(unpatchify(tokens, patch, grid, 5), x, atol=0, rtol=0)


def test_token_order_and_contents():
    x = torch.arange(1 * 2 * 2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 2, 4, 4)
    tokens = patchify(x, [1, 2, 2])
    # token 3 = (t=0, h=1, w=1): channel 0 then 1, each the 2x2 block at rows 2-3, cols 2-3
    expected = torch.cat([x[0, c, 0, 2:4, 2:4].flatten() for c in range(2)])
    torch.testing.assert_close(tokens[0, 3], expected)
    torch.testing.assert_close(tokens[0, 4], torch.cat([x[0, c, 1, 0:2, 0:2].flatten() for c in range(2)]))


def test_indivisible_latent_is_rejected():
    with pytest.raises(ValueError, match="not divisible"):
        patchify(torch.randn(1, 2, 3, 5, 4), [1, 2, 2])
