"""predict on a DICOM study: the same segmentation as the NIfTI path, back on the original series as NIfTI and DICOM-SEG."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("highdicom", reason="the dicom extra (pydicom, highdicom) is not installed")

import pydicom  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from case_writers import canonical_case, write_brats_case  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from dicom_writers import new_study, reoriented, resampled, resampled_oblique, write_mr_series, write_study  # noqa: E402
from prediction_cases import HyperintensityNetwork  # noqa: E402

from pipeline.cli import main  # noqa: E402
from pipeline.core.errors import ConfigError  # noqa: E402
from pipeline.inference.dicom_predict import series_choices  # noqa: E402
from pipeline.inference.dicom_seg import read_dicom_seg  # noqa: E402
from pipeline.inference.inferers import VolumeInferer  # noqa: E402
from pipeline.inference.model import SegmentationModel  # noqa: E402
from pipeline.inference.predict import predict  # noqa: E402
from pipeline.tasks.modalities import MODALITIES  # noqa: E402
from pipeline.tasks.labels import get_convention  # noqa: E402

CASE = "BraTS2021_00001"
#: The real case and a deterministic predictor whose output overlaps its tumour (for comparing the two paths).
REAL_CASE = "BraTS2021_00006"
RULE_MODEL = SegmentationModel(HyperintensityNetwork(), VolumeInferer("2d"), postprocessing={"keep_largest": ["WT", "TC", "ET"]})
#: 1 mm isotropic L-P-S (the prepared grid of a 1 mm reference is its own grid: no resampling anywhere).
LPS_1MM = np.array([[-1.0, 0, 0, 29], [0, -1.0, 0, 33], [0, 0, 1.0, -8], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def tiny_nifti_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny prediction case at 1 mm, as a BraTS 2021 NIfTI folder."""
    modalities, labels = canonical_case(0)
    return write_brats_case(tmp_path_factory.mktemp("nifti"), CASE, {**modalities, "seg": get_convention("brats2017").from_internal(labels)}, affine=LPS_1MM)


def volumes_of(case: Path, case_id: str) -> dict[str, sitk.Image]:
    return {channel: sitk.ReadImage(str(case / f"{case_id}_{channel}.nii.gz")) for channel in MODALITIES}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b))


def test_cli_predict_on_a_dicom_study_matches_the_nifti_path_voxel_for_voxel(run_dir: Path, tiny_nifti_case: Path, tmp_path: Path) -> None:
    grids = volumes_of(tiny_nifti_case, CASE)
    grids["t1"] = reoriented(grids["t1"], "sagittal")  # same voxels, sagittal slices: no resampling
    grids["t2"] = reoriented(grids["t2"], "coronal")
    uids = write_study(tmp_path / "study", grids)
    runner = CliRunner()
    nifti = runner.invoke(main, ["predict", "--model", str(run_dir), "--input", str(tiny_nifti_case), "--out", str(tmp_path / "nifti"), "--no-progress"])
    assert nifti.exit_code == 0, nifti.output

    result = runner.invoke(main, [
        "predict", "--model", str(run_dir), "--input", str(tmp_path / "study"), "--out", str(tmp_path / "dicom"), "--dicom-seg",
        "--skip-registration", "--skip-skull-strip", "--native-series", "t1ce", "--native-series", "t1", "--no-progress",
        "--series", f"t2={tmp_path / 'study' / 'series03'}", "--series", f"t1ce={uids['t1ce']}",
    ])

    assert result.exit_code == 0, result.output
    expected = sitk.ReadImage(str(tmp_path / "nifti" / f"{CASE}_seg.nii.gz"))
    manifest = json.loads((tmp_path / "dicom" / "predictions.json").read_text())
    [entry] = manifest["cases"]
    assert entry["series"] == uids
    assert set(entry["seconds"]) >= {"read", "prepare", "segment", "native", "dicom_seg"}
    for channel in ("t1ce", "t1"):
        native = sitk.ReadImage(str(tmp_path / "dicom" / entry["native"][channel]))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(native), sitk.GetArrayFromImage(
            sitk.Resample(expected, grids[channel], sitk.Transform(), sitk.sitkNearestNeighbor, 0)))  # a permutation: exact
        np.testing.assert_allclose(native.GetOrigin(), grids[channel].GetOrigin(), atol=1e-4)
        seg, names = read_dicom_seg(tmp_path / "dicom" / entry["dicom_seg"][channel])
        assert names == {1: "NEC", 2: "ED", 3: "ET"}
        internal = get_convention(entry["label_convention"]).to_internal(sitk.GetArrayFromImage(native))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(seg), internal)
    # the prepared case is a BraTS-style folder the NIfTI path reads too
    assert (tmp_path / "dicom" / "prepared" / "study" / "study_t1ce.nii.gz").is_file()


@pytest.mark.parametrize(
    ("values", "message"),
    [(["t1ce"], "'t1ce': expected CHANNEL=<SeriesInstanceUID|folder>"), (["=1.2.3"], "expected CHANNEL="),
     (["t1ce=1.2", "t1ce=1.3"], "t1ce is chosen twice")],
)
def test_bad_series_choices_are_refused(values: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        series_choices(values)


def test_dicom_only_options_on_a_nifti_input_are_refused(run_dir: Path, tiny_nifti_case: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--dicom-seg: applies to a DICOM study"):
        predict(run_dir, tiny_nifti_case, tmp_path / "out", progress=False, dicom_seg=True)
    assert not (tmp_path / "out").exists()


def test_output_inside_the_dicom_study_is_refused(run_dir: Path, tiny_nifti_case: Path, tmp_path: Path) -> None:
    write_study(tmp_path / "study", volumes_of(tiny_nifti_case, CASE))

    with pytest.raises(ConfigError, match="--out: .* is inside the DICOM study"):
        predict(run_dir, tmp_path / "study", tmp_path / "study" / "out", progress=False)
    assert not (tmp_path / "study" / "out").exists()


@pytest.mark.real_data
@pytest.mark.slow
def test_real_case_as_a_dicom_study_of_mixed_grids_segments_like_its_nifti_files(real_brats_dir: Path, tmp_path: Path) -> None:
    model, volumes = RULE_MODEL, volumes_of(real_brats_dir / REAL_CASE, REAL_CASE)
    grids = {
        "t1": resampled(reoriented(volumes["t1"], "sagittal"), (1.0, 1.0, 1.2)),
        "t1ce": volumes["t1ce"],
        "t2": resampled(volumes["t2"], (1.0, 1.0, 3.0)),
        "flair": resampled_oblique(volumes["flair"], (8.0, -5.0, 3.0), (1.0, 1.0, 1.0)),
    }
    write_study(tmp_path / "study", grids, new_study())
    expected = predict(model, real_brats_dir / REAL_CASE, tmp_path / "nifti", progress=False).segmentations[REAL_CASE]

    summary = predict(model, tmp_path / "study", tmp_path / "dicom", progress=False, register=False, skull_strip=False,
                      native_series=("t1ce", "flair"), dicom_seg=True)

    assert list(summary.native) == ["study"]  # the study folder's name
    truth = sitk.ReadImage(str(expected))
    for channel, least in (("t1ce", 0.98), ("flair", 0.97)):
        native = sitk.GetArrayFromImage(sitk.ReadImage(str(summary.native["study"][channel])))
        reference = sitk.GetArrayFromImage(sitk.Resample(truth, grids[channel], sitk.Transform(), sitk.sitkNearestNeighbor, 0))
        assert dice(native > 0, reference > 0) >= least, channel
        seg, _ = read_dicom_seg(summary.dicom_seg["study"][channel])
        np.testing.assert_array_equal(sitk.GetArrayFromImage(seg) > 0, native > 0)
    assert nib.load(summary.native["study"]["t1ce"]).shape == (240, 240, 155)


@pytest.mark.real_data
@pytest.mark.slow
def test_real_case_as_a_dicom_study_without_resampling_segments_voxel_for_voxel_like_its_nifti_files(real_brats_dir: Path, tmp_path: Path) -> None:
    model, volumes = RULE_MODEL, volumes_of(real_brats_dir / REAL_CASE, REAL_CASE)
    grids = {"t1": reoriented(volumes["t1"], "sagittal"), "t1ce": volumes["t1ce"], "t2": reoriented(volumes["t2"], "coronal"), "flair": volumes["flair"]}
    write_study(tmp_path / "study", grids)
    expected = predict(model, real_brats_dir / REAL_CASE, tmp_path / "nifti", progress=False).segmentations[REAL_CASE]

    summary = predict(model, tmp_path / "study", tmp_path / "dicom", progress=False, register=False, skull_strip=False)

    native = nib.load(summary.native["study"]["t1ce"])
    np.testing.assert_array_equal(np.asarray(native.dataobj), np.asarray(nib.load(expected).dataobj))
    np.testing.assert_allclose(native.affine, nib.load(expected).affine, atol=1e-4)


def _mix_patients(study: Path, tiny: dict[str, sitk.Image]) -> None:
    write_mr_series(study / "other_patient", tiny["t1"], "t1", study=new_study("OTHER-PATIENT"))


def _drop_a_slice(study: Path, tiny: dict[str, sitk.Image]) -> None:
    sorted((study / "series02").iterdir())[5].unlink()


def _add_a_ct(study: Path, tiny: dict[str, sitk.Image]) -> None:
    first = pydicom.dcmread(next((study / "series01").iterdir()))
    write_mr_series(study / "ct", tiny["t1"], "t1", study={k: str(first.get(k)) for k in ("PatientID", "PatientName", "StudyInstanceUID", "FrameOfReferenceUID")},
                    tags={"Modality": "CT", "SeriesDescription": "Head CT"})


def _cut_a_file(study: Path, tiny: dict[str, sitk.Image]) -> None:
    path = sorted((study / "series03").iterdir())[2]
    path.write_bytes(path.read_bytes()[:-300])


def _remove_flair(study: Path, tiny: dict[str, sitk.Image]) -> None:
    for path in (study / "series04").iterdir():
        path.unlink()


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (_mix_patients, "files of 2 patients"),
        (_drop_a_slice, "uneven slice spacing"),
        (_add_a_ct, "is modality CT, not MR"),
        (_cut_a_file, "damaged DICOM file: the pixel data is cut short"),
        (_remove_flair, "flair: no series identified as flair; series found: "),
    ],
)
def test_cli_refuses_a_bad_dicom_study_in_one_line_writing_nothing(run_dir: Path, tiny_nifti_case: Path, tmp_path: Path, spoil, message: str) -> None:
    tiny = volumes_of(tiny_nifti_case, CASE)
    write_study(tmp_path / "study", tiny)
    spoil(tmp_path / "study", tiny)

    result = CliRunner().invoke(main, ["predict", "--model", str(run_dir), "--input", str(tmp_path / "study"), "--out", str(tmp_path / "out"), "--dicom-seg"])

    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: ") and message in line
    assert not (tmp_path / "out").exists()
