"""2D image/mask folders: images/ + masks/, or NAME + NAME_mask side by side; one case per image."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from planar_cases import image_pairs, write_image

from pipeline.datasets import discover, layout_task, validate_case
from pipeline.datasets.image_folders import to_task_components
from pipeline.datasets.reading import read_case
from pipeline.core.errors import ConfigError
from pipeline.core.io import read_image_2d
from pipeline.tasks.task import IMAGE_MASK_2D, IMAGE_MASK_2D_RGB, get_task


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


def test_each_image_is_converted_to_the_tasks_components() -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 10, 10]]], np.uint8)
    assert np.array_equal(to_task_components(rgb, 1), np.array([[76, 150], [29, 10]], np.uint8))  # 0.299, 0.587, 0.114 of 255
    gray = np.array([[0, 7], [200, 65535]], np.uint16)
    assert to_task_components(gray, 1) is gray and np.array_equal(to_task_components(gray, 3), np.stack([gray] * 3, axis=2))
    assert np.array_equal(to_task_components(np.dstack([rgb, np.full((2, 2), 255, np.uint8)]), 3), rgb)  # constant alpha dropped
    with pytest.raises(ValueError, match="transparency channel that is not constant"):
        to_task_components(np.dstack([rgb, np.array([[0, 255], [255, 255]], np.uint8)]), 1)


def _mixed_folder(root: Path) -> Path:
    """Pairs a-c (grayscale, 16x16, 20x12, 10x18), then d RGB, e RGBA with constant alpha and f a palette PNG."""
    from PIL import Image

    image_pairs(root)
    colour = np.zeros((12, 14, 3), np.uint8)
    colour[2:10, 2:12] = [200, 40, 90]
    write_image(root / "images" / "d.png", colour)
    write_image(root / "images" / "e.png", np.dstack([colour, np.full((12, 14), 255, np.uint8)]))
    palette = Image.fromarray((colour.any(axis=2)).astype(np.uint8), mode="L").convert("P")
    palette.putpalette([0, 0, 0, 200, 40, 90] + [0] * 762)
    palette.save(root / "images" / "f.png")
    for name in "def":
        write_image(root / "masks" / f"{name}.png", (colour[..., 0] > 0).astype(np.uint8) * 255)
    return root


@pytest.mark.parametrize("task", [IMAGE_MASK_2D, IMAGE_MASK_2D_RGB], ids=lambda t: t.name)
def test_a_folder_mixing_grayscale_rgb_rgba_and_palette_images_is_read_with_the_tasks_channels(tmp_path: Path, task) -> None:
    from pipeline.datasets.datalist import build_datalist
    from pipeline.preprocessing.prepare import prepare_case

    root = _mixed_folder(tmp_path / "mixed")
    build_datalist(root, tmp_path / "list.json", folds=2, test_fraction=0.0, progress=False, task=task)  # refuses nothing
    records = {r.case_id: r for r in discover(root, task).records}
    luma = round(0.299 * 200 + 0.587 * 40 + 0.114 * 90)
    for name, record in records.items():
        assert validate_case(record, task=task) == [], name
        channels = read_case(record, task).channels
        assert len(channels) == task.num_channels and prepare_case(record, task=task).image.shape[1] == task.num_channels
        if name in "def":
            expected = [[luma]] if task is IMAGE_MASK_2D else [[200], [40], [90]]
            assert [np.unique(c[c > 0]).tolist() for c in channels] == expected, name
        elif task is IMAGE_MASK_2D_RGB:  # gray repeated
            assert np.array_equal(channels[0], channels[1]) and np.array_equal(channels[0], channels[2])


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
