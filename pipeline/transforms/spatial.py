"""Centre padding/cropping to a fixed size, cheap enough to run on every training sample.

MONAI's ``ResizeWithPadOrCrop`` gives the same result but converts to a tensor and tracks the
transform for inversion, about 1 ms per 2.5D sample against about 0.1 ms for a slice copy here.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from pipeline.core.errors import ConfigError

__all__ = ["CentrePadCrop", "CentrePadCropd", "centre_windows"]


ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def centre_windows(shape: Sequence[int], size: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Source and destination windows of a centred pad-or-crop, as MONAI computes them.

    A crop starts at ``n // 2 - s // 2`` (``CenterSpatialCrop``); a pad puts ``(s - n) // 2`` in
    front (``SpatialPad(method="symmetric")``).
    """
    source, target = [], []
    for n, s in zip(shape, size):
        if n >= s:
            start = n // 2 - s // 2
            source.append(slice(start, start + s))
            target.append(slice(0, s))
        else:
            before = (s - n) // 2
            source.append(slice(0, n))
            target.append(slice(before, before + n))
    return tuple(source), tuple(target)


class CentrePadCrop(Transform):
    """Array transform: zero-pad or centre-crop the spatial axes of a channel-first array to ``spatial_size``.

    Args:
        spatial_size: the output's spatial shape.
    """

    def __init__(self, spatial_size: Sequence[int]) -> None:
        self.spatial_size = tuple(int(s) for s in spatial_size)
        if any(s < 1 for s in self.spatial_size):
            raise ConfigError("spatial_size", f"sizes must be positive, got {self.spatial_size}")

    def __call__(self, img: ArrayT) -> ArrayT:
        """Return ``img`` ``(C, *spatial)`` as ``(C, *spatial_size)``, same type and dtype."""
        spatial = tuple(img.shape[1:])
        if len(spatial) != len(self.spatial_size):
            raise ConfigError("spatial_size", f"{len(self.spatial_size)} sizes for an image with spatial shape {spatial}")
        if spatial == self.spatial_size:
            return img
        source, target = centre_windows(spatial, self.spatial_size)
        shape = (img.shape[0],) + self.spatial_size
        if isinstance(img, torch.Tensor):
            out = img.new_zeros(shape)
        else:
            out = np.zeros(shape, dtype=img.dtype)
        out[(slice(None),) + target] = img[(slice(None),) + source]
        return out


class CentrePadCropd(MapTransform):
    """Dictionary wrapper of :class:`CentrePadCrop`.

    Args:
        keys: keys of the channel-first arrays to pad or crop.
        spatial_size: the output's spatial shape.
        allow_missing_keys: do not raise if a key is missing.
    """

    def __init__(self, keys: KeysCollection, spatial_size: Sequence[int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.padder = CentrePadCrop(spatial_size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.padder(d[key])
        return d
