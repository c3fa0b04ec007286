"""Preprocessing into the cache and its exact inverse (pipeline.preprocessing.prepare)."""

from __future__ import annotations

import base64
import gzip
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from nibabel.affines import apply_affine

from pipeline.preprocessing.cache import FORMAT_VERSION, META_FILE, load_case, read_meta, task_meta
from pipeline.cli.main import main
from pipeline.datasets.records import CaseRecord
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.geometry import restore_to_original
from pipeline.core.io import file_sha256, load_volume
from pipeline.tasks.labels import get_convention
from pipeline.tasks.modalities import MODALITIES, MSD_CHANNELS
from pipeline.preprocessing.prepare import prepare_case, preprocess_datalist
from pipeline.synth.layouts import LAYOUTS
from pipeline.tasks.task import DEFAULT_TASK, TASKS, resolve_task

SHAPE = (16, 18, 12)
BRATS = get_convention("brats2017")


def ras_affine() -> np.ndarray:
    return np.array([[2.0, 0, 0, -10], [0, 2.0, 0, -12], [0, 0, 3.0, 4], [0, 0, 0, 1]])


def lps_affine() -> np.ndarray:
    """BraTS's header convention: voxel order L-P-S."""
    return np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, SHAPE[1] - 1], [0, 0, 1.0, 0], [0, 0, 0, 1]])


def oblique_permuted_affine() -> np.ndarray:
    """Voxel axes stored (S, L, A) with voxel sizes 2, 1.5, 1.2, rotated 12 and 7 degrees off the world axes."""
    permutation = np.array([[0.0, -1, 0], [0, 0, 1], [1, 0, 0]])
    a, b = np.deg2rad(12), np.deg2rad(7)
    about_x = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    about_z = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = about_z @ about_x @ permutation @ np.diag([2.0, 1.5, 1.2])
    affine[:3, 3] = [30.0, -20.0, 15.0]
    return affine


AFFINES = {"ras": ras_affine, "lps": lps_affine, "oblique_permuted": oblique_permuted_affine}


def phantom(seed: int = 0, shape: tuple[int, int, int] = SHAPE) -> tuple[list[np.ndarray], np.ndarray]:
    """Four int16 modalities of an off-centre ellipsoidal 'brain' (zero outside) and a BraTS 0/1/2/4 label."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    centre = np.array(shape) * [0.45, 0.55, 0.5]
    radii = np.array(shape) * [0.3, 0.35, 0.3]
    brain = (((grid - centre) / radii) ** 2).sum(-1) <= 1
    images = []
    for channel in range(4):
        volume = np.zeros(shape, dtype=np.int16)
        volume[brain] = rng.integers(100 * (channel + 1), 400 * (channel + 2), size=int(brain.sum()))
        images.append(volume)
    images[3][brain & (rng.random(shape) < 0.05)] = 0  # FLAIR has a few zero voxels inside the brain
    distance = np.sqrt((((grid - centre) / radii) ** 2).sum(-1))
    label = np.zeros(shape, dtype=np.uint8)
    label[distance < 0.6] = 2
    label[distance < 0.4] = 4
    label[(distance < 0.25) & (grid[..., 0] < centre[0])] = 1
    return images, label


def save(path: Path, data: np.ndarray, affine: np.ndarray, **header: float) -> Path:
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    for key, value in header.items():
        image.header[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path


def write_case(root: Path, case_id: str, affine: np.ndarray, seed: int = 0, labelled: bool = True) -> CaseRecord:
    """A BraTS 2021-style case folder; returns its record."""
    images, label = phantom(seed)
    folder = root / case_id
    paths = tuple(save(folder / f"{case_id}_{name}.nii.gz", volume, affine) for name, volume in zip(MODALITIES, images))
    label_path = save(folder / f"{case_id}_seg.nii.gz", label, affine) if labelled else None
    return CaseRecord(case_id, paths, label_path, "training" if labelled else "unlabelled")


def write_datalist(path: Path, root: Path, records: list[CaseRecord], convention: str = "brats2017") -> Path:
    """A data list in the format of pipeline.datasets.datalist (all labelled cases in 'training', fold 0)."""
    payload = {"name": "test", "label_convention": convention, "data_root": str(root), "training": [], "validation": [], "test": [], "unlabelled": []}
    for record in records:
        entry = record.to_entry(root)
        if record.label is not None:
            entry["fold"] = 0
            payload["training"].append(entry)
        else:
            payload["unlabelled"].append(entry)
    path.write_text(json.dumps(payload))
    return path


def source_label(record: CaseRecord) -> np.ndarray:
    return np.asarray(nib.load(record.label).dataobj)


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("storage", sorted(AFFINES))
def test_label_restores_bit_for_bit(tmp_path: Path, storage: str) -> None:
    record = write_case(tmp_path, "case", AFFINES[storage]())
    prepared = prepare_case(record)
    original = source_label(record)
    restored = restore_to_original(prepared.label, prepared.meta)
    assert restored.shape == original.shape
    assert restored.dtype == np.uint8
    assert np.array_equal(BRATS.from_internal(restored), original)
    assert np.array_equal(restored, BRATS.to_internal(original))


@pytest.mark.parametrize("storage", sorted(AFFINES))
def test_cached_label_lies_on_the_same_world_points(tmp_path: Path, storage: str) -> None:
    record = write_case(tmp_path, "case", AFFINES[storage]())
    prepared = prepare_case(record)
    original = BRATS.to_internal(source_label(record))
    source_affine = nib.load(record.label).affine
    cache_affine = np.array(prepared.meta["affine"])
    assert np.array_equal(nib.orientations.io_orientation(cache_affine), [[0, 1], [1, 1], [2, 1]])  # the cache grid is RAS
    for value in (1, 2, 3):
        source_points = apply_affine(source_affine, np.argwhere(original == value))
        z, x, y = np.nonzero(prepared.label == value)
        cache_points = apply_affine(cache_affine, np.stack([x, y, z], axis=1))
        assert len(source_points) == len(cache_points) > 0
        order = lambda points: points[np.lexsort(np.round(points, 3).T)]  # noqa: E731
        np.testing.assert_allclose(order(cache_points), order(source_points), atol=1e-4)


@pytest.mark.parametrize("storage", sorted(AFFINES))
def test_image_restores_onto_the_source_voxels(tmp_path: Path, storage: str) -> None:
    record = write_case(tmp_path, "case", AFFINES[storage]())
    prepared = prepare_case(record)
    restored = restore_to_original(prepared.image.transpose(1, 0, 2, 3), prepared.meta)  # (C, X0, Y0, Z0)
    for channel, path in enumerate(record.images):
        source = np.asarray(nib.load(path).dataobj).astype(np.float64)
        assert np.array_equal(restored[channel] != 0, source != 0)
        mean, std = prepared.meta["normalization"]["mean"][channel], prepared.meta["normalization"]["std"][channel]
        inside = source != 0
        np.testing.assert_allclose(restored[channel][inside], (source[inside] - mean) / std, atol=4e-3)


def test_spacing_and_header_are_recorded(tmp_path: Path) -> None:
    record = write_case(tmp_path, "case", oblique_permuted_affine())
    meta = prepare_case(record).meta
    # stored axes (S, L, A) with sizes 2, 1.5, 1.2 -> cached (x, y, z) = (1.5, 1.2, 2)
    np.testing.assert_allclose(meta["spacing"], [1.5, 1.2, 2.0], rtol=1e-6)
    reference = nib.load(record.images[0])
    assert meta["original"]["shape"] == list(SHAPE)
    np.testing.assert_array_equal(meta["original"]["affine"], reference.affine)
    assert meta["original"]["sform_code"] == 1 and meta["original"]["qform_code"] == 1
    stored = base64.b64decode(meta["original"]["header"])
    with gzip.open(record.images[0]) as handle:
        assert stored == handle.read(348)  # the file's own header, byte for byte
    np.testing.assert_array_equal(nib.Nifti1Header(stored).get_best_affine(), reference.header.get_best_affine())
    assert meta["canonical_shape"] == [SHAPE[1], SHAPE[2], SHAPE[0]]


# ----------------------------------------------------------------------------- contents


def test_zscore_over_brain_voxels_and_zero_background(tmp_path: Path) -> None:
    record = write_case(tmp_path, "case", lps_affine())
    prepared = prepare_case(record)
    image = prepared.image
    assert image.dtype == np.float32 and image.ndim == 4 and image.shape[1] == 4
    sources = [np.asarray(nib.load(path).dataobj) for path in record.images]
    for channel in range(4):
        values = image[:, channel]
        brain = values[values != 0]
        assert brain.size == np.count_nonzero(sources[channel])  # no brain voxel cropped away or zeroed
        assert abs(float(brain.mean())) < 1e-2
        assert abs(float(brain.std()) - 1) < 1e-2
    union = np.any(image != 0, axis=1)
    flair_zero_in_brain = union & (image[:, 3] == 0)
    assert flair_zero_in_brain.any()  # per-channel mask: a zero FLAIR voxel inside the brain stays 0
    assert np.all(image[:, :, ~union.any(axis=0)] == 0)


def test_crop_box_holds_the_brain_plus_margin(tmp_path: Path) -> None:
    record = write_case(tmp_path, "case", ras_affine())
    sources = np.stack([np.asarray(nib.load(path).dataobj) for path in record.images])
    brain = np.argwhere(np.any(sources != 0, axis=0))
    for margin in (0, 2):
        meta = prepare_case(record, margin=margin).meta
        expected = [[max(int(lo) - margin, 0), min(int(hi) + 1 + margin, n)] for lo, hi, n in zip(brain.min(0), brain.max(0), SHAPE)]
        assert meta["crop_box"] == expected  # RAS storage: canonical grid = source grid
        assert meta["shape"] == [expected[2][1] - expected[2][0], 4, expected[0][1] - expected[0][0], expected[1][1] - expected[1][0]]


def test_label_outside_the_brain_is_kept(tmp_path: Path) -> None:
    record = write_case(tmp_path, "case", lps_affine())
    label = source_label(record)
    label[0, 0, 0] = 2  # an (implausible) label voxel where every modality is zero
    save(record.label, label, lps_affine())
    prepared = prepare_case(record)
    assert np.array_equal(BRATS.from_internal(restore_to_original(prepared.label, prepared.meta)), label)


def test_msd_4d_file_gives_the_same_cache_as_separate_files(tmp_path: Path) -> None:
    separate = write_case(tmp_path / "brats", "case", lps_affine())
    images, label = phantom(0)
    stacked = np.zeros((*SHAPE, 4), dtype=np.int16)
    for name, volume in zip(MODALITIES, images):
        stacked[..., MSD_CHANNELS[name]] = volume
    msd_label = get_convention("msd").from_internal(BRATS.to_internal(label))
    record = CaseRecord(
        "BRATS_001",
        (save(tmp_path / "msd" / "imagesTr" / "BRATS_001.nii.gz", stacked, lps_affine()),),
        save(tmp_path / "msd" / "labelsTr" / "BRATS_001.nii.gz", msd_label, lps_affine()),
        "training",
        channel_indices=tuple(MSD_CHANNELS[name] for name in MODALITIES),
        label_convention="msd",
    )
    from_4d, from_files = prepare_case(record), prepare_case(separate)
    assert np.array_equal(from_4d.image, from_files.image)
    assert np.array_equal(from_4d.label, from_files.label)
    assert from_4d.meta["original"]["image_shape"] == [*SHAPE, 4] and from_4d.meta["original"]["shape"] == list(SHAPE)
    restored = get_convention("msd").from_internal(restore_to_original(from_4d.label, from_4d.meta))
    assert np.array_equal(restored, msd_label)


def test_resection_cavity_is_refused_unless_allowed(tmp_path: Path) -> None:
    record = write_case(tmp_path, "case", lps_affine())
    label = source_label(record)
    label[label == 4] = 3
    label[label == 1] = 4  # BraTS 2024 post-treatment: 4 = resection cavity
    save(record.label, label, lps_affine())
    record = CaseRecord(record.case_id, record.images, record.label, "training", label_convention="brats2023")
    with pytest.raises(InputError, match="4") as caught:
        prepare_case(record)
    assert caught.value.where == str(record.label)
    prepared = prepare_case(record, allow_resection_cavity=True)
    assert set(np.unique(prepared.label)) == {0, 2, 3}


# ----------------------------------------------------------------------------- validation


def _broken(tmp_path: Path, problem: str) -> tuple[CaseRecord, Path]:
    record = write_case(tmp_path, "case", lps_affine())
    images, label = phantom(0)
    if problem == "shape":
        return record, save(record.images[2], np.zeros((4, 4, 4), np.int16), lps_affine())
    if problem == "affine":
        shifted = lps_affine()
        shifted[0, 3] += 1.5
        return record, save(record.images[1], images[1], shifted)
    if problem == "nan":
        volume = images[3].astype(np.float32)
        volume[5, 5, 5] = np.nan
        return record, save(record.images[3], volume, lps_affine())
    if problem == "labels":
        label[label == 4] = 3
        return record, save(record.label, label, lps_affine())
    if problem == "zero":
        return record, save(record.images[1], np.zeros(SHAPE, np.int16), lps_affine())
    if problem == "missing":
        record.images[0].unlink()
        return record, record.images[0]
    if problem == "damaged":
        record.images[2].write_bytes(record.images[2].read_bytes()[:200])
        return record, record.images[2]
    if problem == "truncated":  # SimpleITK would read this without complaint
        record.images[2].write_bytes(record.images[2].read_bytes()[:-300])
        return record, record.images[2]
    if problem == "corrupted":
        data = bytearray(record.label.read_bytes())
        data[len(data) // 2] ^= 0xFF
        record.label.write_bytes(bytes(data))
        return record, record.label
    raise AssertionError(problem)


@pytest.mark.parametrize(
    "problem, message",
    [
        ("shape", "shape"),
        ("affine", "affine differs"),
        ("nan", "NaN"),
        ("labels", r"labels \[3\]"),
        ("zero", "entirely zero"),
        ("missing", "not found"),
        ("damaged", "damaged|not a readable"),
        ("truncated", "damaged or truncated"),
        ("corrupted", "damaged|not a readable"),
    ],
)
def test_bad_input_names_the_file(tmp_path: Path, problem: str, message: str) -> None:
    record, culprit = _broken(tmp_path, problem)
    with pytest.raises(InputError, match=message) as caught:
        prepare_case(record)
    assert caught.value.where == str(culprit)


def test_load_volume_matches_nibabel_including_scaled_headers(tmp_path: Path) -> None:
    images, label = phantom(0)
    plain = save(tmp_path / "plain.nii.gz", images[0], lps_affine())
    scaled = save(tmp_path / "scaled.nii.gz", images[1], lps_affine(), scl_slope=0.5, scl_inter=3.0)
    uncompressed = save(tmp_path / "seg.nii", label, oblique_permuted_affine())
    for path in (plain, scaled, uncompressed):
        _, voxels = load_volume(path)
        expected = np.asarray(nib.load(path).dataobj)
        assert voxels.dtype == expected.dtype and voxels.shape == expected.shape
        assert np.array_equal(voxels, expected)
    assert load_volume(scaled)[1].dtype.kind == "f"


# ----------------------------------------------------------------------------- the cache


@pytest.fixture()
def cohort(tmp_path: Path) -> tuple[Path, list[CaseRecord]]:
    root = tmp_path / "data"
    records = [
        write_case(root, "CaseA", lps_affine(), seed=1),
        write_case(root, "CaseB", oblique_permuted_affine(), seed=2),
        write_case(root, "CaseC", ras_affine(), seed=3, labelled=False),
    ]
    return write_datalist(tmp_path / "list.json", root, records), records


def cache_bytes(cache: Path) -> dict[str, bytes]:
    return {str(p.relative_to(cache)): p.read_bytes() for p in sorted(cache.rglob("*")) if p.is_file()}


def test_cache_layout_and_manifest(cohort: tuple[Path, list[CaseRecord]], tmp_path: Path) -> None:
    datalist, records = cohort
    checksums = {path: file_sha256(path) for record in records for path in record.images + ((record.label,) if record.label else ())}
    summary = preprocess_datalist(datalist, tmp_path / "cache", progress=False)
    assert summary.processed == ("CaseA", "CaseB", "CaseC") and summary.skipped == ()
    assert checksums == {path: file_sha256(path) for path in checksums}  # sources untouched

    index = json.loads((tmp_path / "cache" / "cache.json").read_text())
    assert index["cases"] == ["CaseA", "CaseB", "CaseC"] and index["datalist_sha256"]
    for record in records:
        cached = load_case(tmp_path / "cache", record.case_id)
        meta = cached.meta
        assert isinstance(cached.image, np.memmap) and cached.image.dtype == np.float16
        assert list(cached.image.shape) == meta["shape"] and cached.image.shape[1] == 4
        for key in ("case_id", "source", "label_convention", "original", "orientation", "canonical_shape", "crop_box", "spacing", "shape", "foreground_per_slice", "has_label"):
            assert key in meta
        assert meta["complete"] is True and meta["format_version"] == FORMAT_VERSION
        for key in ("shape", "affine", "qform", "qform_code", "sform", "sform_code", "zooms"):
            assert key in meta["original"]
        assert np.array_equal(cached.image, prepare_case(record).image.astype(np.float16))
        if record.label is None:
            assert cached.label is None and meta["has_label"] is False and meta["foreground_per_slice"] is None
            assert not (tmp_path / "cache" / record.case_id / "label.npy").exists()
        else:
            assert cached.label.dtype == np.uint8 and cached.label.shape == (meta["shape"][0], *meta["shape"][2:])
            assert meta["foreground_per_slice"] == [int(n) for n in np.count_nonzero(cached.label, axis=(1, 2))]
            assert np.array_equal(BRATS.from_internal(restore_to_original(cached.label, meta)), source_label(record))


def test_same_input_gives_the_same_bytes(cohort: tuple[Path, list[CaseRecord]], tmp_path: Path) -> None:
    datalist, _ = cohort
    preprocess_datalist(datalist, tmp_path / "one", progress=False)
    preprocess_datalist(datalist, tmp_path / "two", progress=False)
    assert cache_bytes(tmp_path / "one") == cache_bytes(tmp_path / "two")


def test_resume_skips_finished_cases_and_redoes_unfinished_ones(cohort: tuple[Path, list[CaseRecord]], tmp_path: Path) -> None:
    datalist, records = cohort
    cache = tmp_path / "cache"
    preprocess_datalist(datalist, cache, progress=False)
    finished = cache_bytes(cache)
    again = preprocess_datalist(datalist, cache, progress=False)
    assert again.processed == () and again.skipped == ("CaseA", "CaseB", "CaseC")

    (cache / "CaseA" / "meta.json").unlink()  # interrupted before the manifest: not done
    (cache / "CaseB" / "image.npy").write_bytes(b"half")  # a stale partial image under a missing manifest
    (cache / "CaseB" / "meta.json").unlink()
    (cache / "CaseB" / ".image.npy.x.tmp").write_bytes(b"leftover")
    resumed = preprocess_datalist(datalist, cache, progress=False)
    assert resumed.processed == ("CaseA", "CaseB") and resumed.skipped == ("CaseC",)
    assert cache_bytes(cache) == finished

    meta_path = cache / "CaseA" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["complete"] = False
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="not a complete cache entry"):
        load_case(cache, "CaseA")
    os.utime(records[2].images[0], ns=(0, 10**9))  # a changed source file
    redone = preprocess_datalist(datalist, cache, progress=False)
    assert redone.processed == ("CaseA", "CaseC")
    assert preprocess_datalist(datalist, cache, progress=False, margin=1).processed == ("CaseA", "CaseB", "CaseC")


def test_splits_select_cases(cohort: tuple[Path, list[CaseRecord]], tmp_path: Path) -> None:
    datalist, _ = cohort
    summary = preprocess_datalist(datalist, tmp_path / "cache", progress=False, splits=["unlabelled"])
    assert summary.processed == ("CaseC",)
    assert json.loads((tmp_path / "cache" / "cache.json").read_text())["cases"] == ["CaseC"]


def test_workers_give_the_same_cache_and_report_bad_cases(cohort: tuple[Path, list[CaseRecord]], tmp_path: Path) -> None:
    datalist, records = cohort
    preprocess_datalist(datalist, tmp_path / "serial", progress=False)
    preprocess_datalist(datalist, tmp_path / "parallel", workers=2, progress=False)
    assert cache_bytes(tmp_path / "serial") == cache_bytes(tmp_path / "parallel")

    label = source_label(records[1])
    label[label == 4] = 7
    save(records[1].label, label, oblique_permuted_affine())
    with pytest.raises(InputError, match=r"labels \[7\]") as caught:
        preprocess_datalist(datalist, tmp_path / "parallel", workers=2, progress=False)
    assert caught.value.where == str(records[1].label)
    assert not (tmp_path / "parallel" / "CaseB" / "meta.json").exists()


def test_cli_preprocess(cohort: tuple[Path, list[CaseRecord]], tmp_path: Path) -> None:
    datalist, records = cohort
    runner = CliRunner()
    result = runner.invoke(main, ["preprocess", "--datalist", str(datalist), "--cache", str(tmp_path / "cache"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "3 case(s) preprocessed" in result.output
    assert (tmp_path / "cache" / "CaseB" / "meta.json").is_file()
    result = runner.invoke(main, ["preprocess", "--datalist", str(datalist), "--cache", str(tmp_path / "cache"), "--splits", "training", "--no-progress"])
    assert result.exit_code == 0 and "0 case(s) preprocessed, 2 already cached" in result.output

    records[0].images[1].write_bytes(b"not a nifti")
    result = runner.invoke(main, ["preprocess", "--datalist", str(datalist), "--cache", str(tmp_path / "other"), "--no-progress"])
    assert result.exit_code == 1
    assert f"error: {records[0].images[1]}: " in result.output


# ----------------------------------------------------------------------------- tasks


@pytest.mark.parametrize("task_name", list(LAYOUTS))
def test_every_built_in_task_from_its_synthetic_cohort(task_name: str, tmp_path: Path) -> None:
    """synth --task -> datalist --task -> preprocess (every task with a synthetic layout): the task's channels, its labels, a label round trip through its convention."""
    from pipeline.datasets.datalist import build_datalist, load_datalist
    from pipeline.synth import generate_cohort

    task = TASKS[task_name]
    generate_cohort(tmp_path / "data", cases=2, seed=0, size="tiny", progress=False, task=task_name)
    build_datalist(tmp_path / "data", tmp_path / "list.json", folds=1, test_fraction=0.0, progress=False, task=task_name)
    preprocess_datalist(tmp_path / "list.json", tmp_path / "cache", progress=False)
    seen = set()
    for record in load_datalist(tmp_path / "list.json").cases("all"):
        cached = load_case(tmp_path / "cache", record.case_id, task=task)
        assert cached.image.shape[1] == task.num_channels and cached.meta["modalities"] == list(task.channels)
        assert cached.meta["task"] == {"name": task_name, "channels": list(task.channels), "classes": list(task.classes)}
        assert cached.label.max() < task.num_classes
        convention = task.convention(record.label_convention)
        seg = np.asarray(nib.load(record.label).dataobj)
        internal = restore_to_original(cached.label, cached.meta)
        assert np.array_equal(internal, convention.to_internal(seg))
        if task_name != "whole-tumour":  # one file value per class: the file labels come back exactly
            assert np.array_equal(convention.from_internal(internal), seg)
        seen |= set(np.unique(cached.label).tolist())
    assert seen == set(range(task.num_classes)) or task_name == "brats2024-post-treatment" and seen >= {0, 2, 3, 4}


def test_a_flair_only_whole_tumour_cache_from_the_synthetic_cohort(tiny_cohort: Path, tiny_cache: Path, tmp_path: Path) -> None:
    from pipeline.datasets.datalist import build_datalist

    build_datalist(tiny_cohort, tmp_path / "flair.json", folds=2, test_fraction=0.25, seed=0, progress=False, task="whole-tumour", channels=["flair"])
    summary = preprocess_datalist(tmp_path / "flair.json", tmp_path / "cache", progress=False)
    assert len(summary.processed) == 8
    task = resolve_task("whole-tumour", ["flair"])
    for case_id in summary.processed:
        flair, glioma = load_case(tmp_path / "cache", case_id, task=task), load_case(tiny_cache, case_id)
        assert flair.image.shape[1] == 1 and np.array_equal(flair.image[:, 0], glioma.image[:, MODALITIES.index("flair")])
        assert np.array_equal(flair.label, (glioma.label > 0).astype(np.uint8))
        assert flair.meta["foreground_per_slice"] == glioma.meta["foreground_per_slice"]


def test_a_cache_read_through_the_data_list_of_another_task_is_one_line(tiny_cohort: Path, tiny_datalist: Path, tmp_path: Path) -> None:
    from pipeline.datasets.datalist import build_datalist
    from pipeline.training.workflow import fold_case_ids

    flair_list = tmp_path / "flair.json"
    build_datalist(tiny_cohort, flair_list, folds=2, test_fraction=0.25, seed=0, progress=False, task="whole-tumour", channels=["flair"])
    cache = tmp_path / "cache"
    preprocess_datalist(flair_list, cache, progress=False)
    case_id = fold_case_ids(flair_list, 0, cache)[0][0]
    with pytest.raises(InputError) as caught:
        fold_case_ids(tiny_datalist, 0, cache)
    message = str(caught.value)
    assert message.startswith(f"{cache}/") and "\n" not in message
    assert message.endswith(": built for task whole-tumour[flair] (channels flair), not brats-glioma (channels t1, t1ce, t2, flair); run preprocess again")
    summary = preprocess_datalist(tiny_datalist, cache, progress=False)  # the glioma data list rebuilds every case
    assert len(summary.processed) == 8 and read_meta(cache, case_id, task=DEFAULT_TASK)["task"] == task_meta(DEFAULT_TASK)


def test_a_cache_written_before_tasks_is_the_glioma_task(tiny_datalist: Path, tiny_cache: Path, tmp_path: Path) -> None:
    import shutil

    cache = Path(shutil.copytree(tiny_cache, tmp_path / "cache"))
    for meta_path in cache.glob(f"*/{META_FILE}"):
        meta = json.loads(meta_path.read_text())
        del meta["task"]
        meta_path.write_text(json.dumps(meta))
    case_id = meta_path.parent.name
    assert read_meta(cache, case_id, task=DEFAULT_TASK)["task"] == task_meta(DEFAULT_TASK)
    with pytest.raises(InputError, match="built for task brats-glioma"):
        read_meta(cache, case_id, task=TASKS["whole-tumour"])
    assert preprocess_datalist(tiny_datalist, cache, progress=False).processed == ()  # nothing to redo


def test_prepare_case_refuses_a_record_of_other_channels(tmp_path: Path) -> None:
    record = write_case(tmp_path / "data", "CaseA", lps_affine(), seed=1)
    with pytest.raises(ConfigError, match="the case's channels t1, t1ce, t2, flair are not task whole-tumour\\[flair\\]'s \\(flair\\)"):
        prepare_case(record, task=resolve_task("whole-tumour", ["flair"]))


# ----------------------------------------------------------------------------- real BraTS cases


@pytest.mark.real_data
@pytest.mark.parametrize("case_id", ["BraTS2021_00006", "Brats18_2013_2_1"])
def test_real_case_label_restores_bit_for_bit(real_brats_dir: Path, tmp_path: Path, case_id: str) -> None:
    folder = real_brats_dir / case_id
    record = CaseRecord(case_id, tuple(folder / f"{case_id}_{name}.nii.gz" for name in MODALITIES), folder / f"{case_id}_seg.nii.gz", "training")
    prepared = prepare_case(record)
    original = source_label(record)
    restored = BRATS.from_internal(restore_to_original(prepared.label, prepared.meta))
    assert np.array_equal(restored.astype(original.dtype), original)
    assert prepared.meta["original"]["label_dtype"] == original.dtype.name
    for path in (*record.images, record.label):
        assert np.array_equal(load_volume(path)[1], np.asarray(nib.load(path).dataobj))  # SimpleITK voxels == nibabel's


@pytest.mark.real_data
def test_real_cases_through_a_datalist(real_brats_dir: Path, tmp_path: Path) -> None:
    gli = "BraTS-GLI-00001-000"
    payload = {
        "name": "real",
        "label_convention": "brats2017",
        "data_root": str(real_brats_dir),
        "training": [
            {"case_id": "BraTS2021_00006", "image": [f"BraTS2021_00006/BraTS2021_00006_{m}.nii.gz" for m in MODALITIES], "label": "BraTS2021_00006/BraTS2021_00006_seg.nii.gz", "fold": 0}
        ],
        "validation": [],
        "test": [],
        "unlabelled": [{"case_id": gli, "image": [f"{gli}/{gli}-{suffix}.nii.gz" for suffix in ("t1n", "t1c", "t2w", "t2f")]}],
    }
    datalist = tmp_path / "real.json"
    datalist.write_text(json.dumps(payload))
    summary = preprocess_datalist(datalist, tmp_path / "cache", progress=False)
    assert summary.processed == ("BraTS2021_00006", gli)
    cached = load_case(tmp_path / "cache", gli)
    assert cached.label is None and cached.image.shape[1] == 4
    assert cached.meta["original"]["shape"] == [240, 240, 155]
    assert cached.meta["orientation"] == [[0, -1], [1, -1], [2, 1]]  # L-P-S storage flipped to R-A-S


@pytest.mark.real_data
def test_real_cases_flair_only_whole_tumour(real_brats_dir: Path, tmp_path: Path) -> None:
    from pipeline.datasets.datalist import build_datalist

    payload = build_datalist(real_brats_dir, tmp_path / "flair.json", folds=1, test_fraction=0.0, progress=False, task="whole-tumour", channels=["flair"])
    entries = payload["training"] + payload["validation"] + payload["unlabelled"]  # the BraTS 2023 case has no label
    assert payload["modalities"] == ["flair"] and len(entries) == 3 and all(len(e["image"]) == 1 for e in entries)
    assert sorted(e["image"][0].rsplit("/", 1)[1] for e in entries) == ["BraTS-GLI-00001-000-t2f.nii.gz", "BraTS2021_00006_flair.nii.gz", "Brats18_2013_2_1_flair.nii.gz"]
    summary = preprocess_datalist(tmp_path / "flair.json", tmp_path / "cache", splits=["training", "validation"], progress=False)
    assert sorted(summary.processed) == ["BraTS2021_00006", "Brats18_2013_2_1"]
    for case_id in summary.processed:
        cached = load_case(tmp_path / "cache", case_id, task=resolve_task("whole-tumour", ["flair"]))
        assert cached.image.shape[1] == 1 and set(np.unique(cached.label).tolist()) == {0, 1}


def test_synthetic_cohort_cache(tiny_cache: Path) -> None:
    index = json.loads((tiny_cache / "cache.json").read_text())
    assert len(index["cases"]) == 8
    for case_id in index["cases"]:
        cached = load_case(tiny_cache, case_id)
        meta = cached.meta
        assert cached.image.dtype == np.float16 and list(cached.image.shape) == meta["shape"]
        assert meta["orientation"] == [[0, -1], [1, -1], [2, 1]]  # the cohort is stored L-P-S like BraTS
        seg = np.asarray(nib.load(meta["source"]["label"]).dataobj)
        convention = get_convention(meta["label_convention"])
        assert np.array_equal(convention.from_internal(restore_to_original(cached.label, meta)), seg)
        assert sum(meta["foreground_per_slice"]) == np.count_nonzero(seg)


# ----------------------------------------------------------------------------- 2D layouts


def _planar_cache(root: Path, tmp_path: Path, task=None) -> tuple[Path, list[CaseRecord]]:
    from pipeline.datasets.datalist import build_datalist, load_datalist

    build_datalist(root, tmp_path / "list.json", folds=1, test_fraction=0.0, progress=False, task=task)
    preprocess_datalist(tmp_path / "list.json", tmp_path / "cache", progress=False)
    return tmp_path / "cache", load_datalist(tmp_path / "list.json").cases("all")


def test_kaggle_patients_preprocess_into_three_channel_volumes(tmp_path: Path) -> None:
    from planar_cases import kaggle_root

    from pipeline.core.io import read_image_2d

    cache, records = _planar_cache(kaggle_root(tmp_path / "kaggle_3m"), tmp_path)
    for record in records:
        cached = load_case(cache, record.case_id, task=TASKS["kaggle-lgg"])
        meta = cached.meta
        slices = meta["original"]["slices"]
        assert cached.image.dtype == np.float16 and cached.image.shape[:2] == (len(slices), 3)
        assert meta["original"]["format"] == "kaggle-lgg" and meta["original"]["shape"] == [16, 16, len(slices)]
        assert meta["spacing"] == [1.0, 1.0, 1.0] and meta["normalization"]["method"] == "zscore_nonzero"
        assert [s["number"] for s in slices] == list(range(1, len(slices) + 1))
        masks = np.stack([read_image_2d(s["mask"]) for s in slices], axis=2)
        restored = restore_to_original(cached.label, meta)  # (row, column, slice): slice z is the mask of slices[z]
        assert np.array_equal(restored, (masks > 0).astype(np.uint8))
        assert np.array_equal(TASKS["kaggle-lgg"].convention("mask255").from_internal(restored), masks)
        brain = np.stack([read_image_2d(s["image"]) for s in slices], axis=2)[..., 1] != 0  # FLAIR's non-zero pixels
        flair = restore_to_original(cached.image[:, 1].astype(np.float32), meta)
        assert abs(float(flair[brain].mean())) < 1e-2 and np.all(flair[~brain] == 0)


def test_images_of_different_sizes_are_padded_to_the_tasks_size_and_cropped_back(tmp_path: Path) -> None:
    from planar_cases import image_pairs

    from pipeline.core.io import read_image_2d
    from pipeline.tasks.task import task_from_dict

    task = task_from_dict({**TASKS["image-mask-2d"].to_dict(), "planar_size": [24, 24]})
    cache, records = _planar_cache(image_pairs(tmp_path / "pairs", value=1), tmp_path, task=task)
    for record in records:
        cached = load_case(cache, record.case_id, task=task)
        meta = cached.meta
        assert cached.image.shape == (1, 1, 24, 24) and cached.label.shape == (1, 24, 24)
        assert meta["task"]["planar_size"] == [24, 24] and meta["original"]["format"] == "image-2d"
        (top, left), (rows, columns) = meta["padding"]["offset"], meta["padding"]["cropped_shape"]
        label = cached.label[:, top : top + rows, left : left + columns]
        mask = read_image_2d(record.label)
        assert meta["original"]["shape"][:2] == list(mask.shape)
        assert np.array_equal(restore_to_original(label, meta)[:, :, 0], mask)


def test_rgb_image_pairs_give_three_channels(tmp_path: Path) -> None:
    from planar_cases import image_pairs

    cache, records = _planar_cache(image_pairs(tmp_path / "rgb", rgb=True), tmp_path)
    cached = load_case(cache, records[0].case_id, task=TASKS["image-mask-2d-rgb"])
    assert cached.image.shape == (1, 3, 512, 512) and cached.meta["modalities"] == ["red", "green", "blue"]


@pytest.mark.real_data
def test_two_real_kaggle_patients_keep_every_mask_pixel(kaggle_lgg_dir: Path, tmp_path: Path) -> None:
    from pipeline.datasets.datalist import build_datalist, load_datalist
    from pipeline.core.io import read_image_2d

    build_datalist(kaggle_lgg_dir, tmp_path / "lgg.json", progress=False)
    records = load_datalist(tmp_path / "lgg.json").cases("all")[:2]
    summary = preprocess_datalist(tmp_path / "lgg.json", tmp_path / "cache", splits=sorted({r.split for r in records}), progress=False)
    for record in records:
        assert record.case_id in summary.cases
        cached = load_case(tmp_path / "cache", record.case_id)
        masks = [read_image_2d(s["mask"]) for s in cached.meta["original"]["slices"]]
        assert cached.image.shape[1] == 3 and cached.image.shape[0] == len(masks)
        assert int(np.count_nonzero(cached.label)) == sum(int(np.count_nonzero(m)) for m in masks)
        assert cached.meta["foreground_per_slice"] == [int(np.count_nonzero(m)) for m in masks]
