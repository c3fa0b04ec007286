"""NIfTI export keeps the input's geometry exactly (nibabel and SimpleITK), colour tables, file names."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from case_writers import LAYOUTS, canonical_case, stored, write_nifti
from prediction_cases import assert_same_geometry

from pipeline.inference.writers import (
    NIFTI_INTENT_LABEL,
    colour_table_text,
    parse_colour_table,
    probability_filename,
    same_geometry,
    segmentation_filename,
    write_colour_table,
    write_probabilities,
    write_segmentation,
)
from pipeline.tasks.labels import CONVENTIONS, get_convention


def _reference(tmp_path: Path, layout: str) -> tuple[Path, np.ndarray]:
    modalities, labels = canonical_case()
    data, affine, qcode, scode = stored(layout, modalities["flair"])
    path = write_nifti(tmp_path / f"{layout}_flair.nii.gz", data, affine, qcode, scode)
    return path, stored(layout, labels)[0]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_segmentation_has_the_reference_geometry(tmp_path, layout):
    reference, labels = _reference(tmp_path, layout)
    out = write_segmentation(labels, reference, tmp_path / "out" / "case_seg.nii.gz", get_convention("brats2017"))
    assert_same_geometry(out, reference)
    assert same_geometry(nib.load(out), nib.load(reference)) == []
    image = nib.load(out)
    assert image.get_data_dtype() == np.uint8
    assert image.header["intent_code"] == NIFTI_INTENT_LABEL
    slope, inter = image.header.get_slope_inter()
    assert slope is None and inter is None
    voxels = np.asarray(image.dataobj)
    assert set(np.unique(voxels)) == {0, 1, 2, 4}
    np.testing.assert_array_equal(get_convention("brats2017").to_internal(voxels), labels)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))).T, voxels)
    assert [p.name for p in out.parent.iterdir()] == ["case_seg.nii.gz"]  # no temporary file left


def test_scaled_float_reference_gives_unscaled_uint8(tmp_path):
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    image = nib.Nifti1Image(np.ones((6, 5, 4), np.float32), affine)
    image.header.set_slope_inter(2.0, 10.0)
    image.header.set_data_dtype(np.int16)
    nib.save(image, tmp_path / "ref.nii.gz")
    labels = np.zeros((6, 5, 4), np.uint8)
    labels[1, 1, 1] = 3
    out = write_segmentation(labels, tmp_path / "ref.nii.gz", tmp_path / "seg.nii.gz", get_convention("brats2023"))
    written = nib.load(out)
    assert written.get_data_dtype() == np.uint8
    assert written.dataobj.slope == 1.0 and written.dataobj.inter == 0.0
    assert np.asarray(written.dataobj)[1, 1, 1] == 3 and np.asarray(written.dataobj).sum() == 3


def test_4d_reference_gives_a_3d_segmentation_on_its_grid(tmp_path):
    modalities, labels = canonical_case()
    data, affine, qcode, scode = stored("lps", modalities["flair"])
    reference = write_nifti(tmp_path / "msd.nii.gz", np.stack([data] * 4, axis=-1), affine, qcode, scode)
    out = write_segmentation(stored("lps", labels)[0], reference, tmp_path / "msd_seg.nii.gz", get_convention("msd"))
    assert_same_geometry(out, reference)
    assert nib.load(out).ndim == 3
    assert set(np.unique(np.asarray(nib.load(out).dataobj))) == {0, 1, 2, 3}


def test_wrong_shape_is_refused(tmp_path):
    reference, labels = _reference(tmp_path, "lps")
    with pytest.raises(ValueError, match="do not match"):
        write_segmentation(labels[:-1], reference, tmp_path / "x.nii.gz", get_convention("internal"))
    assert not (tmp_path / "x.nii.gz").exists()


@pytest.mark.parametrize("layout", ["lps", "oblique"])
def test_probabilities_are_8_bit_scaled_channels_last_on_the_grid(tmp_path, layout):
    reference, labels = _reference(tmp_path, layout)
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(4), size=labels.shape).astype(np.float32)  # (X, Y, Z, 4)
    probabilities = np.moveaxis(probabilities, -1, 0)
    out = write_probabilities(probabilities, reference, tmp_path / probability_filename("case"))
    image = nib.load(out)
    assert image.get_data_dtype() == np.uint8 and 0 < image.dataobj.slope <= 1 / 255
    assert image.shape == (*labels.shape, 4)
    np.testing.assert_array_equal(image.affine, nib.load(reference).affine)
    read_back = np.moveaxis(image.get_fdata(), -1, 0)
    assert np.abs(read_back - probabilities).max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize("name", sorted(CONVENTIONS))
def test_colour_table_names_every_label_with_distinct_colours(tmp_path, name):
    convention = get_convention(name)
    path = write_colour_table(tmp_path / f"{name}.ctbl", convention)
    table = parse_colour_table(path.read_text())
    assert sorted(table) == sorted(convention.labels)
    for value, (label_name, rgba) in table.items():
        assert label_name == convention.names[value].replace(" ", "_")
        assert len(rgba) == 4 and all(0 <= c <= 255 for c in rgba)
    colours = [rgba[:3] for value, (_, rgba) in table.items() if value != 0]
    assert len(set(colours)) == 3
    assert table[0][1][3] == 0  # background transparent


def test_colour_table_uses_the_release_names():
    assert "4 ET " in colour_table_text(get_convention("brats2017"))
    assert "1 NCR/NET " in colour_table_text(get_convention("brats2017"))
    assert "2 SNFH " in colour_table_text(get_convention("brats2023"))
    assert "1 edema " in colour_table_text(get_convention("msd"))


def test_file_names():
    assert segmentation_filename("BraTS2021_00006") == "BraTS2021_00006_seg.nii.gz"
    assert segmentation_filename("BraTS-GLI-00001-000", submission_names=True) == "BraTS-GLI-00001-000.nii.gz"


# ---- tasks ------------------------------------------------------------------------------------
def test_colour_table_of_a_task_names_its_classes_in_its_colours():
    from pipeline.tasks.task import resolve_task
    from pipeline.tasks.labels import written_convention
    from pipeline.inference.writers import colour_table_filename

    task = resolve_task("brats2024-post-treatment")
    convention = written_convention(task, "brats2023")
    table = parse_colour_table(colour_table_text(convention, task))
    assert {value: name for value, (name, _) in table.items()} == {0: "background", 1: "NETC", 2: "SNFH", 3: "ET", 4: "RC"}
    assert table[4][1] == (*task.colour("RC"), 255) and table[0][1][3] == 0
    assert colour_table_filename(convention, task) == "brats2024-post-treatment_brats2023.ctbl"
    whole = resolve_task("whole-tumour", ["flair"])
    table = parse_colour_table(colour_table_text(written_convention(whole, "brats2017"), whole))
    assert {value: name for value, (name, _) in table.items()} == {0: "background", 1: "WT", 2: "WT", 4: "WT"}
    assert colour_table_filename(written_convention(whole, "brats2017"), whole) == "whole-tumour_brats2017.ctbl"


def test_the_glioma_task_writes_the_release_conventions():
    from pipeline.tasks.task import DEFAULT_TASK
    from pipeline.tasks.labels import written_convention

    for name in CONVENTIONS:
        assert written_convention(DEFAULT_TASK, name) is get_convention(name)
        assert colour_table_text(written_convention(DEFAULT_TASK, name), DEFAULT_TASK) == colour_table_text(get_convention(name))


@pytest.mark.parametrize(
    ("task", "convention", "written"),
    [
        ("whole-tumour", "brats2017", {0: 0, 1: 1}),
        ("whole-tumour", "brats2023", {0: 0, 1: 1}),
        ("brats2024-post-treatment", "brats2023", {0: 0, 1: 1, 2: 2, 3: 3, 4: 4}),
        ("brats2024-ped", "brats2024-ped", {0: 0, 1: 1, 2: 2, 3: 3, 4: 4}),
        ("meningioma-rt", "brats2024-men-rt", {0: 0, 1: 1}),
    ],
)
def test_labels_are_written_back_in_each_convention(tmp_path, task, convention, written):
    from pipeline.tasks.task import resolve_task
    from pipeline.tasks.labels import written_convention

    labels_convention = written_convention(resolve_task(task), convention)
    internal = np.array(sorted(written), np.uint8)
    assert labels_convention.from_internal(internal).tolist() == [written[v] for v in internal]
    assert labels_convention.to_internal(labels_convention.from_internal(internal)).tolist() == internal.tolist()


def test_planar_mask_names_mirror_kaggle_folders_and_put_2d_masks_in_masks():
    from pipeline.inference.writers import planar_mask_names

    slices = [Path("/data/kaggle_3m/TCGA_CS_4943_20000902") / f"TCGA_CS_4943_20000902_{n}.tif" for n in (1, 2, 10)]
    assert planar_mask_names("kaggle-lgg", "TCGA_CS_4943_20000902", slices) == [
        f"TCGA_CS_4943_20000902/TCGA_CS_4943_20000902_{n}_mask.tif" for n in (1, 2, 10)
    ]
    assert planar_mask_names("image-2d", "1021", [Path("/data/png_pairs/images/1021.jpg")]) == ["masks/1021.png"]


def test_planar_reference_has_unit_spacing_and_the_case_shape():
    from pipeline.inference.writers import planar_reference

    reference = planar_reference({"original": {"shape": [256, 256, 20]}})
    assert reference.shape == (256, 256, 20) and reference.header.get_zooms() == (1.0, 1.0, 1.0) and np.array_equal(reference.affine, np.eye(4))
