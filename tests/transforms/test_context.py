"""2.5D stacking: order, both borders for replicate and reflect, numpy/torch/memmap agreement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.core.errors import ConfigError
from pipeline.transforms import StackContext, StackContextd, context_indices, stack_context


def _volume(depth: int = 5, channels: int = 2) -> np.ndarray:
    """(Z, C, X, Y) where every voxel of slice z, channel c holds 10 * z + c."""
    values = 10 * np.arange(depth)[:, None] + np.arange(channels)[None, :]
    return np.broadcast_to(values[:, :, None, None], (depth, channels, 3, 2)).astype(np.float32).copy()


def _slice_order(stack: np.ndarray, channels: int = 2) -> list[int]:
    """The slice number of each C-channel block of one stacked sample."""
    return [int(stack[block * channels, 0, 0]) // 10 for block in range(stack.shape[0] // channels)]


@pytest.mark.parametrize(
    ("centre", "padding", "expected"),
    [
        (0, "replicate", [0, 0, 0, 1, 2]),
        (1, "replicate", [0, 0, 1, 2, 3]),
        (4, "replicate", [2, 3, 4, 4, 4]),
        (3, "replicate", [1, 2, 3, 4, 4]),
        (0, "reflect", [2, 1, 0, 1, 2]),
        (1, "reflect", [1, 0, 1, 2, 3]),
        (4, "reflect", [2, 3, 4, 3, 2]),
        (3, "reflect", [1, 2, 3, 4, 3]),
        (2, "reflect", [0, 1, 2, 3, 4]),
    ],
)
def test_borders_and_order(centre: int, padding: str, expected: list[int]) -> None:
    stack = stack_context(_volume(), [centre], context=2, padding=padding)
    assert stack.shape == (1, 10, 3, 2)
    assert _slice_order(stack[0]) == expected
    # channels stay in order inside each slice's block
    assert stack[0, 1::2, 0, 0].tolist() == [10 * z + 1 for z in expected]


@pytest.mark.parametrize("padding, numpy_mode", [("replicate", "edge"), ("reflect", "reflect")])
@pytest.mark.parametrize("depth", [1, 2, 3, 7])
@pytest.mark.parametrize("context", [0, 1, 2, 4])
def test_indices_match_numpy_pad(padding: str, numpy_mode: str, depth: int, context: int) -> None:
    if depth == 1 and numpy_mode == "reflect":
        numpy_mode = "edge"  # a single slice reflects onto itself
    padded = np.pad(np.arange(depth), context, mode=numpy_mode)
    rows = context_indices(np.arange(depth), depth, context, padding)
    expected = np.stack([padded[z : z + 2 * context + 1] for z in range(depth)])
    np.testing.assert_array_equal(rows, expected)


def test_numpy_torch_and_memmap_agree(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(9, 4, 6, 5)).astype(np.float16)
    np.save(tmp_path / "image.npy", volume)
    mapped = np.load(tmp_path / "image.npy", mmap_mode="r")
    centres = [0, 3, 8, 8]
    for padding in ("replicate", "reflect"):
        from_numpy = stack_context(volume, centres, 2, padding)
        from_memmap = stack_context(mapped, centres, 2, padding)
        from_torch = stack_context(torch.from_numpy(volume), centres, 2, padding)
        assert isinstance(from_torch, torch.Tensor) and from_torch.dtype == torch.float16
        assert from_numpy.shape == (4, 20, 6, 5)
        np.testing.assert_array_equal(from_numpy, from_memmap)
        np.testing.assert_array_equal(from_numpy, from_torch.numpy())
    # block j of the sample for centre 3 is slice 1 + j, all four channels
    stacked = stack_context(volume, [3], 2)[0]
    for block, z in enumerate(range(1, 6)):
        np.testing.assert_array_equal(stacked[4 * block : 4 * block + 4], volume[z])


def test_volume_without_channels_and_scalar_index() -> None:
    labels = np.arange(4)[:, None, None] * np.ones((4, 3, 3), np.uint8)
    out = stack_context(labels, 2, context=0)
    assert out.shape == (1, 1, 3, 3) and out.dtype == labels.dtype
    assert int(out[0, 0, 0, 0]) == 2
    assert stack_context(labels, [1], context=1).shape == (1, 3, 3, 3)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        stack_context(_volume(), [0], 2, padding="wrap")
    with pytest.raises(ConfigError):
        stack_context(_volume(), [5], 2)
    with pytest.raises(ConfigError):
        stack_context(_volume(), [0], -1)
    with pytest.raises(ConfigError):
        StackContext(2, padding="zeros")


def test_dictionary_transform() -> None:
    volume, labels = _volume(), np.arange(5)[:, None, None] * np.ones((5, 3, 2), np.uint8)
    data = {"image": volume, "label": labels, "slice_index": 0}
    out = StackContextd(keys="image", context=1, padding="reflect")(data)
    out = StackContextd(keys="label", context=0)(out)
    assert _slice_order(out["image"]) == [1, 0, 1]
    assert out["label"].shape == (1, 3, 2) and int(out["label"][0, 0, 0]) == 0
    assert out["slice_index"] == 0 and data["image"] is volume  # the input dict is left as it was
    single = StackContext(context=2)
    np.testing.assert_array_equal(single(volume, 2), stack_context(volume, [2], 2)[0])
