"""DICOM studies: series found, contrasts told, geometry read exactly, every bad input refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("highdicom", reason="the dicom extra (pydicom, highdicom) is not installed")

import pydicom  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from dicom_writers import CONTRAST_TAGS, as_read, new_study, reoriented, rotated, write_mr_series, write_study  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402

from pipeline.datasets.dicom import find_series, guess_channel, read_series, read_study, select_series  # noqa: E402
from pipeline.core.errors import ConfigError, InputError  # noqa: E402
from pipeline.tasks.modalities import MODALITIES  # noqa: E402


@pytest.fixture
def volume() -> sitk.Image:
    """A small anisotropic L-P-S volume of random integers (every voxel distinct enough to catch a flip)."""
    image = sitk.GetImageFromArray(np.random.default_rng(0).integers(-200, 3000, (7, 9, 11)).astype(np.int16))
    image.SetSpacing((0.9, 1.1, 3.0))
    image.SetOrigin((10.0, -20.0, 30.0))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    return image


def assert_same_image(read: sitk.Image, expected: sitk.Image) -> None:
    """Same voxels in the same order, and every voxel at the same physical position (to 1e-6 mm)."""
    assert read.GetSize() == expected.GetSize()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(expected))
    np.testing.assert_allclose(read.GetSpacing(), expected.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(read.GetDirection(), expected.GetDirection(), atol=1e-6)
    corners = [(0, 0, 0), tuple(n - 1 for n in expected.GetSize()), (expected.GetSize()[0] - 1, 0, 0), (0, 0, expected.GetSize()[2] - 1)]
    for corner in corners:
        np.testing.assert_allclose(read.TransformIndexToPhysicalPoint(corner), expected.TransformIndexToPhysicalPoint(corner), atol=1e-6)


def one_series(folder: Path):
    [series] = find_series(folder)
    return series


# ----------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("orientation", ["axial", "sagittal", "coronal", "oblique", "oblique-sagittal"])
def test_series_reads_back_exactly_in_every_orientation(tmp_path: Path, volume: sitk.Image, orientation: str) -> None:
    image = {
        "axial": volume,
        "sagittal": reoriented(volume, "sagittal"),
        "coronal": reoriented(volume, "coronal"),
        "oblique": rotated(volume),
        "oblique-sagittal": rotated(reoriented(volume, "sagittal"), (3.0, 20.0, -11.0)),
    }[orientation]
    write_mr_series(tmp_path / "series", image, "t1", shuffle_seed=3)

    assert_same_image(read_series(one_series(tmp_path)), image)


def test_slices_stored_against_the_normal_read_back_in_normal_order(tmp_path: Path, volume: sitk.Image) -> None:
    image = rotated(volume)
    against = sitk.Flip(image, (False, False, True))  # slices stacked against row x column
    write_mr_series(tmp_path / "series", against, "t1")

    assert as_read(against) is not against
    assert_same_image(read_series(one_series(tmp_path)), image)


def test_enhanced_multiframe_object_reads_like_its_single_frame_series(tmp_path: Path, volume: sitk.Image) -> None:
    from highdicom.legacy import LegacyConvertedEnhancedMRImage

    image = rotated(reoriented(volume, "sagittal"))
    files = write_mr_series(tmp_path / "classic", image, "t2")
    enhanced = LegacyConvertedEnhancedMRImage(
        [pydicom.dcmread(f) for f in files], series_instance_uid=pydicom.uid.generate_uid(), series_number=9,
        sop_instance_uid=pydicom.uid.generate_uid(), instance_number=1,
    )
    (tmp_path / "enhanced").mkdir()
    enhanced.save_as(tmp_path / "enhanced" / "multiframe.dcm")

    [series] = find_series(tmp_path / "enhanced")
    assert series.multiframe and series.channel == "t2"
    read = read_series(series)
    np.testing.assert_allclose(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))
    for corner in [(0, 0, 0), tuple(n - 1 for n in image.GetSize())]:
        np.testing.assert_allclose(read.TransformIndexToPhysicalPoint(corner), image.TransformIndexToPhysicalPoint(corner), atol=1e-4)


@pytest.mark.real_data
@pytest.mark.slow
def test_real_case_round_trips_as_an_oblique_sagittal_series(tmp_path: Path, real_brats_dir: Path) -> None:
    case = sitk.ReadImage(str(real_brats_dir / "BraTS2021_00006" / "BraTS2021_00006_t1ce.nii.gz"))
    image = rotated(reoriented(case, "sagittal"), (4.0, -15.0, 9.0))
    write_mr_series(tmp_path / "t1ce", image, "t1ce", shuffle_seed=11)

    series = one_series(tmp_path)
    assert series.channel == "t1ce" and len(series.files) == case.GetSize()[0]
    assert_same_image(read_series(series), sitk.Cast(image, sitk.sitkInt16))


# ----------------------------------------------------------------------------- contrasts
def header(description: str = "", **tags) -> Dataset:
    ds = Dataset()
    ds.SeriesDescription = description
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(
    ("description", "tags", "expected"),
    [
        ("t1_mprage_sag_p2_iso", {}, "t1"),
        ("Sag T1 MPRAGE", {"ContrastBolusAgent": "Gadovist"}, "t1ce"),
        ("AX T1 +C", {}, "t1ce"),
        ("T1_POST_GD", {}, "t1ce"),
        ("3D T1 BRAVO pre", {"ContrastBolusAgent": "Dotarem"}, "t1"),
        ("t1ce", {}, "t1ce"),
        ("AX T2 FLAIR", {"ContrastBolusAgent": "Dotarem"}, "flair"),
        ("t2_tirm_tra_dark-fluid", {}, "flair"),
        ("t2_tse_tra", {}, "t2"),
        ("AX T2 FSE", {}, "t2"),
        ("ep2d_diff_3scan_trace_p2_ADC", {}, None),
        ("Ax SWI", {}, None),
        ("AX T2* GRE", {}, None),
        ("localizer", {}, None),
        ("", {"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}, None),
        ("series 7", {"EchoTime": 110.0, "RepetitionTime": 9000.0, "InversionTime": 2500.0}, "flair"),
        ("series 8", {"EchoTime": 95.0, "RepetitionTime": 4500.0}, "t2"),
        ("series 9", {"EchoTime": 2.5, "RepetitionTime": 2000.0, "InversionTime": 900.0}, "t1"),
        ("series 10", {"EchoTime": 2.5, "RepetitionTime": 2000.0, "InversionTime": 900.0, "ContrastBolusAgent": "Gd"}, "t1ce"),
        ("series 11", {"EchoTime": 40.0, "RepetitionTime": 800.0}, None),
        ("series 12", {}, None),
    ],
)
def test_contrast_is_told_from_the_series_tags(description: str, tags: dict, expected: str | None) -> None:
    assert guess_channel(header(description, **tags)) == expected


def test_writer_contrast_tags_are_told_apart() -> None:
    for contrast, tags in CONTRAST_TAGS.items():
        assert guess_channel(header(**tags)) == contrast
        assert guess_channel(header("", **{k: v for k, v in tags.items() if k != "SeriesDescription"})) == contrast


# ----------------------------------------------------------------------------- choosing series
def write_four(folder: Path, volume: sitk.Image, **extra: sitk.Image) -> dict[str, str]:
    volumes = {channel: volume for channel in MODALITIES}
    return write_study(folder, {**volumes, **extra})


def test_study_of_four_contrasts_reads_each_on_its_own_grid(tmp_path: Path, volume: sitk.Image) -> None:
    study = new_study()
    grids = {"t1": reoriented(volume, "sagittal"), "t1ce": rotated(volume), "t2": volume, "flair": reoriented(volume, "coronal")}
    uids = write_study(tmp_path, grids, study)

    read = read_study(tmp_path)

    assert {channel: series.uid for channel, series in read.series.items()} == uids
    assert list(read.volumes) == list(MODALITIES)
    for channel, image in grids.items():
        assert_same_image(read.volumes[channel], image)


def test_missing_contrast_is_refused_listing_the_series(tmp_path: Path, volume: sitk.Image) -> None:
    write_study(tmp_path, {"t1": volume, "t1ce": volume, "flair": volume})

    with pytest.raises(InputError, match=r"t2: no series identified as t2; series found: .*t1_mprage_sag_p2_iso' \(7 files, guess: t1\).*--series"):
        select_series(find_series(tmp_path), where=tmp_path)


def test_ambiguous_contrast_is_refused_and_an_override_settles_it(tmp_path: Path, volume: sitk.Image) -> None:
    study = new_study()
    uids = write_study(tmp_path / "a", {channel: volume for channel in MODALITIES}, study)
    write_mr_series(tmp_path / "b" / "second_flair", volume, "flair", study=study, series_number=7)
    found = find_series(tmp_path)

    with pytest.raises(InputError, match="flair: 2 series identified as flair"):
        select_series(found)
    by_uid = select_series(found, overrides={"flair": uids["flair"]})
    by_folder = select_series(found, overrides={"flair": str(tmp_path / "b" / "second_flair")})

    assert by_uid["flair"].uid == uids["flair"]
    assert by_folder["flair"].uid not in uids.values()
    assert [s.uid for c, s in by_folder.items() if c != "flair"] == [uids[c] for c in MODALITIES if c != "flair"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"pd": "1.2.3"}, "pd=1.2.3: the model's channels are t1, t1ce, t2, flair"),
        ({"t2": "1.2.3.4"}, "t2=1.2.3.4: no series with that SeriesInstanceUID and no such folder; series found"),
    ],
)
def test_bad_override_is_refused(tmp_path: Path, volume: sitk.Image, overrides: dict, message: str) -> None:
    write_four(tmp_path, volume)

    with pytest.raises(ConfigError, match=message):
        select_series(find_series(tmp_path), overrides=overrides)


def test_override_folder_of_several_series_and_one_series_twice_are_refused(tmp_path: Path, volume: sitk.Image) -> None:
    uids = write_four(tmp_path / "study", volume)
    found = find_series(tmp_path)

    with pytest.raises(ConfigError, match="the folder holds 4 series"):
        select_series(found, overrides={"t2": str(tmp_path / "study")})
    with pytest.raises(ConfigError, match="is chosen for t1 and t2"):
        select_series(found, overrides={"t1": uids["t1"], "t2": uids["t1"]})


# ----------------------------------------------------------------------------- refusals
def test_folder_without_dicom_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")

    with pytest.raises(InputError, match=r"no DICOM files found \(1 files looked at\)"):
        find_series(tmp_path)
    with pytest.raises(InputError, match="not a folder"):
        find_series(tmp_path / "notes.txt")


def test_non_dicom_files_and_dicomdir_beside_a_series_are_passed_over(tmp_path: Path, volume: sitk.Image) -> None:
    write_mr_series(tmp_path / "series", volume, "t2")
    (tmp_path / "README.txt").write_text("exported by PACS")

    assert len(one_series(tmp_path).files) == 7


@pytest.mark.parametrize(
    ("keyword", "value", "message"),
    [("PatientID", "OTHER-PATIENT", "files of 2 patients"), ("StudyInstanceUID", "1.2.3.999", "files of 2 studies")],
)
def test_mixed_patients_or_studies_are_refused(tmp_path: Path, volume: sitk.Image, keyword: str, value: str, message: str) -> None:
    study = new_study()
    write_mr_series(tmp_path / "one", volume, "t1", study=study)
    write_mr_series(tmp_path / "two", volume, "t2", study={**study, keyword: value})

    with pytest.raises(InputError, match=message):
        find_series(tmp_path)


def test_non_mr_series_is_refused(tmp_path: Path, volume: sitk.Image) -> None:
    study = new_study()
    write_mr_series(tmp_path / "mr", volume, "t1", study=study)
    write_mr_series(tmp_path / "ct", volume, "t1", study=study, tags={"Modality": "CT", "SeriesDescription": "Head CT"})

    with pytest.raises(InputError, match=r"ct/IM\d+: series .* 'Head CT' is modality CT, not MR"):
        find_series(tmp_path)


@pytest.mark.parametrize(("keep", "message"), [(-100, "damaged DICOM file: the pixel data is cut short"), (400, "damaged or incomplete DICOM file"), (140, "damaged or incomplete DICOM file")])
def test_corrupt_file_is_refused_naming_it(tmp_path: Path, volume: sitk.Image, keep: int, message: str) -> None:
    files = write_mr_series(tmp_path / "series", volume, "t1")
    data = files[3].read_bytes()
    files[3].write_bytes(data[:keep])

    with pytest.raises(InputError, match=f"{files[3].name}: {message}"):
        find_series(tmp_path)
    assert files[4].read_bytes()  # the other files are untouched


def test_missing_slice_is_refused(tmp_path: Path, volume: sitk.Image) -> None:
    files = write_mr_series(tmp_path / "series", rotated(volume), "t1")
    files[3].unlink()

    with pytest.raises(InputError, match=rf"uneven slice spacing: 6 mm between {files[2].name} and {files[4].name} against 3 mm elsewhere \(missing slices\?\)"):
        read_series(one_series(tmp_path))


def rewrite(path: Path, **tags) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.save_as(path)


def test_gantry_tilt_is_refused(tmp_path: Path, volume: sitk.Image) -> None:
    files = write_mr_series(tmp_path / "series", volume, "t1")
    for index, path in enumerate(files):  # each slice shifted 0.5 mm further along y: a tilted stack
        position = pydicom.dcmread(path).ImagePositionPatient
        rewrite(path, ImagePositionPatient=[position[0], float(position[1]) + 0.5 * index, position[2]])

    with pytest.raises(InputError, match="not stacked along their normal .* gantry tilt is not supported"):
        read_series(one_series(tmp_path))


def test_slices_of_different_orientation_are_refused(tmp_path: Path, volume: sitk.Image) -> None:
    files = write_mr_series(tmp_path / "series", volume, "t1")
    rewrite(files[2], ImageOrientationPatient=[1, 0, 0, 0, 0, -1])

    with pytest.raises(InputError, match=f"{files[2].name}: in series .*: slices are not parallel"):
        read_series(one_series(tmp_path))


def test_two_images_at_one_position_are_refused(tmp_path: Path, volume: sitk.Image) -> None:
    files = write_mr_series(tmp_path / "series", volume, "t1")
    rewrite(files[2], ImagePositionPatient=pydicom.dcmread(files[1]).ImagePositionPatient)

    with pytest.raises(InputError, match="two images at one slice position .* multi-echo, dynamic or diffusion series"):
        read_series(one_series(tmp_path))


def test_single_slice_is_refused(tmp_path: Path, volume: sitk.Image) -> None:
    files = write_mr_series(tmp_path / "series", volume, "t1")
    for path in files[1:]:
        path.unlink()

    with pytest.raises(InputError, match="a single slice, not a volume"):
        read_series(one_series(tmp_path))
