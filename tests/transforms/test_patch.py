"""Tumour-aware 3D patches: axis order, padding, the positive-centre ratio, seeding."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.errors import ConfigError
from pipeline.transforms import RandPosNegPatch, RandPosNegPatchd, read_patch


def _case(depth: int = 30, width: int = 30, height: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """A (Z, C, X, Y) image that is non-zero inside a 'brain' box, and a (Z, X, Y) label with a tumour cube."""
    image = np.zeros((depth, 4, width, height), np.float16)
    image[3:-3, :, 3:-3, 3:-3] = 1
    label = np.zeros((depth, width, height), np.uint8)
    label[12:18, 12:18, 12:18] = np.random.default_rng(0).integers(1, 4, size=(6, 6, 6))
    return image, label


def test_patch_axes_are_channel_x_y_z() -> None:
    volume = np.arange(6 * 2 * 5 * 4, dtype=np.float32).reshape(6, 2, 5, 4)  # (Z, C, X, Y)
    patch = read_patch(volume, (3, 2, 2), (3, 2, 4))
    assert patch.shape == (2, 3, 2, 4)
    z0, x0, y0 = 1, 1, 1  # centre minus half the size, kept inside the volume
    for c, i, j, k in [(0, 0, 0, 0), (1, 2, 1, 3), (0, 1, 0, 2)]:
        assert patch[c, i, j, k] == volume[z0 + k, c, x0 + i, y0 + j]
    labels = np.arange(6 * 5 * 4).reshape(6, 5, 4)
    label_patch = read_patch(labels, (3, 2, 2), (3, 2, 4))
    assert label_patch.shape == (1, 3, 2, 4) and label_patch[0, 2, 1, 3] == labels[z0 + 3, x0 + 2, y0 + 1]


def test_patch_larger_than_volume_is_padded_symmetrically() -> None:
    volume = np.ones((4, 1, 5, 6), np.float16)
    patch = read_patch(volume, (2, 2, 3), (9, 6, 8))
    assert patch.shape == (1, 9, 6, 8) and patch.dtype == np.float16
    assert patch.sum() == 4 * 5 * 6
    assert patch[0, 2:7, :, 2:6].min() == 1 and patch[0, :2].max() == 0 and patch[0, :, :, :2].max() == 0


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.7, 1.0])
def test_positive_centre_fraction(ratio: float) -> None:
    image, label = _case()
    counts = np.count_nonzero(label, axis=(1, 2))
    sampler = RandPosNegPatch(patch_size=8, pos_fraction=ratio)
    sampler.set_random_state(0)
    draws = 1500
    positives = 0
    for _ in range(draws):
        sampler.randomize(label, counts, image)
        z, x, y = sampler.centre
        positives += bool(label[z, x, y])
        assert sampler.centre_is_tumour == bool(label[z, x, y])
        if not label[z, x, y]:
            assert image[z, :, x, y].any()  # background centres stay inside the brain
    assert abs(positives / draws - ratio) < 0.04


def test_case_without_tumour_gives_background_patches() -> None:
    image, label = _case()
    label[:] = 0
    sampler = RandPosNegPatch(8, pos_fraction=1.0)
    sampler.set_random_state(1)
    patch = sampler(label, label_zxy=label, foreground_per_slice=np.zeros(label.shape[0]))
    assert patch.shape == (1, 8, 8, 8) and not sampler.centre_is_tumour


def test_dictionary_transform_crops_image_and_label_alike_and_is_seeded() -> None:
    image, label = _case()
    image = image * (1 + np.arange(30, dtype=np.float16)[:, None, None, None])  # slice number in the values
    data = {"image": image, "label": label, "foreground_per_slice": np.count_nonzero(label, axis=(1, 2))}
    cropper = RandPosNegPatchd(keys=("image", "label"), patch_size=(8, 6, 4), pos_fraction=1.0)
    cropper.set_random_state(3)
    out = cropper(data)
    assert out["image"].shape == (4, 8, 6, 4) and out["label"].shape == (1, 8, 6, 4)
    assert "foreground_per_slice" not in out
    z, x, y = out["patch_centre_zxy"]
    assert label[z, x, y] > 0
    expected = read_patch(label, (z, x, y), (8, 6, 4))
    np.testing.assert_array_equal(out["label"], expected)
    np.testing.assert_array_equal(out["image"], read_patch(image, (z, x, y), (8, 6, 4)))
    again = RandPosNegPatchd(keys=("image", "label"), patch_size=(8, 6, 4), pos_fraction=1.0)
    again.set_random_state(3)
    np.testing.assert_array_equal(again(data)["patch_centre_zxy"], out["patch_centre_zxy"])


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        RandPosNegPatch(8, pos_fraction=1.5)
    with pytest.raises(ConfigError):
        RandPosNegPatch((8, 0, 8))
    with pytest.raises(ConfigError):
        RandPosNegPatch(8)(np.zeros((4, 4, 4)))  # no label to choose a centre from
