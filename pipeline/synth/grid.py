"""The voxel grids of the synthetic cohort and their BraTS header geometry.

Every size covers the same field of view as a real BraTS volume (240 x 240 x 155 mm, centred
on the same point), only sampled more coarsely, so one case drawn at two sizes shows the same
anatomy. The header follows the real BraTS convention: voxel order L-P-S, affine
``diag(-s, -s, s)`` with translation ``(0, (ny - 1) * s, 0)``, qform and sform code 1.

Positions inside the field of view are written in *FOV millimetres*: the voxel axes' own
directions (towards Left, Posterior, Superior), origin at the centre of the field of view.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.core.errors import ConfigError

__all__ = ["GRIDS", "SynthGrid", "get_grid"]


@dataclasses.dataclass(frozen=True)
class SynthGrid:
    """One sampling of the BraTS field of view.

    Args:
        name: the size's name on the command line.
        shape: voxels along the L, P and S axes.
        spacing: isotropic voxel size in mm.
    """

    name: str
    shape: tuple[int, int, int]
    spacing: float

    @property
    def affine(self) -> np.ndarray:
        """The BraTS voxel-to-world affine: ``diag(-s, -s, s)``, translation ``(0, (ny - 1) * s, 0)``."""
        s = self.spacing
        affine = np.diag([-s, -s, s, 1.0])
        affine[1, 3] = (self.shape[1] - 1) * s
        return affine

    def axis_mm(self, axis: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """FOV millimetres of the voxel centres ``start:stop`` along ``axis`` (float32)."""
        n = self.shape[axis]
        index = np.arange(start, n if stop is None else stop, dtype=np.float32)
        return (index - (n - 1) / 2.0) * np.float32(self.spacing)

    def index_range(self, axis: int, low_mm: float, high_mm: float) -> tuple[int, int]:
        """Half-open voxel range along ``axis`` whose centres lie within ``[low_mm, high_mm]``, clipped to the grid."""
        n = self.shape[axis]
        centre = (n - 1) / 2.0
        start = int(np.ceil(low_mm / self.spacing + centre))
        stop = int(np.floor(high_mm / self.spacing + centre)) + 1
        return max(start, 0), min(max(stop, 0), n)


#: The sizes a cohort can be generated at (all cover 240 x 240 x 155 mm).
GRIDS: dict[str, SynthGrid] = {
    "full": SynthGrid("full", (240, 240, 155), 1.0),
    "small": SynthGrid("small", (96, 96, 62), 2.5),
    "tiny": SynthGrid("tiny", (48, 48, 32), 5.0),
}


def get_grid(size: str) -> SynthGrid:
    """The grid called ``size`` (``full``, ``small`` or ``tiny``).

    Raises:
        ConfigError: for an unknown size.
    """
    if size not in GRIDS:
        raise ConfigError("size", f"unknown size {size!r}; choose one of {', '.join(GRIDS)}")
    return GRIDS[size]
