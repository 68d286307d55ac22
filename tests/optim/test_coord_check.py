"""Coordinate check: flat in width under our muP rules, growing under the standard parameterisation."""
import numpy as np

from megatron_video.optim.config import OptimConfig
from megatron_video.optim.coord_check import (
    CoordCheckConfig,
    coord_check,
    plot_coord_check,
)


def test_scales_are_flat_in_width_under_mup_and_not_under_standard(tmp_path):
    result = coord_check(OptimConfig(base_width=64), CoordCheckConfig(widths=[64, 128, 256, 512]))
    for metric in ("activation", "update"):
        assert np.abs(result.slopes("mup", metric)).max() < 0.2, (metric, result.slopes("mup", metric))
    # Standard parameterisation: each hidden layer's update effect grows about linearly with width.
    hidden = [i for i, name in enumerate(result.layers) if name.startswith("blocks.")]
    assert result.slopes("sp", "update")[hidden].min() > 0.6, result.slopes("sp", "update")
    assert plot_coord_check(result, tmp_path / "coord.png").stat().st_size > 1000
