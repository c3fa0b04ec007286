"""Centre pad/crop: the same result as MONAI's ResizeWithPadOrCrop, for numpy and torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import ResizeWithPadOrCrop

from pipeline.core.errors import ConfigError
from pipeline.transforms import CentrePadCrop, CentrePadCropd


@pytest.mark.parametrize("shape", [(7, 9), (16, 16), (21, 10), (3, 30)])
@pytest.mark.parametrize("size", [(16, 16), (15, 11), (8, 20)])
def test_matches_monai(shape: tuple[int, int], size: tuple[int, int]) -> None:
    image = np.random.default_rng(0).normal(size=(3, *shape)).astype(np.float32)
    expected = np.asarray(ResizeWithPadOrCrop(size)(image))
    out = CentrePadCrop(size)(image)
    assert isinstance(out, np.ndarray) and out.shape == (3, *size)
    np.testing.assert_array_equal(out, expected)
    out_t = CentrePadCrop(size)(torch.from_numpy(image))
    assert isinstance(out_t, torch.Tensor)
    np.testing.assert_array_equal(out_t.numpy(), expected)


def test_three_dimensional_and_dtype_kept() -> None:
    labels = np.random.default_rng(1).integers(0, 4, size=(1, 5, 8, 9)).astype(np.uint8)
    out = CentrePadCrop((6, 6, 6))(labels)
    assert out.dtype == np.uint8 and out.shape == (1, 6, 6, 6)
    np.testing.assert_array_equal(out, np.asarray(ResizeWithPadOrCrop((6, 6, 6))(labels)).astype(np.uint8))


def test_dictionary_and_errors() -> None:
    data = {"image": np.ones((2, 4, 4), np.float16), "label": np.ones((1, 4, 4), np.uint8)}
    out = CentrePadCropd(keys=("image", "label"), spatial_size=(6, 2))(data)
    assert out["image"].shape == (2, 6, 2) and out["label"].shape == (1, 6, 2)
    assert out["image"][:, 0].sum() == 0 and out["image"][:, 1].sum() == 4
    with pytest.raises(ConfigError):
        CentrePadCrop((4, 4, 4))(np.ones((1, 4, 4)))
    with pytest.raises(ConfigError):
        CentrePadCrop((0, 4))
