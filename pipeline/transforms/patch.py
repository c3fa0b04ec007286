"""Tumour-aware 3D patches read straight from a slice-major memory-mapped case.

MONAI's ``RandCropByPosNegLabeld`` needs the whole volume as a tensor and the indices of every
foreground and background voxel, which means reading and scanning the full case for each patch.
:class:`RandPosNegPatch` draws centres from the same distribution (a positive centre is a
uniformly chosen tumour voxel, a negative one a uniformly chosen non-tumour brain voxel, with
probability ``pos_fraction`` for positives) using the per-slice tumour counts of the cache's
``meta.json``, and reads only the patch's bytes. Centres are moved inside the volume as MONAI's
``correct_crop_centers`` does; a volume smaller than the patch is zero-padded symmetrically.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, RandomizableTransform
from monai.utils import ensure_tuple_rep

from pipeline.core.errors import ConfigError

__all__ = ["RandPosNegPatch", "RandPosNegPatchd", "read_patch"]


NEGATIVE_TRIES = 32  # uniform draws tried to land on a non-tumour brain voxel before accepting any background voxel


def patch_window(centre: int, extent: int, size: int) -> tuple[int, int, int]:
    """Where a patch of ``size`` around ``centre`` reads along an axis of length ``extent``.

    Returns:
        ``(start, stop, pad_before)``: read ``[start, stop)`` and pad ``pad_before`` in front
        (``size - (stop - start) - pad_before`` behind).
    """
    if extent >= size:
        start = min(max(centre - size // 2, 0), extent - size)
        return start, start + size, 0
    return 0, extent, (size - extent) // 2


def read_patch(volume: np.ndarray, start_zxy: Sequence[int], patch_size_xyz: Sequence[int]) -> np.ndarray:
    """Read a patch from a slice-major volume and return it channel-first in (X, Y, Z) order.

    Args:
        volume: ``(Z, C, X, Y)`` or ``(Z, X, Y)`` (read as one channel); a memmap is read only
            where the patch lies.
        start_zxy: the patch centre ``(z, x, y)``.
        patch_size_xyz: ``(px, py, pz)``.

    Returns:
        ``(C, px, py, pz)`` with the volume's dtype, zero where the patch leaves the volume.
    """
    px, py, pz = patch_size_xyz
    cz, cx, cy = start_zxy
    has_channels = volume.ndim == 4
    depth, width, height = volume.shape[0], volume.shape[-2], volume.shape[-1]
    (z0, z1, zb), (x0, x1, xb), (y0, y1, yb) = (
        patch_window(cz, depth, pz),
        patch_window(cx, width, px),
        patch_window(cy, height, py),
    )
    if has_channels:
        region = np.asarray(volume[z0:z1, :, x0:x1, y0:y1]).transpose(1, 2, 3, 0)
    else:
        region = np.asarray(volume[z0:z1, x0:x1, y0:y1]).transpose(1, 2, 0)[None]
    if region.shape[1:] == (px, py, pz):
        return np.ascontiguousarray(region)
    pads = ((0, 0), (xb, px - region.shape[1] - xb), (yb, py - region.shape[2] - yb), (zb, pz - region.shape[3] - zb))
    return np.pad(region, pads)


class RandPosNegPatch(RandomizableTransform):
    """Array transform: a random tumour-aware patch of a slice-major case, in (C, X, Y, Z) order.

    Args:
        patch_size: ``(px, py, pz)``, or one int for a cube.
        pos_fraction: probability that the patch is centred on a tumour voxel (``label > 0``);
            otherwise it is centred on a background brain voxel. A case without tumour always
            gives background-centred patches.
    """

    def __init__(self, patch_size: Sequence[int] | int, pos_fraction: float = 0.6) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        if not 0.0 <= pos_fraction <= 1.0:
            raise ConfigError("foreground_ratio", f"must lie in [0, 1], got {pos_fraction}")
        self.patch_size = tuple(int(s) for s in ensure_tuple_rep(patch_size, 3))
        if any(s < 1 for s in self.patch_size):
            raise ConfigError("patch_size", f"sizes must be positive, got {self.patch_size}")
        self.pos_fraction = float(pos_fraction)
        self.centre: tuple[int, int, int] = (0, 0, 0)
        self.centre_is_tumour = False

    def randomize(
        self, label_zxy: np.ndarray, foreground_per_slice: Sequence[int] | None = None, image_zcxy: np.ndarray | None = None
    ) -> None:
        """Choose the next centre ``(z, x, y)`` from the label (and the image, to stay inside the brain)."""
        counts = (
            np.asarray(foreground_per_slice, dtype=np.float64)
            if foreground_per_slice is not None
            else np.count_nonzero(np.asarray(label_zxy).reshape(label_zxy.shape[0], -1), axis=1).astype(np.float64)
        )
        if counts.sum() > 0 and self.R.random_sample() < self.pos_fraction:
            z = int(self.R.choice(len(counts), p=counts / counts.sum()))
            tumour = np.flatnonzero(np.asarray(label_zxy[z]))
            if tumour.size:
                x, y = np.unravel_index(int(tumour[self.R.randint(tumour.size)]), label_zxy.shape[1:])
                self.centre, self.centre_is_tumour = (z, int(x), int(y)), True
                return
        self.centre, self.centre_is_tumour = self._background_centre(label_zxy, image_zcxy), False

    def _background_centre(self, label_zxy: np.ndarray, image_zcxy: np.ndarray | None) -> tuple[int, int, int]:
        shape = label_zxy.shape
        fallback = None
        for _ in range(NEGATIVE_TRIES):
            z, x, y = (int(self.R.randint(n)) for n in shape)
            if label_zxy[z, x, y] != 0:
                continue
            if image_zcxy is None or np.any(np.asarray(image_zcxy[z, :, x, y]) != 0):
                return z, x, y
            fallback = fallback or (z, x, y)
        return fallback or (int(self.R.randint(shape[0])), int(self.R.randint(shape[1])), int(self.R.randint(shape[2])))

    def __call__(  # type: ignore[override]
        self,
        volume: np.ndarray,
        label_zxy: np.ndarray | None = None,
        foreground_per_slice: Sequence[int] | None = None,
        randomize: bool = True,
    ) -> np.ndarray:
        """Crop ``volume`` (``(Z, C, X, Y)`` or ``(Z, X, Y)``) around a new centre, or the last one if ``randomize=False``."""
        if randomize:
            if label_zxy is None:
                raise ConfigError("label", "a label is needed to choose a tumour-aware patch centre")
            self.randomize(label_zxy, foreground_per_slice, volume if volume.ndim == 4 else None)
        return read_patch(volume, self.centre, self.patch_size)


class RandPosNegPatchd(Randomizable, MapTransform):
    """Dictionary wrapper of :class:`RandPosNegPatch`: one centre per sample, the same patch for every key.

    Args:
        keys: keys of slice-major volumes to crop (image ``(Z, C, X, Y)``, label ``(Z, X, Y)``).
        label_key: key of the ``(Z, X, Y)`` label used to choose centres.
        patch_size: ``(px, py, pz)`` or one int.
        pos_fraction: probability of a tumour-centred patch.
        foreground_key: key of the per-slice tumour voxel counts (``meta.json``'s
            ``foreground_per_slice``); counted from the label when absent.
        image_key: key of the image used to keep background centres inside the brain.
        allow_missing_keys: do not raise if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "label",
        patch_size: Sequence[int] | int = 128,
        pos_fraction: float = 0.6,
        foreground_key: str = "foreground_per_slice",
        image_key: str | None = "image",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.label_key = label_key
        self.foreground_key = foreground_key
        self.image_key = image_key
        self.cropper = RandPosNegPatch(patch_size, pos_fraction)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandPosNegPatchd:
        super().set_random_state(seed, state)
        self.cropper.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        d = data
        image = d.get(self.image_key) if self.image_key is not None else None
        self.cropper.randomize(d[self.label_key], d.get(self.foreground_key), image)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(d)
        for key in self.key_iterator(d):
            d[key] = self.cropper(d[key], randomize=False)
        d["patch_centre_zxy"] = np.asarray(self.cropper.centre, dtype=np.int64)
        d.pop(self.foreground_key, None)
        return d
