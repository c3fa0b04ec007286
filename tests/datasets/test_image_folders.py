"""2D image/mask folders: images/ + masks/, or NAME + NAME_mask side by side; one case per image."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from planar_cases import image_pairs, write_image

from pipeline.datasets import discover, layout_task, validate_case
from pipeline.datasets.reading import read_case
from pipeline.errors import ConfigError
from pipeline.io import read_image_2d
from pipeline.tasks import IMAGE_MASK_2D, IMAGE_MASK_2D_RGB, get_task


@pytest.mark.parametrize("side_by_side", [False, True])
@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg"])
def test_both_layouts_give_one_case_per_image_at_its_own_size(tmp_path: Path, side_by_side: bool, suffix: str) -> None:
    root = image_pairs(tmp_path / "pairs", side_by_side=side_by_side, suffix=suffix, value=1 if suffix == ".tif" else 255)
    if suffix == ".jpg":  # JPG is lossy: masks beside JPG images are PNG
        for mask in root.rglob("*.jpg"):
            if mask.parent.name == "masks" or mask.stem.endswith("_mask"):
                write_image(mask.with_suffix(".png"), (read_image_2d(mask) > 127).astype(np.uint8) * 255)
                mask.unlink()
    assert layout_task(root) == IMAGE_MASK_2D
    dataset = discover(root)
    assert dataset.release == "image-mask-2d" and dataset.problems == {}
    assert [r.case_id for r in dataset.records] == ["a", "b", "c"]
    shapes = []
    for record in dataset.records:
        assert record.layout == "image-2d" and record.channel_indices is None
        assert validate_case(record, task=IMAGE_MASK_2D) == []
        volumes = read_case(record, IMAGE_MASK_2D)
        shapes.append(volumes.channels[0].shape)
        assert np.array_equal(volumes.channels[0][:, :, 0], read_image_2d(record.images[0]))
    assert shapes == [(16, 16, 1), (20, 12, 1), (10, 18, 1)]


def test_rgb_images_pick_the_rgb_task_and_its_components(tmp_path: Path) -> None:
    root = image_pairs(tmp_path / "rgb", rgb=True)
    assert layout_task(root) == IMAGE_MASK_2D_RGB
    record = discover(root).records[1]
    assert record.channel_indices == (0, 1, 2) and validate_case(record, task=IMAGE_MASK_2D_RGB) == []
    volumes = read_case(record, IMAGE_MASK_2D_RGB)
    assert np.array_equal(volumes.channels[2][:, :, 0], read_image_2d(record.images[0])[..., 2])
    green = IMAGE_MASK_2D_RGB.with_channels(["green"])
    assert discover(root, green).records[0].channel_indices == (1,)


def test_an_rgb_image_under_the_grayscale_task_is_refused(tmp_path: Path) -> None:
    root = image_pairs(tmp_path / "rgb", rgb=True)
    record = discover(root, IMAGE_MASK_2D).records[0]
    (problem,) = validate_case(record, task=IMAGE_MASK_2D)
    assert problem.startswith(f"{record.images[0]}: image has 3 colour components") and "image-mask-2d-rgb" in problem


def test_a_brats_task_on_image_folders_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="use --task image-mask-2d"):
        discover(image_pairs(tmp_path / "pairs"), get_task("brats-glioma"))


@pytest.mark.parametrize("side_by_side", [False, True])
def test_unpaired_files_are_problems_naming_the_file(tmp_path: Path, side_by_side: bool) -> None:
    root = image_pairs(tmp_path / "pairs", side_by_side=side_by_side)
    lonely_image = write_image(root / ("d.png" if side_by_side else "images/d.png"), np.ones((8, 8), np.uint8))
    lonely_mask = write_image(root / ("e_mask.png" if side_by_side else "masks/e.png"), np.zeros((8, 8), np.uint8))
    dataset = discover(root)
    assert [r.case_id for r in dataset.records] == ["a", "b", "c"]
    assert dataset.problems["d"][0].startswith(f"{lonely_image}: image without a mask")
    assert dataset.problems["e"][0].startswith(f"{lonely_mask}: mask without an image")


@pytest.mark.parametrize(
    ("damage", "pattern"),
    [
        ("mask_size", r"masks?/?b(_mask)?\.png: mask 12x20 differs from image b\.png's 20x12"),
        ("not_binary", r"b(_mask)?\.png: labels \[7\]"),
        ("unreadable", r"b\.png: cannot read image"),
        ("empty", r"b\.png: file is empty"),
        ("too_large", r"b\.png: image 600x16 is larger than task image-mask-2d's planar_size 512x512"),
    ],
)
def test_validation_names_the_bad_file(tmp_path: Path, damage: str, pattern: str) -> None:
    root = image_pairs(tmp_path / "pairs")
    image, mask = root / "images" / "b.png", root / "masks" / "b.png"
    if damage == "mask_size":
        write_image(mask, np.zeros((12, 20), np.uint8))
    elif damage == "not_binary":
        write_image(mask, np.full((20, 12), 7, np.uint8))
    elif damage == "unreadable":
        image.write_bytes(b"\x89PNG broken")
    elif damage == "empty":
        image.write_bytes(b"")
    else:
        write_image(image, np.ones((600, 16), np.uint8))
        write_image(mask, np.zeros((600, 16), np.uint8))
    record = discover(root).records[1]
    (problem,) = validate_case(record, task=IMAGE_MASK_2D)
    assert re.search(pattern, problem) and "\n" not in problem, problem


@pytest.mark.real_data
def test_the_real_png_pairs_are_sixty_one_slice_cases(png_pairs_dir: Path) -> None:
    dataset = discover(png_pairs_dir)
    assert len(dataset.records) == 60 and dataset.problems == {} and layout_task(png_pairs_dir) == IMAGE_MASK_2D
    assert validate_case(dataset.records[0], task=IMAGE_MASK_2D) == []
    assert read_case(dataset.records[0], IMAGE_MASK_2D).channels[0].shape == (512, 512, 1)
