"""The Kaggle LGG layout: patient folders of numbered TIFF slices, one case per patient."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from planar_cases import KAGGLE_PATIENT, REAL_SLICES, kaggle_patient, kaggle_root, mask_voxels, write_image

from pipeline.datasets import discover, layout_task, validate_case
from pipeline.datasets.kaggle_lgg import list_slices
from pipeline.datasets.reading import read_case, source_manifest
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.io import read_image_2d
from pipeline.tasks.task import KAGGLE_LGG, get_task


def test_discovery_recognises_the_layout_and_picks_its_task(tmp_path: Path) -> None:
    root = kaggle_root(tmp_path / "kaggle_3m")
    assert layout_task(root) == KAGGLE_LGG
    dataset = discover(root)
    assert dataset.release == "kaggle-lgg" and dataset.label_convention == "mask255"
    assert [r.case_id for r in dataset.records] == ["TCGA_AB_0001_20000101", "TCGA_AB_0002_20000102"]
    record = dataset.records[0]
    assert record.layout == "kaggle-lgg" and record.images == (root / KAGGLE_PATIENT,) and record.channel_indices == (0, 1, 2)
    assert record.channels == ("pre", "flair", "post") and dataset.problems == {}


def test_slices_are_ordered_numerically_into_one_volume(tmp_path: Path) -> None:
    folder = kaggle_patient(tmp_path, slices=11)
    slices, problems = list_slices(folder)
    assert problems == [] and [s.number for s in slices] == list(range(1, 12))  # 10 and 11 after 9
    (record,) = discover(tmp_path).records
    volumes = read_case(record, KAGGLE_LGG)
    assert len(volumes.channels) == 3 and volumes.channels[0].shape == (16, 16, 11)
    for z in (8, 9, 10):
        rgb = read_image_2d(folder / f"{KAGGLE_PATIENT}_{z + 1}.tif")
        assert all(np.array_equal(volumes.channels[c][:, :, z], rgb[..., c]) for c in range(3))
        assert np.array_equal(volumes.label[:, :, z], mask_voxels(16, 16, z + 1))
    assert len(source_manifest(record)["files"]) == 22


def test_a_channel_subset_reads_those_components(tmp_path: Path) -> None:
    kaggle_patient(tmp_path, slices=3)
    task = get_task("kaggle-lgg").with_channels(["flair"])
    (record,) = discover(tmp_path, task).records
    assert record.channel_indices == (1,) and validate_case(record, task=task) == []
    rgb = read_image_2d(tmp_path / KAGGLE_PATIENT / f"{KAGGLE_PATIENT}_2.tif")
    assert np.array_equal(read_case(record, task).channels[0][:, :, 1], rgb[..., 1])


def test_masks_of_zero_and_one_are_accepted(tmp_path: Path) -> None:
    kaggle_patient(tmp_path, slices=4, value=1)
    (record,) = discover(tmp_path).records
    assert validate_case(record, task=KAGGLE_LGG) == []


def test_a_brats_task_on_kaggle_slices_is_a_clear_error(tmp_path: Path) -> None:
    kaggle_patient(tmp_path, slices=2)
    with pytest.raises(ConfigError, match="use --task kaggle-lgg"):
        discover(tmp_path, get_task("brats-glioma"))


def test_one_patient_folder_as_the_root_is_refused_with_a_hint(tmp_path: Path) -> None:
    folder = kaggle_patient(tmp_path, slices=2)
    with pytest.raises(InputError, match="one Kaggle LGG patient folder"):
        discover(folder)


@pytest.mark.parametrize(
    ("damage", "named", "pattern"),
    [
        ("no_mask", f"{KAGGLE_PATIENT}_3.tif", "slice 3 has no mask"),
        ("no_image", f"{KAGGLE_PATIENT}_3_mask.tif", "mask of slice 3 has no image"),
        ("gap", "", r"slice number\(s\) 3 missing"),
        ("size", f"{KAGGLE_PATIENT}_4.tif", "slice 20x16 differs"),
        ("values", f"{KAGGLE_PATIENT}_2_mask.tif", r"labels \[128\]"),
        ("unreadable", f"{KAGGLE_PATIENT}_2.tif", "cannot read image"),
        ("empty", f"{KAGGLE_PATIENT}_2_mask.tif", "file is empty"),
    ],
)
def test_validation_names_the_bad_file(tmp_path: Path, damage: str, named: str, pattern: str) -> None:
    folder = kaggle_patient(tmp_path, slices=5)
    prefix = folder / KAGGLE_PATIENT
    if damage == "no_mask":
        Path(f"{prefix}_3_mask.tif").unlink()
    elif damage == "no_image":
        Path(f"{prefix}_3.tif").unlink()
    elif damage == "gap":
        Path(f"{prefix}_3.tif").unlink()
        Path(f"{prefix}_3_mask.tif").unlink()
    elif damage == "size":
        write_image(Path(f"{prefix}_4.tif"), np.ones((20, 16, 3), np.uint8))
    elif damage == "values":
        write_image(Path(f"{prefix}_2_mask.tif"), np.full((16, 16), 128, np.uint8))
    elif damage == "unreadable":
        Path(f"{prefix}_2.tif").write_bytes(b"not a tiff")
    else:
        Path(f"{prefix}_2_mask.tif").write_bytes(b"")
    (record,) = discover(tmp_path).records
    problems = validate_case(record, task=KAGGLE_LGG)
    where = folder / named if named else folder
    assert problems and problems[0].startswith(f"{where}: ") and "\n" not in problems[0]
    assert any(re.search(pattern, line) for line in problems), problems


@pytest.mark.real_data
def test_the_real_patients_are_ten_cases_with_their_slice_counts(kaggle_lgg_dir: Path) -> None:
    dataset = discover(kaggle_lgg_dir)
    assert {r.case_id: len(list_slices(r.images[0])[0]) for r in dataset.records} == REAL_SLICES


def test_a_patient_without_masks_is_unlabelled_and_one_folder_or_image_reads_for_inference(tmp_path: Path) -> None:
    from planar_cases import image_pairs

    from pipeline.datasets import discover_case

    kaggle_patient(tmp_path / "lgg", slices=3)
    unlabelled = kaggle_patient(tmp_path / "lgg", "TCGA_AB_0009_20000109", slices=4)
    for mask in unlabelled.glob("*_mask.tif"):
        mask.unlink()
    by_id = {r.case_id: r for r in discover(tmp_path / "lgg").records}
    record = by_id["TCGA_AB_0009_20000109"]
    assert record.label is None and record.split == "unlabelled" and validate_case(record, task=KAGGLE_LGG) == []
    volumes = read_case(record, KAGGLE_LGG)
    assert volumes.label is None and volumes.channels[0].shape == (16, 16, 4) and len(volumes.source["files"]) == 4
    assert discover_case(unlabelled) == record
    image = image_pairs(tmp_path / "pairs", rgb=True) / "images" / "b.png"
    single = discover_case(image)
    assert single.case_id == "b" and single.label is None and single.channel_indices == (0, 1, 2) and single.layout == "image-2d"


def test_a_listed_patient_whose_masks_are_gone_is_refused_and_an_unlabelled_one_preprocesses(tmp_path: Path) -> None:
    from pipeline.preprocessing.prepare import prepare_case

    folder = kaggle_patient(tmp_path, slices=3)
    (record,) = discover(tmp_path).records
    for mask in folder.glob("*_mask.tif"):
        mask.unlink()
    assert validate_case(record, task=KAGGLE_LGG) == [f"{folder}: no mask found; the data list expects this patient's masks"]
    (unlabelled,) = discover(tmp_path).records
    prepared = prepare_case(unlabelled, task=KAGGLE_LGG)
    assert prepared.label is None and prepared.image.shape[1] == 3 and prepared.meta["original"]["slices"][0]["mask"] is None
