"""Voxel-grid geometry of the cache: exact reorientation to RAS, the brain crop, and their inverse.

The cache never resamples. A source volume of shape ``(X0, Y0, Z0)`` is brought to the closest
canonical RAS voxel order by an axis permutation and flips only (nibabel's
``io_orientation``/``apply_orientation``, which also handles oblique affines), then cropped to
a box. Both steps are index bookkeeping: :func:`to_cache_grid` moves any array from the source
grid onto the cache grid, and :func:`restore_to_original` puts it back bit for bit.

Conventions used throughout:

* ``ornt`` is nibabel's orientation array of the source voxel axes (``io_orientation(affine)``):
  row ``n`` says that source axis ``n`` becomes canonical axis ``ornt[n, 0]``, flipped when
  ``ornt[n, 1] == -1``.
* Boxes are half-open ``[[x0, x1], [y0, y1], [z0, z1]]`` voxel index ranges.
* Cache arrays are slice-major: ``(..., Z, X, Y)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

__all__ = [
    "Box",
    "bounding_box",
    "box_slices",
    "cache_affine",
    "invert_orientation",
    "reorient_box",
    "reoriented_shape",
    "restore_to_original",
    "to_cache_grid",
    "unpad",
    "from_planar_size",
    "resize_planar",
    "voxel_orientation",
]


Box = list[list[int]]


def voxel_orientation(affine: np.ndarray) -> np.ndarray:
    """nibabel orientation (int array of ``[axis, flip]`` rows) that takes the voxel axes to the closest RAS.

    Raises:
        ValueError: if the affine is degenerate (an axis with no direction in world space).
    """
    ornt = io_orientation(np.asarray(affine, dtype=np.float64))
    if np.isnan(ornt).any():
        raise ValueError("the affine is degenerate: a voxel axis has no direction in world space")
    return ornt.astype(np.int64)


def invert_orientation(ornt: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """The orientation that undoes ``ornt``: ``apply_orientation(apply_orientation(a, o), invert_orientation(o))`` is ``a``."""
    ornt = np.asarray(ornt, dtype=np.int64)
    inverse = np.empty_like(ornt)
    for axis, (target, flip) in enumerate(ornt):
        inverse[target] = (axis, flip)
    return inverse


def reoriented_shape(shape: Sequence[int], ornt: np.ndarray | Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Shape of the first ``len(ornt)`` axes after :func:`nibabel.orientations.apply_orientation`."""
    ornt = np.asarray(ornt, dtype=np.int64)
    out = [0] * len(ornt)
    for axis, (target, _flip) in enumerate(ornt):
        out[target] = int(shape[axis])
    return tuple(out)


def reorient_box(box: Box, shape: Sequence[int], ornt: np.ndarray | Sequence[Sequence[int]]) -> Box:
    """Map a half-open box on the grid of shape ``shape`` to the grid reoriented by ``ornt``."""
    ornt = np.asarray(ornt, dtype=np.int64)
    out: Box = [[0, 0] for _ in range(len(ornt))]
    for axis, (target, flip) in enumerate(ornt):
        low, high = int(box[axis][0]), int(box[axis][1])
        out[target] = [int(shape[axis]) - high, int(shape[axis]) - low] if flip < 0 else [low, high]
    return out


def bounding_box(mask: np.ndarray, margin: int = 0) -> Box:
    """Half-open box around the true voxels of ``mask``, grown by ``margin`` voxels and clipped to the grid.

    Raises:
        ValueError: if ``mask`` has no true voxel.
    """
    box: Box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        if hits.size == 0:
            raise ValueError("the mask is empty")
        box.append([max(int(hits[0]) - margin, 0), min(int(hits[-1]) + 1 + margin, mask.shape[axis])])
    return box


def box_slices(box: Box) -> tuple[slice, ...]:
    """Index expression selecting ``box``."""
    return tuple(slice(low, high) for low, high in box)


def cache_affine(affine: np.ndarray, ornt: np.ndarray | Sequence[Sequence[int]], shape: Sequence[int], crop_box: Box) -> np.ndarray:
    """Voxel-to-world affine of the cropped canonical grid, indexed ``(x, y, z)`` (not slice-major).

    Args:
        affine: the source file's affine.
        ornt: the source voxel orientation (:func:`voxel_orientation`).
        shape: the source spatial shape ``(X0, Y0, Z0)``.
        crop_box: the crop on the canonical grid.
    """
    canonical = np.asarray(affine, dtype=np.float64) @ inv_ornt_aff(np.asarray(ornt), tuple(shape))
    shift = np.eye(4)
    shift[:3, 3] = [low for low, _high in crop_box]
    return canonical @ shift


def to_cache_grid(array: np.ndarray, meta: dict) -> np.ndarray:
    """Move an array on the source file's voxel grid onto the case's cache grid, exactly.

    The reorientation to RAS and the crop of the preprocessing (voxels outside the crop are
    dropped); no value is interpolated. The inverse of :func:`restore_to_original` inside the crop.

    Args:
        array: shape ``(..., X0, Y0, Z0)``, the source file's spatial shape.
        meta: the case manifest (needs ``orientation``, ``canonical_shape`` and ``crop_box``).

    Returns:
        A view of ``array`` shaped ``(..., Z, X, Y)``, the cache grid.

    Raises:
        ValueError: if ``array`` does not have the source grid's spatial shape.
    """
    array = np.asarray(array)
    ornt = np.asarray(meta["orientation"], dtype=np.int64)
    source_shape = tuple(int(meta["canonical_shape"][target]) for target, _flip in ornt)
    if array.ndim < 3 or tuple(array.shape[-3:]) != source_shape:
        raise ValueError(f"expected an array shaped (..., X0, Y0, Z0) = (..., {', '.join(map(str, source_shape))}), got {array.shape}")
    # apply_orientation acts on the leading axes, so the spatial axes go first and come back last.
    canonical = apply_orientation(np.moveaxis(array, (-3, -2, -1), (0, 1, 2)), ornt)
    return np.moveaxis(canonical[box_slices(meta["crop_box"])], (0, 1, 2), (-2, -1, -3))


def unpad(array: np.ndarray, meta: dict) -> np.ndarray:
    """The cropped grid of a padded 2D-layout case: ``array[..., off0:off0 + rows, off1:off1 + columns]`` (``meta["padding"]``).

    An array without padding (no ``padding`` in ``meta``, or already of the cropped in-plane size) is returned as is.
    """
    padding = meta.get("padding")
    if not padding or tuple(np.shape(array)[-2:]) != tuple(padding["size"]):
        return array
    (top, left), (rows, columns) = padding["offset"], padding["cropped_shape"]
    return np.asarray(array)[..., top : top + rows, left : left + columns]


def resize_planar(array: np.ndarray, size: Sequence[int], labels: bool = False) -> np.ndarray:
    """Resample the two last (in-plane) axes of ``array`` to ``size`` with MONAI ``Resize``, every leading index alike.

    Labels are resampled nearest (their values kept); other arrays by area averaging when both
    sides shrink (no aliasing, and unlike a Gaussian pre-filter no darkened border), bilinear
    otherwise, and come back in their own dtype.
    """
    from monai.transforms import Resize

    array = np.asarray(array)
    planes = array.reshape(-1, *array.shape[-2:])
    if labels:
        resized = Resize(tuple(size), mode="nearest-exact")(planes)
    else:
        shrinking = all(int(new) <= old for new, old in zip(size, array.shape[-2:]))
        resized = Resize(tuple(size), mode="area" if shrinking else "bilinear")(planes.astype(np.float32))
    resized = np.asarray(resized.detach().cpu().numpy() if hasattr(resized, "detach") else resized)
    return resized.astype(array.dtype).reshape(*array.shape[:-2], *(int(n) for n in size))


def from_planar_size(array: np.ndarray, meta: dict) -> np.ndarray:
    """The cropped grid of a 2D-layout case brought to its task's ``planar_size``: the padding removed (:func:`unpad`) or the resampling undone.

    ``meta["resizing"]`` (task ``planar_fit`` ``resize``) holds the ``size`` of the cache grid and
    the ``cropped_shape`` it was resampled from; integer arrays (labels) come back nearest,
    others (probabilities) bilinear. An array already of the cropped size is returned as is.
    """
    resizing = meta.get("resizing")
    if not resizing:
        return unpad(array, meta)
    if tuple(np.shape(array)[-2:]) != tuple(resizing["size"]):
        return array
    return resize_planar(array, resizing["cropped_shape"], labels=np.asarray(array).dtype.kind in "biu")


def restore_to_original(array: np.ndarray, meta: dict, fill: float = 0) -> np.ndarray:
    """Put an array on the cache grid back onto the source file's voxel grid, exactly.

    A 2D-layout case's padding is removed or its resampling undone (:func:`from_planar_size`), the
    crop is padded with ``fill`` and the reorientation undone; except for that resampling no
    value is interpolated, so labels come back bit for bit. The inverse of :func:`to_cache_grid`.

    Args:
        array: shape ``(..., Z, X, Y)``, the cache grid of the case (``meta["shape"]`` without C),
            padded or not.
        meta: the case manifest (``meta.json`` or ``PreparedCase.meta``).
        fill: value of the voxels outside the crop.

    Returns:
        Array of shape ``(..., X0, Y0, Z0)`` (the source file's spatial shape), same dtype as ``array``.

    Raises:
        ValueError: if ``array`` does not have the cache grid's spatial shape.
    """
    array = np.asarray(from_planar_size(array, meta))
    crop_box = meta["crop_box"]
    expected = (crop_box[2][1] - crop_box[2][0], crop_box[0][1] - crop_box[0][0], crop_box[1][1] - crop_box[1][0])
    if array.ndim < 3 or tuple(array.shape[-3:]) != expected:
        raise ValueError(f"expected an array shaped (..., Z, X, Y) = (..., {', '.join(map(str, expected))}), got {array.shape}")
    leading = array.shape[:-3]
    canonical = np.full(leading + tuple(meta["canonical_shape"]), fill, dtype=array.dtype)
    canonical[(..., *box_slices(crop_box))] = np.moveaxis(array, -3, -1)
    # apply_orientation acts on the leading axes, so the spatial axes go first and come back last.
    restored = apply_orientation(np.moveaxis(canonical, (-3, -2, -1), (0, 1, 2)), invert_orientation(meta["orientation"]))
    return np.ascontiguousarray(np.moveaxis(restored, (0, 1, 2), (-3, -2, -1)))
