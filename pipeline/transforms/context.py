"""2.5D context stacking: a slice and its ``k`` neighbours on each side as one multi-channel image.

:func:`stack_context` is the one implementation of the stacking. Training samples
(:class:`StackContextd`) and whole-volume inference both call it, so the input a network sees
at inference is built exactly as in training.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from pipeline.core.errors import ConfigError

__all__ = ["CONTEXT_PADDINGS", "ContextPadding", "StackContext", "StackContextd", "context_indices", "stack_context"]


ContextPadding = Literal["replicate", "reflect"]
CONTEXT_PADDINGS: tuple[str, ...] = ("replicate", "reflect")

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def context_indices(
    slice_indices: int | Sequence[int] | np.ndarray, depth: int, context: int, padding: ContextPadding = "replicate"
) -> np.ndarray:
    """The slice numbers a 2.5D stack reads, one row per centre slice.

    Args:
        slice_indices: centre slice numbers, each in ``[0, depth)``.
        depth: number of slices in the volume.
        context: ``k``, neighbours taken on each side of the centre.
        padding: how slices beyond the volume are filled: ``"replicate"`` repeats the border
            slice (-1 -> 0), ``"reflect"`` mirrors about it without repeating it (-1 -> 1), as
            ``numpy.pad(mode="reflect")`` does.

    Returns:
        An int64 array ``(N, 2k+1)`` of slice numbers ordered ``z-k .. z+k``.
    """
    if padding not in CONTEXT_PADDINGS:
        raise ConfigError("padding", f"unknown 2.5D border padding {padding!r}; expected one of {', '.join(CONTEXT_PADDINGS)}")
    if context < 0:
        raise ConfigError("context", f"must be >= 0, got {context}")
    centres = np.atleast_1d(np.asarray(slice_indices, dtype=np.int64))
    if centres.ndim != 1:
        raise ConfigError("slice_indices", f"expected a sequence of slice numbers, got shape {centres.shape}")
    if centres.size and (centres.min() < 0 or centres.max() >= depth):
        raise ConfigError("slice_indices", f"slice numbers must lie in [0, {depth}), got {centres.min()}..{centres.max()}")
    rows = centres[:, None] + np.arange(-context, context + 1, dtype=np.int64)[None, :]
    if padding == "replicate" or depth == 1:
        return np.clip(rows, 0, depth - 1)
    # reflect: fold the index onto a period of 2*(depth-1), which also covers k >= depth
    period = 2 * (depth - 1)
    rows = np.mod(rows, period)
    return np.where(rows >= depth, period - rows, rows)


def stack_context(
    volume_zcxy: ArrayT, slice_indices: int | Sequence[int] | np.ndarray, context: int, padding: ContextPadding = "replicate"
) -> ArrayT:
    """Stack each centre slice with its ``k`` neighbours per side as channels, in one gather.

    Works on numpy arrays (memory maps included: only the needed slices are read) and torch
    tensors (on any device); the result has the input's type and dtype.

    Args:
        volume_zcxy: a slice-major volume ``(Z, C, X, Y)``, or ``(Z, X, Y)`` read as ``C = 1``.
        slice_indices: centre slice numbers (an int gives ``N = 1``).
        context: ``k``, neighbours on each side (0 gives plain 2D slices).
        padding: ``"replicate"`` or ``"reflect"`` for neighbours beyond the volume, see
            :func:`context_indices`.

    Returns:
        ``(N, C*(2k+1), X, Y)``, channels ordered slice ``z-k`` (its C channels), ..., slice ``z+k``.
    """
    if volume_zcxy.ndim not in (3, 4):
        raise ConfigError("volume", f"expected a (Z, C, X, Y) or (Z, X, Y) volume, got shape {tuple(volume_zcxy.shape)}")
    depth = int(volume_zcxy.shape[0])
    rows = context_indices(slice_indices, depth, context, padding)
    flat = rows.reshape(-1)
    if isinstance(volume_zcxy, torch.Tensor):
        gathered = volume_zcxy[torch.from_numpy(flat).to(volume_zcxy.device)]
    else:
        gathered = np.asarray(volume_zcxy[flat])  # fancy indexing a memmap reads just these slices
    spatial = tuple(volume_zcxy.shape[-2:])
    return gathered.reshape((rows.shape[0], -1) + spatial)


class StackContext(Transform):
    """Array transform: the 2.5D stack around one slice of a slice-major volume.

    Args:
        context: ``k``, neighbours on each side; ``0`` takes the slice alone (2D).
        padding: ``"replicate"`` (default) or ``"reflect"`` at the volume's borders.
    """

    def __init__(self, context: int = 2, padding: ContextPadding = "replicate") -> None:
        context_indices(0, 1, context, padding)  # validates the arguments once
        self.context = context
        self.padding = padding

    def __call__(self, volume_zcxy: ArrayT, slice_index: int) -> ArrayT:
        """Return ``(C*(2k+1), X, Y)`` for the centre slice ``slice_index``."""
        return stack_context(volume_zcxy, int(slice_index), self.context, self.padding)[0]


class StackContextd(MapTransform):
    """Dictionary wrapper of :class:`StackContext`; the centre slice number is read from ``index_key``.

    Use ``context=0`` on the label to take the centre slice as a one-channel ``(1, X, Y)`` map.

    Args:
        keys: keys of the slice-major volumes to stack.
        index_key: key of the centre slice number.
        context: ``k``, neighbours on each side.
        padding: ``"replicate"`` or ``"reflect"``.
        allow_missing_keys: do not raise if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        index_key: str = "slice_index",
        context: int = 2,
        padding: ContextPadding = "replicate",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.index_key = index_key
        self.stacker = StackContext(context, padding)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.stacker(d[key], d[self.index_key])
        return d
