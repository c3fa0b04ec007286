"""Smooth random fields defined on a coarse lattice in millimetres and sampled onto any grid.

Deformations, tumour shapes, textures and bias fields are all drawn once on a lattice with a
fixed spacing in mm, so the same case looks the same at every grid size, and only then
sampled at the voxel centres. Sampling a lattice onto a regular grid is separable, so it is
done as three small matrix products instead of a per-voxel ``map_coordinates`` (which would
need a full coordinate array and costs several times more at 240 x 240 x 155).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

__all__ = ["Lattice", "random_field"]


@dataclasses.dataclass(frozen=True)
class Lattice:
    """Values on a regular lattice in FOV millimetres.

    Args:
        origin: position (mm) of node ``(0, 0, 0)`` along each axis.
        spacing: node spacing in mm.
        values: array ``(..., nx, ny, nz)``; leading axes are components.
    """

    origin: tuple[float, float, float]
    spacing: float
    values: np.ndarray

    def sample(self, x_mm: np.ndarray, y_mm: np.ndarray, z_mm: np.ndarray) -> np.ndarray:
        """Trilinear samples at the grid ``x_mm x y_mm x z_mm`` -> ``(..., len(x), len(y), len(z))`` float32.

        Points outside the lattice take the value of the nearest edge node.
        """
        out = self.values.astype(np.float32, copy=False)
        lead = out.ndim - 3
        for axis, points in enumerate((x_mm, y_mm, z_mm)):
            weights = _linear_weights(self.values.shape[lead + axis], self.origin[axis], self.spacing, points)
            out = np.moveaxis(np.tensordot(out, weights, axes=([lead + axis], [1])), -1, lead + axis)
        return np.ascontiguousarray(out)


def _linear_weights(nodes: int, origin: float, spacing: float, points: np.ndarray) -> np.ndarray:
    """Matrix ``(len(points), nodes)`` of linear interpolation weights (edge values held beyond the ends)."""
    position = np.clip((np.asarray(points, dtype=np.float64) - origin) / spacing, 0, nodes - 1)
    low = np.minimum(np.floor(position).astype(np.int64), max(nodes - 2, 0))
    frac = position - low
    weights = np.zeros((len(position), nodes), dtype=np.float32)
    rows = np.arange(len(position))
    weights[rows, low] = 1.0 - frac
    if nodes > 1:
        weights[rows, low + 1] += frac
    return weights


def random_field(
    rng: np.random.Generator,
    low_mm: np.ndarray,
    high_mm: np.ndarray,
    spacing: float,
    correlation_mm: float,
    components: int = 1,
) -> Lattice:
    """A smooth Gaussian random field with unit standard deviation over the box ``[low_mm, high_mm]``.

    Args:
        rng: source of randomness.
        low_mm, high_mm: corners of the box in FOV mm (the lattice covers it).
        spacing: lattice spacing in mm (a fraction of ``correlation_mm`` is enough).
        correlation_mm: Gaussian smoothing width in mm: the size of the field's blobs.
        components: number of independent fields (leading axis of ``values``; dropped when 1).
    """
    low = np.asarray(low_mm, dtype=np.float64)
    counts = np.maximum(np.ceil((np.asarray(high_mm, dtype=np.float64) - low) / spacing).astype(int) + 1, 2)
    noise = rng.standard_normal((components, *counts)).astype(np.float32)
    sigma = correlation_mm / spacing
    for component in noise:
        ndimage.gaussian_filter(component, sigma, output=component, mode="reflect")
        component /= max(float(component.std()), 1e-6)
    values = noise[0] if components == 1 else noise
    return Lattice(tuple(float(v) for v in low), float(spacing), values)
