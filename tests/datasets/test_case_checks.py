import dataclasses
import gzip

import numpy as np
import pytest
from case_writers import LPS_AFFINE, SHAPE, brain, tumour, write_nifti

from pipeline.datasets import discover, validate_case, validate_cases
from pipeline.datasets.reading import read_case
from pipeline.core.errors import InputError
from pipeline.tasks.task import TASKS, resolve_task


def _record(root, case_id="BraTS2021_00003", task=None):
    return {r.case_id: r for r in discover(root, task).records}[case_id]


def _single_line_naming(problems, path):
    assert len(problems) == 1, problems
    (line,) = problems
    assert "\n" not in line and line.startswith(f"{path}: ")
    return line


def test_a_good_case_has_no_problem(legacy_root):
    assert validate_case(_record(legacy_root)) == []
    assert validate_case(_record(legacy_root, "BraTS2021_00100")) == []  # unlabelled


def test_missing_modality(legacy_root):
    path = legacy_root / "BraTS2021_00003" / "BraTS2021_00003_t1ce.nii.gz"
    path.unlink()
    assert _single_line_naming(validate_case(_record(legacy_root)), path).endswith("t1ce image missing")


def test_a_4d_modality_is_refused(legacy_root):
    path = legacy_root / "BraTS2021_00003" / "BraTS2021_00003_t2.nii.gz"
    write_nifti(path, np.stack([brain(0)] * 2, axis=-1))
    assert "expected a 3D volume, got shape (8, 8, 6, 2)" in _single_line_naming(validate_case(_record(legacy_root)), path)


def test_shape_mismatch(legacy_root):
    path = legacy_root / "BraTS2021_00003" / "BraTS2021_00003_flair.nii.gz"
    write_nifti(path, brain(0, shape=(8, 8, 5)))
    line = _single_line_naming(validate_case(_record(legacy_root)), path)
    assert "shape (8, 8, 5) differs from BraTS2021_00003_t1.nii.gz's (8, 8, 6)" in line


def test_affine_mismatch_beyond_the_tolerance_only(legacy_root):
    path = legacy_root / "BraTS2021_00003" / "BraTS2021_00003_t2.nii.gz"
    nudged = LPS_AFFINE.copy()
    nudged[0, 3] += 0.0005
    write_nifti(path, brain(0), nudged)
    assert validate_case(_record(legacy_root)) == []
    nudged[0, 3] += 0.5
    write_nifti(path, brain(0), nudged)
    line = _single_line_naming(validate_case(_record(legacy_root)), path)
    assert "affine differs from BraTS2021_00003_t1.nii.gz's by up to 0.5005 mm" in line


def _read_case_problem(record):
    with pytest.raises(InputError) as caught:
        read_case(record)
    return f"{caught.value.where}: {caught.value.problem}"


def test_reading_a_case_judges_its_grid_and_voxels_as_validation_does(legacy_root):
    path = legacy_root / "BraTS2021_00003" / "BraTS2021_00003_t2.nii.gz"
    nudged = LPS_AFFINE.copy()
    nudged[0, 3] += 0.0005  # within the one tolerance: the same grid for both
    write_nifti(path, brain(0), nudged)
    assert validate_case(_record(legacy_root)) == [] and len(read_case(_record(legacy_root)).channels) == 4
    nudged[0, 3] += 0.5
    write_nifti(path, brain(0), nudged)
    assert _read_case_problem(_record(legacy_root)) == _single_line_naming(validate_case(_record(legacy_root)), path)
    write_nifti(path, brain(0), LPS_AFFINE)
    data = brain(0).astype(np.float32)
    data[3, 3, 3] = np.nan
    write_nifti(path, data)
    assert _read_case_problem(_record(legacy_root)) == _single_line_naming(validate_case(_record(legacy_root)), path)


def test_seg_on_another_grid(legacy_root):
    path = legacy_root / "BraTS2021_00003" / "BraTS2021_00003_seg.nii.gz"
    write_nifti(path, tumour((1, 2, 4)), np.diag([1.0, 1.0, 1.0, 1.0]))
    assert "affine differs" in _single_line_naming(validate_case(_record(legacy_root)), path)


def test_non_finite_voxels(legacy_root):
    path = legacy_root / "BraTS2021_00003" / "BraTS2021_00003_t1.nii.gz"
    data = brain(0).astype(np.float32)
    data[3, 3, 3] = np.nan
    data[4, 4, 4] = np.inf
    write_nifti(path, data)
    assert _single_line_naming(validate_case(_record(legacy_root)), path).endswith("image has 2 non-finite voxel(s) (NaN or infinity)")


def test_an_all_zero_modality(legacy_root):
    path = legacy_root / "BraTS2021_00003" / "BraTS2021_00003_t1ce.nii.gz"
    write_nifti(path, np.zeros(SHAPE, dtype=np.int16))
    assert _single_line_naming(validate_case(_record(legacy_root)), path).endswith("image is entirely zero")


def test_a_truncated_file(legacy_root):
    path = legacy_root / "BraTS2021_00003" / "BraTS2021_00003_t2.nii.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    line = _single_line_naming(validate_case(_record(legacy_root)), path)
    assert "damaged or truncated" in line or "not a readable NIfTI" in line


def test_a_gzip_file_that_ends_early_in_the_voxels(legacy_root):
    path = legacy_root / "BraTS2021_00003" / "BraTS2021_00003_flair.nii.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: 352 + 40]))  # header intact, voxels cut short
    assert "cannot read voxels, file damaged or truncated" in _single_line_naming(validate_case(_record(legacy_root)), path)


def test_a_file_that_is_not_nifti(legacy_root):
    path = legacy_root / "BraTS2021_00003" / "BraTS2021_00003_t1.nii.gz"
    path.write_text("this is not an image")
    assert "not a readable NIfTI file" in _single_line_naming(validate_case(_record(legacy_root)), path)


def test_labels_outside_the_convention(legacy_root):
    path = legacy_root / "BraTS2021_00003" / "BraTS2021_00003_seg.nii.gz"
    write_nifti(path, tumour((1, 2, 3, 5)))
    line = _single_line_naming(validate_case(_record(legacy_root)), path)
    assert line.endswith("labels [3, 5] are not in the brats2017 convention [0, 1, 2, 4]")


def test_non_integer_labels(legacy_root):
    path = legacy_root / "BraTS2021_00003" / "BraTS2021_00003_seg.nii.gz"
    write_nifti(path, tumour((1, 2, 4)).astype(np.float32) * 1.5)
    assert "segmentation holds non-integer values [1.5]" in _single_line_naming(validate_case(_record(legacy_root)), path)


@pytest.mark.parametrize("seg", [tumour((1, 2, 3, 5)), tumour((1, 2, 4)).astype(np.float32) * 1.5])
def test_preprocess_and_evaluate_judge_labels_as_validation_does(legacy_root, seg):
    from pipeline.evaluation.evaluate import read_internal_labels
    from pipeline.preprocessing.prepare import prepare_case

    path = legacy_root / "BraTS2021_00003" / "BraTS2021_00003_seg.nii.gz"
    write_nifti(path, seg)
    record = _record(legacy_root)
    line = _single_line_naming(validate_case(record), path)
    with pytest.raises(InputError) as prepared:
        prepare_case(record)
    with pytest.raises(InputError) as evaluated:
        read_internal_labels(path, record.label_convention)
    assert str(prepared.value) == str(evaluated.value) == line


def test_resection_cavity_is_refused_unless_mapping_is_asked_for(tmp_path, cases):
    cases.brats2023(tmp_path, "BraTS-GLI-02000-100", labels=(0, 1, 2, 3, 4))
    record = discover(tmp_path).records[0]
    line = _single_line_naming(validate_case(record), record.label)
    assert "labels [4] are not in the brats2023 convention [0, 1, 2, 3]" in line
    assert "label 4 (the BraTS 2024 resection cavity)" in line and "--map-resection-cavity" in line
    assert validate_case(record, allow_resection_cavity=True) == []


def test_resection_cavity_is_a_class_of_the_post_treatment_task(tmp_path, cases):
    cases.brats2023(tmp_path, "BraTS-GLI-02000-100", labels=(0, 1, 2, 3, 4))
    task = TASKS["brats2024-post-treatment"]
    record = discover(tmp_path, task).records[0]
    assert validate_case(record, task=task) == []
    assert "or as a class with --task brats2024-post-treatment" in _single_line_naming(validate_case(record), record.label)
    cases.brats2023(tmp_path, "BraTS-GLI-02000-100", labels=(0, 1, 5))
    line = _single_line_naming(validate_case(record, task=task), record.label)
    assert line.endswith("labels [5] are not in the brats2023 convention of task brats2024-post-treatment [0, 1, 2, 3, 4]")


def test_a_missing_channel_of_the_task_is_refused_and_others_are_not_required(legacy_root):
    flair = legacy_root / "BraTS2021_00003" / "BraTS2021_00003_flair.nii.gz"
    flair.unlink()
    t1_only = resolve_task("whole-tumour", ["t1"])
    assert validate_case(_record(legacy_root, task=t1_only), task=t1_only) == []
    flair_only = resolve_task("whole-tumour", ["flair"])
    assert _single_line_naming(validate_case(_record(legacy_root, task=flair_only), task=flair_only), flair).endswith("flair image missing")


def test_a_label_outside_the_tasks_classes_is_refused(legacy_root):
    path = legacy_root / "BraTS2021_00003" / "BraTS2021_00003_seg.nii.gz"
    write_nifti(path, tumour((1, 3)))
    task = TASKS["whole-tumour"]
    line = _single_line_naming(validate_case(_record(legacy_root, task=task), task=task), path)
    assert line.endswith("labels [3] are not in the brats2017 convention of task whole-tumour [0, 1, 2, 4]")


def test_an_unlabelled_case_of_a_convention_the_task_does_not_read_is_refused(tmp_path, cases):
    root = cases.msd(tmp_path, train=(), test=(4,))
    task = TASKS["meningioma-rt"]
    (record,) = discover(root, task).records
    line = _single_line_naming(validate_case(record, task=task), record.images[0])
    assert line.endswith("task meningioma-rt does not read msd labels (it reads brats2024-men-rt, brats2023, internal); --task brats-glioma reads them")


def test_resection_cavity_mapping_does_not_open_the_legacy_convention(legacy_root):
    path = legacy_root / "BraTS2021_00003" / "BraTS2021_00003_seg.nii.gz"
    write_nifti(path, tumour((1, 3)))
    assert validate_case(_record(legacy_root), allow_resection_cavity=True) != []


def test_several_problems_are_all_reported(legacy_root):
    folder = legacy_root / "BraTS2021_00003"
    (folder / "BraTS2021_00003_t1.nii.gz").unlink()
    write_nifti(folder / "BraTS2021_00003_t2.nii.gz", np.zeros(SHAPE, dtype=np.int16))
    write_nifti(folder / "BraTS2021_00003_seg.nii.gz", tumour((7,)))
    problems = validate_case(_record(legacy_root))
    assert [line.split(": ")[0] for line in problems] == [
        str(folder / "BraTS2021_00003_t1.nii.gz"),
        str(folder / "BraTS2021_00003_t2.nii.gz"),
        str(folder / "BraTS2021_00003_seg.nii.gz"),
    ]


def test_msd_good_and_bad_4d_images(tmp_path, cases):
    root = cases.msd(tmp_path, train=(1, 2, 3), test=())
    records = {r.case_id: r for r in discover(root).records}
    assert validate_case(records["BRATS_001"]) == []

    three_channels = root / "imagesTr" / "BRATS_002.nii.gz"
    write_nifti(three_channels, np.stack([brain(c) for c in range(3)], axis=-1))
    line = _single_line_naming(validate_case(records["BRATS_002"]), three_channels)
    assert "expected a 4D image with 4 channels, got shape (8, 8, 6, 3)" in line

    zero_t1 = root / "imagesTr" / "BRATS_003.nii.gz"
    image = np.stack([brain(c) for c in range(4)], axis=-1)
    image[..., 1] = 0
    write_nifti(zero_t1, image)
    assert _single_line_naming(validate_case(records["BRATS_003"]), zero_t1).endswith("channel 1 (t1) is entirely zero")


def test_msd_labels_are_checked_against_the_msd_convention(tmp_path, cases):
    root = cases.msd(tmp_path, train=(1,), test=())
    label = root / "labelsTr" / "BRATS_001.nii.gz"
    write_nifti(label, tumour((1, 4)))
    record = discover(root).records[0]
    assert "labels [4] are not in the msd convention [0, 1, 2, 3]" in _single_line_naming(validate_case(record), label)


def test_a_hand_made_record_with_a_wrong_convention_is_caught(legacy_root):
    record = dataclasses.replace(_record(legacy_root), label_convention="brats2023")
    line = _single_line_naming(validate_case(record), record.label)
    assert "labels [4] are not in the brats2023 convention" in line


@pytest.mark.parametrize("workers", [1, 2])
def test_validate_cases_in_a_pool_gives_the_same_answer(legacy_root, workers):
    write_nifti(legacy_root / "BraTS2021_00006" / "BraTS2021_00006_t1.nii.gz", np.zeros(SHAPE, dtype=np.int16))
    records = discover(legacy_root).records
    results = validate_cases(records, workers=workers, progress=False)
    assert list(results) == [r.case_id for r in records]
    assert {case_id for case_id, lines in results.items() if lines} == {"BraTS2021_00006"}
