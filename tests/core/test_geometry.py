"""Exact reorientation, cropping and their inverse (pipeline.core.geometry)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from nibabel.affines import apply_affine
from nibabel.orientations import apply_orientation, io_orientation

from pipeline.core.geometry import (
    bounding_box,
    box_slices,
    cache_affine,
    invert_orientation,
    reorient_box,
    reoriented_shape,
    restore_to_original,
    to_cache_grid,
    voxel_orientation,
)


def all_orientations() -> list[np.ndarray]:
    """Every axis permutation with every combination of flips (48 voxel orders)."""
    return [
        np.array([[axis, flip] for axis, flip in zip(permutation, flips)])
        for permutation in itertools.permutations(range(3))
        for flips in itertools.product((1, -1), repeat=3)
    ]


def affine_of(ornt: np.ndarray, zooms=(1.0, 2.0, 3.0), offset=(5.0, -7.0, 11.0)) -> np.ndarray:
    """An affine whose voxel axes point along the world axes ``ornt`` names."""
    affine = np.zeros((4, 4))
    for axis, (target, flip) in enumerate(ornt):
        affine[target, axis] = flip * zooms[axis]
    affine[:3, 3] = offset
    affine[3, 3] = 1
    return affine


@pytest.mark.parametrize("ornt", all_orientations(), ids=lambda o: "".join(f"{a}{'+' if f > 0 else '-'}" for a, f in o))
def test_orientation_and_box_round_trip(ornt: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    source = rng.integers(0, 255, size=(5, 6, 7), dtype=np.uint8)
    assert np.array_equal(voxel_orientation(affine_of(ornt)), ornt)
    canonical = apply_orientation(source, ornt)
    assert canonical.shape == reoriented_shape(source.shape, ornt)
    assert np.array_equal(apply_orientation(canonical, invert_orientation(ornt)), source)
    source_box = [[1, 4], [0, 5], [2, 7]]
    mask = np.zeros(source.shape, dtype=bool)
    mask[box_slices(source_box)] = True
    canonical_box = reorient_box(source_box, source.shape, ornt)
    assert canonical_box == bounding_box(apply_orientation(mask, ornt))
    assert np.array_equal(canonical[box_slices(canonical_box)], apply_orientation(source[box_slices(source_box)], ornt))


@pytest.mark.parametrize("ornt", all_orientations()[::5])
def test_cache_affine_maps_cache_voxels_to_the_same_world_points(ornt: np.ndarray) -> None:
    affine = affine_of(ornt)
    shape = (5, 6, 7)
    crop_box = [[1, 3], [2, 5], [0, 4]]
    grid = cache_affine(affine, ornt, shape, crop_box)
    assert np.array_equal(io_orientation(grid), [[0, 1], [1, 1], [2, 1]])  # cache grid is RAS
    canonical_index = apply_orientation(np.indices(shape).transpose(1, 2, 3, 0), ornt)
    cropped = canonical_index[box_slices(crop_box)].reshape(-1, 3)
    cache_index = np.indices([high - low for low, high in crop_box]).reshape(3, -1).T
    np.testing.assert_allclose(apply_affine(grid, cache_index), apply_affine(affine, cropped))


def test_bounding_box_margin_is_clipped_to_the_grid() -> None:
    mask = np.zeros((10, 8, 6), dtype=bool)
    mask[1, 3, 2] = mask[4, 5, 3] = True
    assert bounding_box(mask) == [[1, 5], [3, 6], [2, 4]]
    assert bounding_box(mask, margin=2) == [[0, 7], [1, 8], [0, 6]]
    with pytest.raises(ValueError, match="empty"):
        bounding_box(np.zeros((3, 3, 3), dtype=bool))


def test_degenerate_affine_is_refused() -> None:
    affine = np.diag([1.0, 0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="degenerate"):
        voxel_orientation(affine)


def _meta(ornt: np.ndarray, shape: tuple[int, int, int], source_box: list[list[int]]) -> dict:
    crop_box = reorient_box(source_box, shape, ornt)
    return {"orientation": ornt.tolist(), "canonical_shape": list(reoriented_shape(shape, ornt)), "crop_box": crop_box}


def test_restore_pads_with_fill_and_keeps_leading_axes() -> None:
    ornt = np.array([[2, -1], [0, 1], [1, -1]])
    shape = (6, 5, 4)
    source_box = [[1, 5], [0, 3], [1, 4]]
    meta = _meta(ornt, shape, source_box)
    rng = np.random.default_rng(1)
    source = rng.random((2, *shape)).astype(np.float32)
    canonical = np.stack([apply_orientation(channel, ornt)[box_slices(meta["crop_box"])] for channel in source])
    on_cache_grid = np.moveaxis(canonical, -1, -3)  # (2, Z, X, Y)
    restored = restore_to_original(on_cache_grid, meta, fill=-1)
    assert restored.shape == source.shape and restored.dtype == np.float32 and restored.flags.c_contiguous
    inside = np.zeros(shape, dtype=bool)
    inside[box_slices(source_box)] = True
    assert np.array_equal(restored[:, inside], source[:, inside])
    assert np.all(restored[:, ~inside] == -1)


def test_restore_refuses_an_array_of_another_grid() -> None:
    meta = _meta(np.array([[0, 1], [1, 1], [2, 1]]), (4, 4, 4), [[0, 2], [0, 3], [0, 4]])
    with pytest.raises(ValueError, match="Z, X, Y"):
        restore_to_original(np.zeros((2, 3, 4)), meta)


#: Voxel orders of the inputs the pipeline meets: RAS, BraTS's LPS, and a permuted, flipped one.
SOURCE_ORIENTATIONS = {
    "ras": np.array([[0, 1], [1, 1], [2, 1]]),
    "lps": np.array([[0, -1], [1, -1], [2, 1]]),
    "permuted": np.array([[2, -1], [0, 1], [1, -1]]),
}


@pytest.mark.parametrize("name", SOURCE_ORIENTATIONS)
def test_to_cache_grid_is_the_exact_inverse_of_restore(name: str) -> None:
    ornt = SOURCE_ORIENTATIONS[name]
    shape = (7, 6, 5)
    source_box = [[1, 6], [0, 4], [2, 5]]
    meta = _meta(voxel_orientation(affine_of(ornt)), shape, source_box)
    rng = np.random.default_rng(2)
    source = rng.integers(1, 255, size=(2, *shape), dtype=np.uint8)
    on_cache_grid = to_cache_grid(source, meta)
    (x0, x1), (y0, y1), (z0, z1) = meta["crop_box"]
    assert on_cache_grid.shape == (2, z1 - z0, x1 - x0, y1 - y0)
    # the same voxels, in the same order, as the reorientation and crop done by hand
    canonical = np.stack([apply_orientation(channel, ornt)[box_slices(meta["crop_box"])] for channel in source])
    assert np.array_equal(on_cache_grid, np.moveaxis(canonical, -1, -3))
    # cache -> source -> cache is the identity; source -> cache -> source keeps every voxel of the crop
    assert np.array_equal(to_cache_grid(restore_to_original(on_cache_grid, meta), meta), on_cache_grid)
    inside = np.zeros(shape, dtype=bool)
    inside[box_slices(source_box)] = True
    restored = restore_to_original(on_cache_grid, meta)
    assert np.array_equal(restored[:, inside], source[:, inside]) and not restored[:, ~inside].any()
    assert np.array_equal(to_cache_grid(source[0], meta), on_cache_grid[0])  # a plain 3D volume


def test_to_cache_grid_refuses_an_array_of_another_grid() -> None:
    meta = _meta(np.array([[0, 1], [1, 1], [2, 1]]), (4, 4, 4), [[0, 2], [0, 3], [0, 4]])
    with pytest.raises(ValueError, match="X0, Y0, Z0"):
        to_cache_grid(np.zeros((4, 4, 5)), meta)


def test_a_padded_2d_case_is_unpadded_before_its_crop_is_restored():
    from pipeline.core.geometry import unpad

    meta = {
        "orientation": [[0, 1], [1, 1], [2, 1]],
        "canonical_shape": [5, 6, 1],
        "crop_box": [[1, 4], [0, 6], [0, 1]],
        "padding": {"size": [8, 8], "offset": [2, 1], "cropped_shape": [3, 6]},
    }
    cropped = np.arange(18, dtype=np.uint8).reshape(1, 3, 6) + 1
    padded = np.zeros((1, 8, 8), np.uint8)
    padded[:, 2:5, 1:7] = cropped
    assert np.array_equal(unpad(padded, meta), cropped) and unpad(cropped, meta) is cropped
    restored = restore_to_original(padded, meta)
    assert restored.shape == (5, 6, 1) and np.array_equal(restored, restore_to_original(cropped, meta))
    assert np.array_equal(restored[1:4, :, 0], cropped[0]) and not restored[0].any() and not restored[4].any()


def test_resized_planes_come_back_at_the_cropped_size_labels_nearest_and_scores_bilinear() -> None:
    from pipeline.core.geometry import from_planar_size, resize_planar

    meta = {"resizing": {"size": [8, 8], "cropped_shape": [30, 21]}}
    labels = np.zeros((2, 8, 8), np.uint8)
    labels[:, 2:6, 2:6] = 1
    back = from_planar_size(labels, meta)
    assert back.shape == (2, 30, 21) and back.dtype == np.uint8 and set(np.unique(back)) == {0, 1}
    scores = from_planar_size(np.stack([1.0 - labels, labels]).astype(np.float32), meta)
    assert scores.shape == (2, 2, 30, 21) and scores.dtype == np.float32 and 0 < len(np.unique(scores)) > 2  # interpolated
    assert np.array_equal(scores.argmax(0) == 1, back == 1) or np.mean((scores.argmax(0) == 1) != (back == 1)) < 0.05
    assert from_planar_size(back, meta) is back  # already at the cropped size
    image = resize_planar(np.ones((1, 1, 30, 21), np.float16), (8, 8))
    assert image.shape == (1, 1, 8, 8) and image.dtype == np.float16 and np.allclose(image, 1.0)
