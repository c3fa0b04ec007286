"""Raw cases -> the memory-mappable training cache, and the exact inverse for predictions.

Cache layout, one folder per case (``cache_dir/<case_id>/``):

``image.npy``
    float16, shape ``(Z, C=4, X, Y)``: slice axis first (a 2.5D stack is one contiguous read),
    channels in :data:`pipeline.modalities.MODALITIES` order, voxels in the closest canonical
    RAS order (exact axis permutation and flips, never resampled), cropped to the brain box
    (any modality or the label non-zero) plus ``margin`` voxels, z-scored per channel over that
    channel's non-zero voxels; voxels that are zero in the source stay exactly 0.
``label.npy``
    uint8, shape ``(Z, X, Y)``, internal labels 0-3 (absent for unlabelled cases).
``meta.json``
    written last; ``"complete": true`` marks the case done. Everything needed to map a
    prediction back onto the source file (:func:`restore_to_original`) and to write it with the
    source header (``original.header``: the reference image's NIfTI header, base64).

``cache_dir/cache.json`` lists the data list (path, sha256) and the complete cases.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import multiprocessing
import os
import struct
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from nibabel.orientations import apply_orientation
from tqdm.auto import tqdm

from pipeline.datalist import SPLITS, load_datalist
from pipeline.datasets.records import CaseRecord
from pipeline.errors import ConfigError, InputError, PipelineError
from pipeline.geometry import (
    bounding_box,
    box_slices,
    cache_affine,
    reorient_box,
    reoriented_shape,
    restore_to_original,
    voxel_orientation,
)
from pipeline.io import load_nifti, read_voxels, save_npy, write_json
from pipeline.labels import get_convention
from pipeline.modalities import MODALITIES

__all__ = [
    "DEFAULT_MARGIN",
    "FORMAT_VERSION",
    "CachedCase",
    "PreparedCase",
    "PreprocessSummary",
    "load_cached_case",
    "load_volume",
    "prepare_case",
    "preprocess_datalist",
    "restore_to_original",
]

#: Version of the cache layout; a cache entry of another version is rebuilt.
FORMAT_VERSION = 1

#: Voxels kept around the brain box on every side.
DEFAULT_MARGIN = 4

#: Largest affine difference (mm) accepted between the files of one case (as in pipeline.datasets.validation).
AFFINE_TOLERANCE = 1e-3

IMAGE_FILE, LABEL_FILE, META_FILE, INDEX_FILE = "image.npy", "label.npy", "meta.json", "cache.json"


@dataclass(frozen=True)
class PreparedCase:
    """One preprocessed case in memory.

    Attributes:
        image: float32 ``(Z, C, X, Y)`` (the values the cache stores as float16).
        label: uint8 ``(Z, X, Y)`` internal labels, or None.
        meta: the case manifest (the content of ``meta.json``).
    """

    image: np.ndarray
    label: np.ndarray | None
    meta: dict


@dataclass(frozen=True)
class CachedCase:
    """One case read from the cache (memory-mapped by default): float16 image, uint8 label or None, manifest."""

    image: np.ndarray
    label: np.ndarray | None
    meta: dict


@dataclass(frozen=True)
class PreprocessSummary:
    """What :func:`preprocess_datalist` did."""

    cache_dir: Path
    processed: tuple[str, ...] = field(default_factory=tuple)
    skipped: tuple[str, ...] = field(default_factory=tuple)
    seconds: float = 0.0

    @property
    def cases(self) -> tuple[str, ...]:
        """Every case of the selection, processed now or already cached."""
        return self.processed + self.skipped

    def __str__(self) -> str:
        return (
            f"{len(self.processed)} case(s) preprocessed, {len(self.skipped)} already cached "
            f"-> {self.cache_dir} ({self.seconds:.1f} s)"
        )


# ----------------------------------------------------------------------------- reading


class _ImageBuffer:
    """A SimpleITK image's voxel buffer as a NumPy array that keeps the image alive.

    ``sitk.GetArrayFromImage`` copies every volume; ``GetArrayViewFromImage`` does not, but its
    array dangles once the image is freed. An array made from this object holds it (``.base``).
    """

    def __init__(self, image: sitk.Image) -> None:
        self.image = image
        self.__array_interface__ = sitk.GetArrayViewFromImage(image).__array_interface__


def _read_with_simpleitk(path: Path, image: nib.Nifti1Image) -> np.ndarray | None:
    """Voxels decompressed by SimpleITK in nibabel's (i, j, k) order, or None where they might differ from nibabel's.

    ITK applies intensity scaling in float32, turns NaN into 0 and reads truncated or damaged
    ``.gz`` files without complaint, so this only takes unscaled, native-endian integer data,
    and checks a ``.gz`` file's length and CRC-32 (gzip's own trailer) as Python's gzip would.
    """
    header = image.header
    stored = header.get_data_dtype()
    slope, inter = header.get_slope_inter()
    if slope not in (None, 1.0) or inter not in (None, 0.0) or stored.kind not in "iu" or not stored.isnative:
        return None
    offset = getattr(image.dataobj, "offset", None)  # the file's vox_offset (image.header is a copy set to 0)
    if offset is None:
        return None
    expected_size = offset + int(np.prod(image.shape)) * stored.itemsize
    compressed = str(path).endswith(".gz")
    try:
        if compressed:
            with open(path, "rb") as handle:
                handle.seek(-8, os.SEEK_END)
                crc, size = struct.unpack("<II", handle.read(8))
            if size != expected_size % (1 << 32):
                return None
            with gzip.open(path, "rb") as handle:
                prefix = handle.read(offset)
        elif os.path.getsize(path) < expected_size:
            return None
        voxels = np.asarray(_ImageBuffer(sitk.ReadImage(str(path), imageIO="NiftiImageIO")))
    except (OSError, EOFError, RuntimeError, zlib.error):  # nibabel then reads it or names the problem
        return None
    if voxels.T.shape != image.shape or voxels.dtype != stored:
        return None
    if compressed and zlib.crc32(voxels, zlib.crc32(prefix)) != crc:
        return None
    return voxels.T


def load_volume(path: str | os.PathLike[str]) -> tuple[nib.Nifti1Image, np.ndarray]:
    """Open a NIfTI file: its nibabel image (the header) and all its voxels in nibabel's ``(i, j, k, ...)`` order.

    Integer volumes (every BraTS release) are decompressed with SimpleITK, about 2-3x faster
    than nibabel for ``.nii.gz``, and checked to be exactly what nibabel would read; anything
    else is read by nibabel. A missing, damaged or truncated file is an :class:`InputError`.
    """
    image = load_nifti(path)
    voxels = _read_with_simpleitk(Path(path), image)
    if voxels is None:
        voxels = read_voxels(image, path, dtype=None)
    return image, voxels


def _spatial_voxels(voxels: np.ndarray, path: Path, channels: Sequence[int] | None) -> list[np.ndarray]:
    """The 3D volumes of one file: itself, or the listed channels of a 4D file (trailing unit axes dropped)."""
    shape = voxels.shape
    while len(shape) > (4 if channels is not None else 3) and shape[-1] == 1:
        shape = shape[:-1]
    voxels = voxels.reshape(shape)
    if channels is None:
        if voxels.ndim != 3:
            raise InputError(path, f"expected a 3D image, got shape {voxels.shape}")
        return [voxels]
    if voxels.ndim != 4:
        raise InputError(path, f"expected a 4D image with the modalities as channels, got shape {voxels.shape}")
    if max(channels) >= voxels.shape[3] or min(channels) < 0:
        raise InputError(path, f"channel_indices {list(channels)} do not fit {voxels.shape[3]} channel(s)")
    return [voxels[..., index] for index in channels]


def _check_finite(voxels: np.ndarray, path: Path) -> None:
    if voxels.dtype.kind == "f" and not np.isfinite(voxels).all():
        raise InputError(path, "contains NaN or infinite voxel values")


def _check_same_grid(image: nib.Nifti1Image, shape: tuple[int, ...], reference: nib.Nifti1Image, path: Path, reference_path: Path) -> None:
    if shape != reference.shape[:3]:
        raise InputError(path, f"shape {shape} differs from {reference_path.name} {reference.shape[:3]}")
    difference = float(np.abs(image.affine - reference.affine).max())
    if difference > AFFINE_TOLERANCE:
        raise InputError(path, f"affine differs from {reference_path.name} by up to {difference:.3g} (not co-registered)")


def _fingerprint(path: Path) -> dict[str, int]:
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except OSError as err:
        raise InputError(path, f"cannot read: {err.strerror or err}") from err
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _source_files(record: CaseRecord) -> list[Path]:
    return list(record.images) + ([record.label] if record.label is not None else [])


def _read_case(record: CaseRecord) -> tuple[list[np.ndarray], np.ndarray | None, nib.Nifti1Image, dict[str, Any]]:
    """The four modality volumes (source voxel order), the raw label, the reference image and the source record."""
    fingerprints = {str(path): _fingerprint(path) for path in _source_files(record)}
    expected = 1 if record.channel_indices is not None else len(MODALITIES)
    if len(record.images) != expected:
        raise ConfigError(record.case_id, f"expected {expected} image path(s), got {len(record.images)}")
    channels: list[np.ndarray] = []
    reference: nib.Nifti1Image | None = None
    for path in record.images:
        image, voxels = load_volume(path)
        volumes = _spatial_voxels(voxels, path, record.channel_indices)
        if reference is None:
            reference = image
        else:
            _check_same_grid(image, volumes[0].shape, reference, path, record.images[0])
        _check_finite(voxels, path)
        channels.extend(volumes)
    assert reference is not None
    label = None
    if record.label is not None:
        label_image, label = load_volume(record.label)
        (label,) = _spatial_voxels(label, record.label, None)
        _check_same_grid(label_image, label.shape, reference, record.label, record.images[0])
        _check_finite(label, record.label)
    source = {
        "images": [str(path) for path in record.images],
        "channel_indices": list(record.channel_indices) if record.channel_indices is not None else None,
        "label": str(record.label) if record.label is not None else None,
        "files": fingerprints,
    }
    return channels, label, reference, source


# ----------------------------------------------------------------------------- processing


def _to_internal_labels(label: np.ndarray, record: CaseRecord, allow_resection_cavity: bool) -> np.ndarray:
    """Map a (cropped) label volume to internal labels through a look-up table of the values it holds."""
    convention = get_convention(record.label_convention)
    label = np.ascontiguousarray(label)
    if label.dtype.kind == "b":
        label = label.view(np.uint8)
    integer = label.dtype.kind in "iu" and label.dtype.itemsize <= 2
    if integer:
        # np.unique sorts every voxel; counting the values of a small integer type is one pass.
        as_index = label.view(label.dtype.str.replace("i", "u"))
        values = np.flatnonzero(np.bincount(as_index.ravel(), minlength=1)).astype(as_index.dtype).view(label.dtype)
    else:
        values = np.unique(label)
        if not np.array_equal(values, np.round(values)):
            raise InputError(record.label, f"label values must be whole numbers, found {values[values != np.round(values)][:5].tolist()}")
    try:
        mapped = convention.to_internal(values.astype(np.int64), allow_optional=allow_resection_cavity)
    except ValueError as err:
        raise InputError(record.label, str(err)) from None
    if integer:
        table = np.zeros(1 << (8 * label.dtype.itemsize), dtype=np.uint8)
        table[values.view(as_index.dtype)] = mapped
        return np.take(table, as_index)
    return mapped[np.searchsorted(values, label)]


def _zscore_table(mean: float, std: float, dtype: np.dtype) -> np.ndarray:
    """float16 z-score of every value of a small integer type, indexed by the value's unsigned bit pattern; 0 -> 0."""
    bits = 8 * dtype.itemsize
    unsigned = np.arange(1 << bits, dtype=np.uint64 if bits > 16 else np.uint32).astype(f"u{dtype.itemsize}")
    values = unsigned.view(dtype).astype(np.float64)
    table = ((values - mean) / std).astype(np.float16)
    table[values == 0] = 0
    return table


def _normalise_channel(volume: np.ndarray, out: np.ndarray) -> tuple[float, float, int]:
    """Z-score ``volume`` over its non-zero voxels into ``out`` (zeros stay 0); return mean, std and voxel count.

    Same result as MONAI's ``NormalizeIntensity(nonzero=True)``, written out because MONAI
    works in float32 with boolean gathers: for integer volumes (every BraTS release) the
    statistics are exact integer sums and the z-score is one look-up per voxel, which halves the
    cost of a case.
    """
    values = np.ascontiguousarray(volume)
    count = int(np.count_nonzero(values))
    if count == 0:
        return 0.0, 1.0, 0
    small_integer = values.dtype.kind in "iu" and values.dtype.itemsize <= 2
    if small_integer:
        total = float(values.sum(dtype=np.int64))
        squares = float(np.square(values, dtype=np.int64 if values.dtype == np.uint16 else np.int32).sum(dtype=np.int64))
    else:
        values = values.astype(np.float64)
        total = float(values.sum())
        squares = float(np.square(values).sum())
    mean = total / count
    std = float(np.sqrt(max(squares / count - mean * mean, 0.0)))
    # A constant channel is only centred, as MONAI's NormalizeIntensity does.
    scale = std if std > 0 else 1.0
    if small_integer:
        np.take(_zscore_table(mean, scale, values.dtype), values.view(f"u{values.dtype.itemsize}"), out=out)
    else:
        out[...] = np.where(values != 0, (values - mean) / scale, 0.0)
    return mean, std, count


def _file_header_b64(path: Path, image: nib.Nifti1Image) -> str:
    """The header exactly as stored in the file, base64 (``image.header`` has vox_offset and scaling reset)."""
    with nib.openers.ImageOpener(path) as handle:
        header = type(image.header).from_fileobj(handle, check=False)
    return base64.b64encode(header.binaryblock).decode("ascii")


def _prepare(record: CaseRecord, margin: int, allow_resection_cavity: bool) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Preprocess one case in memory: float16 image (Z, C, X, Y), uint8 label (Z, X, Y) or None, manifest."""
    channels, raw_label, reference, source = _read_case(record)
    shape = tuple(int(n) for n in channels[0].shape)
    affine = reference.affine
    try:
        ornt = voxel_orientation(affine)
    except ValueError as err:
        raise InputError(record.images[0], str(err)) from None

    brain = channels[0] != 0
    for volume in channels[1:]:
        np.logical_or(brain, volume != 0, out=brain)
    if raw_label is not None:
        # The box also holds every labelled voxel, so the inverse is exact even for labels outside the brain.
        np.logical_or(brain, raw_label != 0, out=brain)
    try:
        source_box = bounding_box(brain, margin)
    except ValueError:
        raise InputError(record.images[0], "every modality is entirely zero") from None
    del brain
    crop = box_slices(source_box)
    crop_box = reorient_box(source_box, shape, ornt)
    canonical = reoriented_shape(shape, ornt)
    size_x, size_y, size_z = (high - low for low, high in crop_box)

    def to_cache_grid(volume: np.ndarray) -> np.ndarray:
        """Cropped source volume -> (Z, X, Y) view on the canonical grid."""
        return apply_orientation(volume[crop], ornt).transpose(2, 0, 1)

    image = np.empty((size_z, len(channels), size_x, size_y), dtype=np.float16)
    means, stds = [], []
    for index, volume in enumerate(channels):
        mean, std, count = _normalise_channel(to_cache_grid(volume), image[:, index])
        if count == 0:
            name = MODALITIES[index]
            raise InputError(record.images[0 if record.channel_indices is not None else index], f"modality {name} is entirely zero")
        means.append(mean)
        stds.append(std)

    label = None
    if raw_label is not None:
        label = np.ascontiguousarray(_to_internal_labels(to_cache_grid(raw_label), record, allow_resection_cavity))

    zooms = nib.affines.voxel_sizes(affine)
    spacing = [0.0] * 3
    for axis, (target, _flip) in enumerate(ornt):
        spacing[target] = float(zooms[axis])
    header = reference.header
    _, qform_code = header.get_qform(coded=True)
    _, sform_code = header.get_sform(coded=True)
    meta = {
        "format_version": FORMAT_VERSION,
        "case_id": record.case_id,
        "source": source,
        "label_convention": record.label_convention,
        "original": {
            "shape": list(shape),
            "image_shape": [int(n) for n in reference.shape],
            "affine": np.asarray(affine, dtype=np.float64).tolist(),
            "qform": header.get_qform().tolist(),
            "qform_code": int(qform_code),
            "sform": header.get_sform().tolist(),
            "sform_code": int(sform_code),
            "zooms": [float(z) for z in header.get_zooms()[:3]],
            "dtype": header.get_data_dtype().name,
            "label_dtype": raw_label.dtype.name if raw_label is not None else None,
            "header": _file_header_b64(record.images[0], reference),
            "header_source": str(record.images[0]),
        },
        "orientation": ornt.tolist(),
        "canonical_shape": list(canonical),
        "crop_box": crop_box,
        "margin": margin,
        "affine": cache_affine(affine, ornt, shape, crop_box).tolist(),
        "spacing": spacing,
        "shape": list(image.shape),
        "modalities": list(MODALITIES),
        "normalization": {"method": "zscore_nonzero", "mean": means, "std": stds},
        "has_label": label is not None,
        "foreground_per_slice": np.count_nonzero(label, axis=(1, 2)).tolist() if label is not None else None,
        "allow_resection_cavity": allow_resection_cavity,
    }
    return image, label, meta


def prepare_case(record: CaseRecord, allow_resection_cavity: bool = False, margin: int = DEFAULT_MARGIN) -> PreparedCase:
    """Preprocess one case in memory exactly as the cache would hold it (``predict`` uses this on raw input).

    Args:
        record: the case (paths, channel indices for a 4D file, label convention).
        allow_resection_cavity: map the BraTS 2024 resection-cavity label 4 to background instead of refusing it.
        margin: voxels kept around the brain box.

    Returns:
        The image as float32 (holding the float16 values of the cache), the internal label or
        None, and the manifest.

    Raises:
        InputError: a missing, damaged or inconsistent file, named in the message.
    """
    image, label, meta = _prepare(record, margin, allow_resection_cavity)
    return PreparedCase(image=image.astype(np.float32), label=label, meta=meta)


# ----------------------------------------------------------------------------- the cache


def _read_meta(case_dir: Path) -> dict | None:
    try:
        return json.loads((case_dir / META_FILE).read_text())
    except (OSError, ValueError):
        return None


def _is_cached(record: CaseRecord, case_dir: Path, margin: int, allow_resection_cavity: bool) -> bool:
    """True if ``case_dir`` holds a complete entry made from the same, unchanged source files and settings."""
    meta = _read_meta(case_dir)
    if not meta or meta.get("complete") is not True or meta.get("format_version") != FORMAT_VERSION:
        return False
    source = meta.get("source", {})
    wanted = {
        "images": [str(path) for path in record.images],
        "channel_indices": list(record.channel_indices) if record.channel_indices is not None else None,
        "label": str(record.label) if record.label is not None else None,
    }
    if any(source.get(key) != value for key, value in wanted.items()):
        return False
    if meta.get("label_convention") != record.label_convention or meta.get("margin") != margin:
        return False
    if meta.get("allow_resection_cavity") != allow_resection_cavity:
        return False
    try:
        if source.get("files") != {str(path): _fingerprint(path) for path in _source_files(record)}:
            return False
    except InputError:
        return False
    files = [IMAGE_FILE] + ([LABEL_FILE] if meta.get("has_label") else [])
    return all((case_dir / name).is_file() for name in files)


def _write_case(record: CaseRecord, case_dir: Path, margin: int, allow_resection_cavity: bool) -> None:
    """Preprocess one case into ``case_dir``; ``meta.json`` goes last, so a crash never leaves a case that looks done."""
    (case_dir / META_FILE).unlink(missing_ok=True)
    for leftover in case_dir.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)
    image, label, meta = _prepare(record, margin, allow_resection_cavity)
    created = not case_dir.exists()
    try:
        save_npy(case_dir / IMAGE_FILE, image)
        if label is not None:
            save_npy(case_dir / LABEL_FILE, label)
        else:
            (case_dir / LABEL_FILE).unlink(missing_ok=True)
        write_json(case_dir / META_FILE, {**meta, "complete": True})
    except BaseException:
        # a failed write (full disk, interrupt) leaves no arrays without their meta.json behind
        for name in (IMAGE_FILE, LABEL_FILE, META_FILE):
            (case_dir / name).unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                case_dir.rmdir()
        raise


def _write_case_in_worker(record: CaseRecord, case_dir: Path, margin: int, allow_resection_cavity: bool) -> tuple[str, str, str] | None:
    """:func:`_write_case` for a pool worker: a pipeline error comes back as (type, where, problem)."""
    try:
        _write_case(record, case_dir, margin, allow_resection_cavity)
    except PipelineError as err:  # PipelineError's arguments do not survive pickling; send its parts
        return type(err).__name__, err.where, err.problem
    return None


def _raise_from_worker(error: tuple[str, str, str]) -> None:
    kind, where, problem = error
    raise {"InputError": InputError, "ConfigError": ConfigError}.get(kind, PipelineError)(where, problem)


def preprocess_datalist(
    datalist: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    workers: int = 1,
    progress: bool = True,
    splits: Sequence[str] | None = None,
    margin: int = DEFAULT_MARGIN,
    allow_resection_cavity: bool = False,
) -> PreprocessSummary:
    """Build (or complete) the cache of a data list's cases.

    Cases whose complete entry was made from the same unchanged source files (size and
    modification time) and settings are skipped, so an interrupted run resumes where it
    stopped. The first bad case stops the run with an :class:`InputError`; the cases finished
    before it stay valid.

    Args:
        datalist: the data list JSON.
        cache_dir: the cache folder (created if needed).
        workers: processes working on cases in parallel (1: in this process).
        progress: show a progress bar.
        splits: the data-list splits to preprocess (default: all of them, unlabelled cases included).
        margin: voxels kept around the brain box.
        allow_resection_cavity: map the BraTS 2024 resection-cavity label to background instead of refusing it.
    """
    started = time.perf_counter()
    source = Path(datalist)
    cache = Path(cache_dir)
    if workers < 1:
        raise ConfigError("--workers", f"must be at least 1, got {workers}")
    if margin < 0:
        raise ConfigError("--margin", f"must be 0 or more, got {margin}")
    loaded = load_datalist(source)
    selected = list(splits) if splits else list(SPLITS)
    unknown = [split for split in selected if split not in SPLITS]
    if unknown:
        raise ConfigError("--splits", f"unknown split(s) {', '.join(unknown)}; choose from {', '.join(SPLITS)}")
    records = [record for split in SPLITS if split in selected for record in loaded.records[split]]
    existing = next(folder for folder in (cache, *cache.absolute().parents) if folder.exists())
    if not existing.is_dir():
        raise ConfigError(cache, f"cannot create the cache folder: {existing} is a file")

    cached = {r.case_id for r in records if _is_cached(r, cache / r.case_id, margin, allow_resection_cavity)}
    skipped = [r.case_id for r in records if r.case_id in cached]
    todo = [r for r in records if r.case_id not in cached]
    bar = tqdm(total=len(records), initial=len(skipped), desc="preprocess", unit="case", disable=not progress)
    try:
        if workers == 1 or len(todo) <= 1:
            for record in todo:
                bar.set_postfix_str(record.case_id, refresh=False)
                _write_case(record, cache / record.case_id, margin, allow_resection_cavity)
                bar.update()
        else:
            # spawn: workers start clean whatever the parent process has loaded (threads, torch).
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=context) as pool:
                futures = [pool.submit(_write_case_in_worker, r, cache / r.case_id, margin, allow_resection_cavity) for r in todo]
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        error = future.result()
                        if error is not None:
                            for other in pending:
                                other.cancel()
                            _raise_from_worker(error)
                        bar.update()
    finally:
        bar.close()
        _write_index(cache, loaded)
    return PreprocessSummary(
        cache_dir=cache,
        processed=tuple(r.case_id for r in todo),
        skipped=tuple(skipped),
        seconds=time.perf_counter() - started,
    )


def _write_index(cache: Path, loaded: Any) -> None:
    """``cache.json``: the data list it was built from and every case of it that the cache holds complete."""
    complete = []
    splits: dict[str, list[str]] = {}
    for split in SPLITS:
        for record in loaded.records[split]:
            meta = _read_meta(cache / record.case_id)
            if meta and meta.get("complete") is True:
                complete.append(record.case_id)
                splits.setdefault(split, []).append(record.case_id)
    if not complete and not cache.is_dir():
        return
    write_json(
        cache / INDEX_FILE,
        {
            "format_version": FORMAT_VERSION,
            "datalist": str(loaded.path.resolve()),
            "datalist_sha256": loaded.sha256,
            "cases": complete,
            "splits": splits,
        },
    )


def load_cached_case(cache_dir: str | os.PathLike[str], case_id: str, mmap: bool = True) -> CachedCase:
    """Read one case of the cache (image and label memory-mapped read-only unless ``mmap`` is False).

    Raises:
        InputError: if the case is missing or incomplete (preprocess it again).
    """
    case_dir = Path(cache_dir) / case_id
    meta = _read_meta(case_dir)
    if not meta or meta.get("complete") is not True:
        raise InputError(case_dir, "not a complete cache entry; run `brats-pipeline preprocess` again")
    if meta.get("format_version") != FORMAT_VERSION:
        raise InputError(case_dir, f"cache format {meta.get('format_version')} is not {FORMAT_VERSION}; run preprocess again")
    mode = "r" if mmap else None
    try:
        image = np.load(case_dir / IMAGE_FILE, mmap_mode=mode, allow_pickle=False)
        label = np.load(case_dir / LABEL_FILE, mmap_mode=mode, allow_pickle=False) if meta.get("has_label") else None
    except (OSError, ValueError) as err:
        raise InputError(case_dir, f"cannot read the cached arrays ({err}); run preprocess again") from err
    return CachedCase(image=image, label=label, meta=meta)
