"""The synthetic cohort's grids (pipeline.synth.grid)."""

from __future__ import annotations

import numpy as np

from pipeline.synth import GRIDS


def test_grids_cover_the_same_field_of_view() -> None:
    for grid in GRIDS.values():
        extent = np.array(grid.shape) * grid.spacing
        np.testing.assert_allclose(extent, [240, 240, 155], atol=5)
