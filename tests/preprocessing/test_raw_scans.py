"""Raw scans -> prepared volumes: the isotropic grid, rigid registration, skull stripping, writing, and the way back."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from benchmarks.raw_scans import (
    brain_box_corners,
    compose,
    known_motions,
    prediction_agreement,
    read_case,
    registration_error,
    rigid_motion,
    scanned,
    simulate_series,
)
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.paths import BUNDLE_DIR
from pipeline.preprocessing.raw_scans import (
    PreparedScans,
    _deepbet_extractor,
    extract_brain,
    isotropic_grid,
    prepare_case_files,
    prepare_scans,
    register_rigid,
    resample_onto,
    samples_voxel_centres,
    to_native,
    write_prepared,
)
from pipeline.synth import get_grid, synthesize_case
from pipeline.synth.head import add_head

#: BraTS voxel order L-P-S as a SimpleITK direction (ITK's physical space is LPS).
LPS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def _image(voxels_ijk: np.ndarray, spacing: float | tuple[float, ...], direction: tuple[float, ...] = LPS, origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(voxels_ijk.transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in np.broadcast_to(spacing, 3)])
    image.SetDirection(direction)
    image.SetOrigin(origin)
    return image


def _dice(first: sitk.Image, second: sitk.Image) -> float:
    a, b = sitk.GetArrayViewFromImage(first) > 0, sitk.GetArrayViewFromImage(second) > 0
    return float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))


def _volume_ml(mask: sitk.Image) -> float:
    return float((sitk.GetArrayViewFromImage(mask) > 0).sum() * np.prod(mask.GetSpacing()) / 1000)


@pytest.fixture(scope="module")
def synthetic_case() -> dict[str, sitk.Image]:
    """One synthetic case at 2.5 mm (96x96x62, skull-free), by channel, with the BraTS LPS geometry."""
    grid = get_grid("small")
    voxels = synthesize_case(seed=0, index=0, grid=grid)
    origin = (0.0, (grid.shape[1] - 1) * grid.spacing, 0.0)
    return {channel: _image(voxels[channel].astype(np.float32), grid.spacing, origin=origin) for channel in ("t1", "t1ce", "t2", "flair")}


@pytest.fixture
def small_scans() -> dict[str, sitk.Image]:
    """Four tiny contrasts of one blob: a 1 mm reference and 1x1x3 mm others on the same field of view."""
    rng = np.random.default_rng(0)
    fine = np.zeros((20, 22, 18), dtype=np.float32)
    fine[5:15, 6:16, 4:14] = 100 + rng.normal(0, 5, (10, 10, 10))
    coarse = fine[:, :, 1::3].copy()
    return {
        "t1": _image(coarse, (1.0, 1.0, 3.0), origin=(0.0, 0.0, 1.0)),
        "t1ce": _image(fine, 1.0),
        "t2": _image(coarse * 2, (1.0, 1.0, 3.0), origin=(0.0, 0.0, 1.0)),
        "flair": _image(coarse * 3, (1.0, 1.0, 3.0), origin=(0.0, 0.0, 1.0)),
    }


# ----------------------------------------------------------------------------- grid


def test_isotropic_grid_covers_the_field_of_view_in_the_same_direction() -> None:
    angle = np.radians(20)
    oblique = (np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0)
    image = _image(np.ones((30, 40, 8), dtype=np.int16), (0.8, 0.8, 5.0), direction=oblique, origin=(10.0, -5.0, 3.0))
    grid = isotropic_grid(image, 1.0)
    assert grid.GetSpacing() == (1.0, 1.0, 1.0)
    assert grid.GetSize() == (24, 32, 40)
    assert grid.GetDirection() == pytest.approx(oblique)
    assert grid.GetPixelID() == sitk.sitkFloat32
    # the outer voxel edges stay where they were: the first corner of both grids is one physical point
    old_corner = image.TransformContinuousIndexToPhysicalPoint((-0.5, -0.5, -0.5))
    new_corner = grid.TransformContinuousIndexToPhysicalPoint((-0.5, -0.5, -0.5))
    assert new_corner == pytest.approx(old_corner)


def test_isotropic_grid_of_an_isotropic_image_is_voxel_for_voxel() -> None:
    voxels = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    image = _image(voxels, 1.0, origin=(3.0, 2.0, 1.0))
    grid = isotropic_grid(image, 1.0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(grid), sitk.GetArrayFromImage(image))
    assert grid.GetOrigin() == image.GetOrigin()


# ----------------------------------------------------------------------------- prepare_scans without registration or skull stripping


def test_skip_flags_give_identity_transforms_no_mask_and_the_reference_grid(small_scans: dict[str, sitk.Image]) -> None:
    prepared = prepare_scans(small_scans, register=False, skull_strip=False)
    assert isinstance(prepared, PreparedScans)
    assert prepared.reference == "t1ce" and prepared.brain_mask is None
    assert list(prepared.volumes) == ["t1", "t1ce", "t2", "flair"]
    reference = small_scans["t1ce"]
    for channel, volume in prepared.volumes.items():
        assert volume.GetSize() == reference.GetSize() and volume.GetOrigin() == reference.GetOrigin()
        assert volume.GetSpacing() == (1.0, 1.0, 1.0) and volume.GetDirection() == reference.GetDirection()
        assert np.allclose(prepared.transforms[channel].TransformPoint((1.0, 2.0, 3.0)), (1.0, 2.0, 3.0))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(prepared.volumes["t1ce"]), sitk.GetArrayFromImage(reference))
    # the 3 mm contrasts land on the reference's slices holding the same blob: inside it, about 2x and 3x the reference
    inside = sitk.GetArrayViewFromImage(reference) > 50
    for channel, factor in (("t2", 2), ("flair", 3)):
        ratio = sitk.GetArrayViewFromImage(prepared.volumes[channel])[inside].mean() / sitk.GetArrayViewFromImage(reference)[inside].mean()
        assert ratio == pytest.approx(factor, rel=0.15)


def test_bad_inputs_stop_with_one_line_naming_the_problem(small_scans: dict[str, sitk.Image]) -> None:
    with pytest.raises(ConfigError, match="reference: 't1c' is not among the contrasts given"):
        prepare_scans(small_scans, reference="t1c")
    with pytest.raises(ConfigError, match="spacing: must be a positive number"):
        prepare_scans(small_scans, spacing=0.0)
    flat = dict(small_scans, flair=sitk.Image([4, 4], sitk.sitkFloat32))
    with pytest.raises(InputError, match="flair: expected one 3D scalar volume, got a 2D image"):
        prepare_scans(flat, register=False, skull_strip=False)


def test_registration_without_overlap_is_an_input_error(small_scans: dict[str, sitk.Image]) -> None:
    far = sitk.Image(small_scans["t2"])
    far.SetOrigin((5000.0, 5000.0, 5000.0))
    with pytest.raises(InputError, match="^t2: rigid registration failed"):
        prepare_scans(dict(small_scans, t2=far), skull_strip=False)


def test_missing_deepbet_is_a_config_error(monkeypatch: pytest.MonkeyPatch, small_scans: dict[str, sitk.Image]) -> None:
    monkeypatch.setitem(sys.modules, "deepbet", None)  # makes ``import deepbet`` fail
    _deepbet_extractor.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"needs deepbet.*pip install 'brats-pipeline\[raw\]'"):
            prepare_scans(small_scans, register=False)
    finally:
        _deepbet_extractor.cache_clear()


# ----------------------------------------------------------------------------- writing and the way back


def test_write_prepared_writes_a_case_folder_that_reads_back(tmp_path: Path, small_scans: dict[str, sitk.Image], caplog: pytest.LogCaptureFixture) -> None:
    from pipeline.datasets.discovery import discover_case

    motion = rigid_motion(small_scans["t1ce"], (3.0, 0.0, 0.0), (1.0, 0.0, 0.0))
    prepared = prepare_scans(small_scans, register=False, skull_strip=False)
    mask = sitk.Cast(prepared.volumes["t1ce"] > 50, sitk.sitkUInt8)
    prepared = PreparedScans(prepared.volumes, mask, dict(prepared.transforms, t2=motion), "t1ce")
    folder = tmp_path / "Patient_7"
    written = write_prepared(prepared, folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["Patient_7_t1.nii.gz", "Patient_7_t1ce.nii.gz", "Patient_7_t2.nii.gz", "Patient_7_flair.nii.gz", "Patient_7_brain_mask.nii.gz"]
        + ["Patient_7_t1_to_t1ce.tfm", "Patient_7_t2_to_t1ce.tfm", "Patient_7_flair_to_t1ce.tfm"]
    )
    assert written["brain_mask"] == folder / "Patient_7_brain_mask.nii.gz"
    reread = sitk.ReadImage(str(written["flair"]))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(reread), sitk.GetArrayFromImage(prepared.volumes["flair"]))
    assert reread.GetOrigin() == pytest.approx(prepared.volumes["flair"].GetOrigin())
    transform = sitk.ReadTransform(str(written["t2_transform"]))
    assert transform.TransformPoint((4.0, 5.0, 6.0)) == pytest.approx(motion.TransformPoint((4.0, 5.0, 6.0)))
    record = discover_case(folder)  # the prepared folder is a case predict --input reads, its mask and transforms passed over silently
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert [p.name for p in record.images] == ["Patient_7_t1.nii.gz", "Patient_7_t1ce.nii.gz", "Patient_7_t2.nii.gz", "Patient_7_flair.nii.gz"]
    write_prepared(PreparedScans(prepared.volumes, None, prepared.transforms, "t1ce"), folder)  # prepared again without skull stripping
    assert not written["brain_mask"].exists()  # the earlier mask does not stay beside unmasked volumes


def test_to_native_puts_labels_where_the_transform_says(small_scans: dict[str, sitk.Image]) -> None:
    reference = small_scans["t1ce"]
    motion = rigid_motion(reference, (0.0, 0.0, 10.0), (2.0, -1.0, 3.0))
    native = sitk.Image([40, 40, 12], sitk.sitkInt16)  # a coarser, larger target grid
    native.SetSpacing((1.0, 1.0, 3.0))
    native.SetOrigin((-35.0, -35.0, -6.0))
    labels = sitk.Image(reference.GetSize(), sitk.sitkUInt8)
    labels.CopyInformation(reference)
    labels[8:13, 9:14, 6:13] = 3  # a blob larger than a target voxel, centred on voxel (10, 11, 9)
    back = to_native(labels, native, motion)
    assert back.GetSize() == native.GetSize() and back.GetSpacing() == native.GetSpacing() and back.GetOrigin() == native.GetOrigin()
    assert back.GetPixelID() == sitk.sitkUInt8
    index = native.TransformPhysicalPointToIndex(motion.TransformPoint(reference.TransformIndexToPhysicalPoint((10, 11, 9))))
    assert all(0 <= i < n for i, n in zip(index, native.GetSize()))
    assert back[index] == 3
    assert set(np.unique(sitk.GetArrayViewFromImage(back))) == {0, 3}
    same_grid = to_native(labels, reference)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(same_grid), sitk.GetArrayFromImage(labels))


# ----------------------------------------------------------------------------- registration


@pytest.mark.parametrize("stored", ["axial", "sagittal"])
def test_registration_recovers_a_rigid_motion_of_a_synthetic_case(synthetic_case: dict[str, sitk.Image], stored: str) -> None:
    """A synthetic FLAIR moved and scanned at 2.5x2.5x6 mm, stored axially or in sagittal voxel order (the same physical image)."""
    reference = synthetic_case["t1ce"]
    motion = rigid_motion(reference, (5.0, -3.0, 2.0), (4.0, -3.0, 2.0))
    scan = simulate_series(synthetic_case["flair"], motion, (2.5, 2.5, 6.0))
    if stored == "sagittal":
        scan = sitk.PermuteAxes(scan, [2, 1, 0])  # slices along L-R: other voxel order and direction, same physical image
        assert scan.GetSpacing() == (6.0, 2.5, 2.5)
    found = register_rigid(reference, scan, name="flair")
    error_mm, error_degrees = registration_error(found, motion, brain_box_corners(reference))
    assert error_mm < 1.0 and error_degrees < 1.0, (error_mm, error_degrees)
    initial_mm, _ = registration_error(sitk.Euler3DTransform(), motion, brain_box_corners(reference))
    assert initial_mm > 8.0  # the motion was worth correcting


@pytest.mark.slow
@pytest.mark.real_data
def test_prepare_recovers_known_motions_of_a_real_case_at_5_mm(real_brats_dir: Path) -> None:
    """T1, T2 and FLAIR of a real case moved by ``benchmarks.raw_scans.MOTIONS`` (about 5 degrees, 4 mm) and scanned at 1x1x5 mm; T1ce the reference.

    BraTS's contrasts are not aligned to better than about a millimetre themselves (the same
    scans without motion register 0.5-1.7 mm from the identity), so the motion recovered is
    measured against the motion composed with the transform found for the scans without motion.
    The case is cropped to its brain plus 10 mm first (registration time scales with the reference's voxels).
    """
    case = read_case(real_brats_dir / "BraTS2021_00006")
    corners = brain_box_corners(case["t1ce"])
    low = np.min([case["t1ce"].TransformPhysicalPointToIndex(p) for p in corners], axis=0) - 10
    high = np.max([case["t1ce"].TransformPhysicalPointToIndex(p) for p in corners], axis=0) + 11
    low, high = np.maximum(low, 0), np.minimum(high, case["t1ce"].GetSize())
    cropped = {channel: image[low[0] : high[0], low[1] : high[1], low[2] : high[2]] for channel, image in case.items()}
    reference = cropped["t1ce"]
    motions, still = known_motions(reference), known_motions(reference, scale=0.0)
    moved, unmoved = scanned(cropped, motions), scanned(cropped, still)
    assert moved["flair"].GetSpacing() == (1.0, 1.0, 5.0) and moved["flair"].GetSize()[2] == round(reference.GetSize()[2] / 5)

    prepared = prepare_scans(moved, skull_strip=False)
    baseline = prepare_scans(unmoved, skull_strip=False)

    for channel, motion in motions.items():
        error_mm, error_degrees = registration_error(prepared.transforms[channel], compose(motion, baseline.transforms[channel]), corners)
        assert error_mm < 1.0 and error_degrees < 1.0, (channel, error_mm, error_degrees)  # measured: 0.15-0.23 mm, at most 0.1 degrees (0.38 mm uncropped)
        assert registration_error(baseline.transforms[channel], still[channel], corners)[0] < 2.5  # measured: 0.5-1.7 mm
    for volume in prepared.volumes.values():
        assert volume.GetSize() == reference.GetSize() and volume.GetSpacing() == (1.0, 1.0, 1.0)
        assert volume.GetOrigin() == pytest.approx(reference.GetOrigin()) and volume.GetDirection() == reference.GetDirection()
    # the FLAIR brought back matches the one brought back from the scan without motion (both went through 5 mm slices)
    brain = sitk.GetArrayViewFromImage(reference) > 0
    recovered = sitk.GetArrayViewFromImage(prepared.volumes["flair"])[brain]
    expected = sitk.GetArrayViewFromImage(baseline.volumes["flair"])[brain]
    assert np.corrcoef(recovered, expected)[0, 1] > 0.95


# ----------------------------------------------------------------------------- skull stripping (deepbet)


def _nilearn_mni152() -> tuple[sitk.Image, sitk.Image]:
    """nilearn's packaged MNI152 2009 T1 template (skull-stripped) and its brain mask, as SimpleITK images (no download)."""
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    def to_sitk(image) -> sitk.Image:
        matrix = np.diag([-1.0, -1.0, 1.0]) @ image.affine[:3, :3]  # RAS -> LPS
        spacing = np.linalg.norm(matrix, axis=0)
        converted = _image(np.asarray(image.dataobj, dtype=np.float32), tuple(spacing))
        converted.SetDirection((matrix / spacing).ravel().tolist())
        converted.SetOrigin((np.diag([-1.0, -1.0, 1.0]) @ image.affine[:3, 3]).tolist())
        return converted

    return to_sitk(load_mni152_template(resolution=1)), to_sitk(load_mni152_brain_mask(resolution=1))


@pytest.mark.slow
def test_skull_strip_of_the_mni152_template_with_a_skull_matches_its_brain_mask() -> None:
    template, reference_mask = _nilearn_mni152()
    head, _ = add_head(template)
    padding = [(h - t) // 2 for h, t in zip(head.GetSize(), template.GetSize())]
    reference_mask = sitk.ConstantPad(sitk.Cast(reference_mask, sitk.sitkUInt8), padding, padding, 0)
    mask = extract_brain(head)
    assert mask.GetSize() == head.GetSize() and mask.GetOrigin() == pytest.approx(head.GetOrigin())
    assert _dice(mask, reference_mask) > 0.97  # measured: 0.987
    assert _volume_ml(mask) == pytest.approx(_volume_ml(reference_mask), rel=0.05)  # measured: 1924 ml against 1883 ml


@pytest.mark.slow
def test_skull_strip_of_a_synthetic_head_applies_the_mask_to_every_contrast(synthetic_case: dict[str, sitk.Image]) -> None:
    heads = {}
    for channel, image in synthetic_case.items():
        heads[channel], brain = add_head(image, seed=len(heads))
    prepared = prepare_scans(heads, register=False, spacing=synthetic_case["t1ce"].GetSpacing()[0])
    assert prepared.brain_mask is not None
    assert _dice(prepared.brain_mask, brain) > 0.9
    outside = sitk.GetArrayViewFromImage(prepared.brain_mask) == 0
    for volume in prepared.volumes.values():
        assert not sitk.GetArrayViewFromImage(volume)[outside].any()
        assert sitk.GetArrayViewFromImage(volume)[~outside].mean() > 0


@pytest.mark.slow
@pytest.mark.real_data
def test_skull_strip_of_a_real_brain_with_a_skull_matches_its_brats_mask(real_brats_dir: Path) -> None:
    t1ce = sitk.ReadImage(str(real_brats_dir / "BraTS2021_00006" / "BraTS2021_00006_t1ce.nii.gz"))
    head, brain = add_head(t1ce)
    mask = extract_brain(head)
    assert _dice(mask, brain) > 0.95
    assert _volume_ml(mask) == pytest.approx(_volume_ml(brain), rel=0.08)


def test_resampling_onto_a_grid_of_the_same_voxel_centres_copies_the_voxels_exactly() -> None:
    image = sitk.GetImageFromArray(np.random.default_rng(4).normal(size=(7, 6, 5)).astype(np.float32))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    image.SetOrigin((3.0, 4.0, 5.0))
    sagittal = sitk.Flip(sitk.PermuteAxes(image, [1, 2, 0]), (False, False, True))  # the same voxel centres, another order
    shifted = sitk.Image(image)
    shifted.SetOrigin((3.5, 4.0, 5.0))  # half a voxel off: interpolated

    copied = resample_onto(image, sagittal, sitk.Euler3DTransform())

    assert samples_voxel_centres(image, sagittal, sitk.Transform()) and not samples_voxel_centres(image, shifted, sitk.Transform())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(copied), sitk.GetArrayFromImage(sagittal))
    interpolated = sitk.GetArrayFromImage(resample_onto(image, shifted, sitk.Transform()))
    np.testing.assert_allclose(interpolated[:, :, 1:], (sitk.GetArrayFromImage(image)[:, :, 1:] + sitk.GetArrayFromImage(image)[:, :, :-1]) / 2, rtol=1e-5)


# ----------------------------------------------------------------------------- a case on disk


def test_prepare_case_files_writes_a_prepared_case_from_a_case_folder_or_its_files(tmp_path: Path, case_dir: Path) -> None:
    from pipeline.datasets.discovery import discover_case

    written = prepare_case_files(case_dir, tmp_path / "prepared", register=False, skull_strip=False)
    assert sorted(written) == sorted(["t1", "t1ce", "t2", "flair", "t1_transform", "t2_transform", "flair_transform"])
    record = discover_case(tmp_path / "prepared")
    assert [p.name for p in record.images] == [f"prepared_{c}.nii.gz" for c in ("t1", "t1ce", "t2", "flair")]
    source = sitk.ReadImage(str(next(case_dir.glob("*_t1ce.nii.gz"))))
    prepared = sitk.ReadImage(str(written["t1ce"]))
    assert prepared.GetDirection() == pytest.approx(source.GetDirection()) and prepared.GetSpacing() == pytest.approx((1.0, 1.0, 1.0))
    files = [next(case_dir.glob(f"*_{c}.nii.gz")) for c in ("t1", "t1ce", "t2", "flair")]
    again = prepare_case_files(files, tmp_path / "from_files", register=False, skull_strip=False)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(again["flair"]))), sitk.GetArrayFromImage(sitk.ReadImage(str(written["flair"]))))


def test_prepare_case_files_refuses_to_write_into_the_source_and_names_bad_files(tmp_path: Path, case_dir: Path) -> None:
    with pytest.raises(ConfigError, match="is the input case's folder or inside it"):
        prepare_case_files(case_dir, case_dir / "prepared", register=False, skull_strip=False)
    assert not (case_dir / "prepared").exists()
    files = [next(case_dir.glob(f"*_{c}.nii.gz")) for c in ("t1", "t1ce", "t2", "flair")]
    with pytest.raises(ConfigError, match="is the input case's folder or inside it"):
        prepare_case_files(files, case_dir, register=False, skull_strip=False)
    broken = tmp_path / "Broken_t2.nii.gz"
    broken.write_bytes(b"not a scan")
    with pytest.raises(InputError, match=r"Broken_t2.nii.gz: cannot read the scan"):
        prepare_case_files([files[0], files[1], broken, files[3]], tmp_path / "out", register=False, skull_strip=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.real_data
def test_prediction_on_the_prepared_raw_scans_matches_the_prediction_on_the_original_case(real_brats_dir: Path) -> None:
    """Whole-tumour Dice >= 0.9 between a trained model's predictions on the moved 5 mm scans, once prepared, and on the original case.

    Needs a trained model: ``BRATS_TRAINED_MODEL`` names a run or bundle folder, else the bundle's
    shipped model where it has one.
    """
    model_dir = os.environ.get("BRATS_TRAINED_MODEL") or (BUNDLE_DIR if (BUNDLE_DIR / "models" / "model.pt").is_file() else None)
    if not model_dir:
        pytest.skip("no trained model: the bundle ships none here; set BRATS_TRAINED_MODEL to a run or bundle folder")
    case_dir = real_brats_dir / "BraTS2021_00006"
    original = read_case(case_dir)
    agreement = prediction_agreement(case_dir, scanned(original, known_motions(original["t1ce"])), Path(model_dir))
    assert agreement["whole_tumour_dice"] >= 0.9  # measured: 0.94 (a 2.5D model part-way through training on 21 real cases)
