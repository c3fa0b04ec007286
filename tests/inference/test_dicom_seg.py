"""DICOM-SEG on an original series: every frame of its grid, references, codes and colours; read back by highdicom and dcmqi."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

highdicom = pytest.importorskip("highdicom", reason="the dicom extra (pydicom, highdicom) is not installed")

import pydicom  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from dicom_writers import new_study, reoriented, rotated, write_mr_series  # noqa: E402

from pipeline.inference.dicom_seg import labels_on_series_grid, read_dicom_seg, write_dicom_seg  # noqa: E402
from pipeline.datasets.dicom import DicomSeries, find_series, read_series  # noqa: E402
from pipeline.core.errors import InputError  # noqa: E402
from pipeline.tasks import get_task  # noqa: E402

GLIOMA = get_task("brats-glioma")


def labelled_series(folder: Path, image: sitk.Image, seed: int = 0) -> tuple[DicomSeries, sitk.Image, sitk.Image]:
    """``image`` written as a series; the series, its volume as read, and random labels 0-3 on its grid (one slice empty)."""
    write_mr_series(folder / "series", image, "t1ce", study=new_study())
    [series] = find_series(folder / "series")
    volume = read_series(series)
    voxels = np.random.default_rng(seed).integers(0, 4, sitk.GetArrayFromImage(volume).shape).astype(np.uint8)
    voxels[2] = 0  # an empty frame: still in the SEG
    labels = sitk.GetImageFromArray(voxels)
    labels.CopyInformation(volume)
    return series, volume, labels


@pytest.fixture
def volume() -> sitk.Image:
    image = sitk.GetImageFromArray(np.random.default_rng(1).integers(0, 1000, (7, 9, 11)).astype(np.int16))
    image.SetSpacing((0.9, 1.1, 3.0))
    image.SetOrigin((10.0, -20.0, 30.0))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    return image


def assert_frames_match(seg_path: Path, series: DicomSeries, labels: sitk.Image) -> None:
    """Every (segment, source slice) pair is one frame, at its source instance's position, holding that slice's mask."""
    seg = pydicom.dcmread(seg_path)
    voxels = sitk.GetArrayFromImage(labels)
    sources = {str(h.SOPInstanceUID): h for h in series.headers}
    assert int(seg.NumberOfFrames) == len(GLIOMA.classes) * len(sources)
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    seen = set()
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        segment = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        source_uid = str(group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        position = [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(position, [float(v) for v in sources[source_uid].ImagePositionPatient], atol=1e-4)
        index = labels.TransformPhysicalPointToIndex(position)
        assert index[:2] == (0, 0)
        np.testing.assert_array_equal(frame, voxels[index[2]] == segment)
        seen.add((segment, source_uid))
    assert len(seen) == int(seg.NumberOfFrames)


@pytest.mark.parametrize("orientation", ["axial", "sagittal", "oblique"])
def test_seg_holds_every_frame_of_the_series_and_reads_back_with_highdicom(tmp_path: Path, volume: sitk.Image, orientation: str) -> None:
    image = {"axial": volume, "sagittal": reoriented(volume, "sagittal"), "oblique": rotated(volume)}[orientation]
    series, grid, labels = labelled_series(tmp_path, image)

    path = write_dicom_seg(tmp_path / "out" / "seg.dcm", labels, series, GLIOMA)

    assert_frames_match(path, series, labels)
    read, names = read_dicom_seg(path)
    assert names == {1: "NEC", 2: "ED", 3: "ET"}
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(labels))
    np.testing.assert_allclose(read.GetOrigin(), grid.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(read.GetDirection(), grid.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(read.GetSpacing(), grid.GetSpacing(), atol=1e-6)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["seg.dcm"]  # no temporary left


def test_seg_references_the_series_and_keeps_patient_study_and_frame_of_reference(tmp_path: Path, volume: sitk.Image) -> None:
    series, _, labels = labelled_series(tmp_path, rotated(volume))
    source = series.headers[0]

    seg = pydicom.dcmread(write_dicom_seg(tmp_path / "seg.dcm", labels, series, GLIOMA))

    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "FrameOfReferenceUID"):
        assert seg.get(keyword) == source.get(keyword), keyword
    assert seg.SeriesInstanceUID != series.uid
    [referenced] = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == series.uid
    assert {str(i.ReferencedSOPInstanceUID) for i in referenced.ReferencedInstanceSequence} == {str(h.SOPInstanceUID) for h in series.headers}


def test_segments_are_coded_and_coloured_from_the_task(tmp_path: Path, volume: sitk.Image) -> None:
    series, _, labels = labelled_series(tmp_path, volume)

    seg = highdicom.seg.segread(write_dicom_seg(tmp_path / "seg.dcm", labels, series, GLIOMA))

    expected = {1: ("NEC", "6574001", "Necrosis"), 2: ("ED", "79654002", "Edema"), 3: ("ET", "C113842", "Enhancing Lesion")}
    for number, (label, code, meaning) in expected.items():
        description = seg.get_segment_description(number)
        assert description.segment_label == label
        assert (description.segmented_property_type.value, description.segmented_property_type.meaning) == (code, meaning)
        assert description.segmented_property_category.value == "49755003"  # morphologically abnormal structure
        assert description.SegmentAlgorithmType == "AUTOMATIC"
        rgb = highdicom.color.CIELabColor.from_dicom_value(description.RecommendedDisplayCIELabValue).to_rgb()
        np.testing.assert_allclose(rgb, GLIOMA.colour(label), atol=2)


def test_seg_reads_back_with_dcmqi_segment_by_segment(tmp_path: Path, volume: sitk.Image) -> None:
    converter = shutil.which("segimage2itkimage") or shutil.which("segimage2itkimage", path=str(Path(sys.executable).parent))
    if converter is None:
        pytest.skip("dcmqi's segimage2itkimage is not installed (pip install dcmqi)")
    series, grid, labels = labelled_series(tmp_path, rotated(reoriented(volume, "sagittal")))
    path = write_dicom_seg(tmp_path / "seg.dcm", labels, series, GLIOMA)

    (tmp_path / "dcmqi").mkdir()
    command = [converter, "--inputDICOM", str(path), "--outputDirectory", str(tmp_path / "dcmqi"), "--outputType", "nifti"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    for number in (1, 2, 3):
        mask = sitk.ReadImage(str(tmp_path / "dcmqi" / f"{number}.nii.gz"))
        on_grid = labels_on_series_grid(mask, grid)  # NIfTI stores float32 geometry: compare on the series' grid
        np.testing.assert_allclose(mask.GetOrigin(), grid.GetOrigin(), atol=1e-3)
        np.testing.assert_allclose(mask.GetDirection(), grid.GetDirection(), atol=1e-5)
        expected = np.where(sitk.GetArrayFromImage(labels) == number, number, 0)  # dcmqi writes the segment number
        np.testing.assert_array_equal(sitk.GetArrayFromImage(on_grid), expected)


def test_labels_off_the_series_grid_or_beyond_the_task_are_refused_and_nothing_written(tmp_path: Path, volume: sitk.Image) -> None:
    series, grid, labels = labelled_series(tmp_path, volume)
    shifted = sitk.Image(labels)
    shifted.SetOrigin([v + 0.4 for v in grid.GetOrigin()])
    too_high = sitk.Image(labels)
    too_high[0, 0, 0] = 7

    with pytest.raises(InputError, match=f"labels for series {series.uid}: not on the series' grid"):
        write_dicom_seg(tmp_path / "a.dcm", shifted, series, GLIOMA)
    with pytest.raises(InputError, match="is not the series' grid"):
        write_dicom_seg(tmp_path / "b.dcm", labels[:, :, 1:], series, GLIOMA)
    with pytest.raises(InputError, match="label 7 is no class of task brats-glioma"):
        write_dicom_seg(tmp_path / "c.dcm", too_high, series, GLIOMA)
    assert not list(tmp_path.glob("*.dcm"))


def test_labels_come_onto_a_series_grid_by_nearest_neighbour(volume: sitk.Image) -> None:
    labels = sitk.GetImageFromArray(np.random.default_rng(2).integers(0, 4, (7, 9, 11)).astype(np.uint8))
    labels.CopyInformation(volume)
    coarse = sitk.Image([7, 5, 4], sitk.sitkInt16)  # every second voxel of the labels' grid, further out of the field
    coarse.SetSpacing([2 * s for s in volume.GetSpacing()])
    coarse.SetOrigin(volume.GetOrigin())
    coarse.SetDirection(volume.GetDirection())

    same = labels_on_series_grid(labels, volume)
    on_coarse = sitk.GetArrayFromImage(labels_on_series_grid(labels, coarse))

    np.testing.assert_array_equal(sitk.GetArrayFromImage(same), sitk.GetArrayFromImage(labels))
    np.testing.assert_array_equal(on_coarse[:, :, :6], sitk.GetArrayFromImage(labels)[::2, ::2, ::2])
    assert (on_coarse[:, :, 6] == 0).all()  # outside the labels: background


def test_multiframe_source_gets_a_seg_on_its_frames(tmp_path: Path, volume: sitk.Image) -> None:
    from highdicom.legacy import LegacyConvertedEnhancedMRImage

    files = write_mr_series(tmp_path / "classic", rotated(volume), "t1ce")
    enhanced = LegacyConvertedEnhancedMRImage([pydicom.dcmread(f) for f in files], series_instance_uid=pydicom.uid.generate_uid(),
                                              series_number=9, sop_instance_uid=pydicom.uid.generate_uid(), instance_number=1)
    (tmp_path / "enhanced").mkdir()
    enhanced.save_as(tmp_path / "enhanced" / "mf.dcm")
    [series] = find_series(tmp_path / "enhanced")
    grid = read_series(series)
    labels = sitk.GetImageFromArray(np.random.default_rng(3).integers(0, 4, sitk.GetArrayFromImage(grid).shape).astype(np.uint8))
    labels.CopyInformation(grid)

    read, _ = read_dicom_seg(write_dicom_seg(tmp_path / "seg.dcm", labels, series, GLIOMA))

    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(labels))
    np.testing.assert_allclose(read.GetOrigin(), grid.GetOrigin(), atol=1e-4)


@pytest.mark.real_data
@pytest.mark.slow
def test_real_segmentation_on_a_real_case_series_round_trips(tmp_path: Path, real_brats_dir: Path) -> None:
    case = real_brats_dir / "BraTS2021_00006"
    image = reoriented(sitk.ReadImage(str(case / "BraTS2021_00006_t1ce.nii.gz")), "sagittal")
    write_mr_series(tmp_path / "t1ce", image, "t1ce")
    [series] = find_series(tmp_path / "t1ce")
    grid = read_series(series)
    seg = sitk.ReadImage(str(case / "BraTS2021_00006_seg.nii.gz"))
    labels = labels_on_series_grid(sitk.ChangeLabel(sitk.Cast(seg, sitk.sitkUInt8), {4: 3}), grid)
    assert sitk.GetArrayFromImage(labels).max() == 3

    path = write_dicom_seg(tmp_path / "seg.dcm", labels, series, GLIOMA)

    assert_frames_match(path, series, labels)
    read, _ = read_dicom_seg(path)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(labels))
