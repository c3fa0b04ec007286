"""A case -> oriented, cropped, normalised arrays (the one function training and inference both use), and the cache build.

:func:`prepare_case` reads a case (:func:`pipeline.datasets.reading.read_case`, which checks its
files), brings it onto the cache grid (:func:`pipeline.core.geometry.to_cache_grid`: closest RAS voxel
order by axis permutation and flips, never resampled, cropped to the brain box plus ``margin``
voxels), z-scores each channel over its non-zero voxels (zeros stay exactly 0) and maps the
label to the task's internal labels (:meth:`pipeline.tasks.task.Task.convention` of the case's label
convention); the image holds the task's channels, in its order.

A case of a 2D layout (Kaggle LGG patient, 2D image/mask pair) is a volume of its slices with
axes (row, column, slice), unit spacing and an identity affine (its files store no geometry), so
the same crop and z-score apply (over each channel's non-zero pixels of the whole volume); a task
with a ``planar_size`` then zero-pads every slice, centred, to that in-plane size, or resamples
it (``planar_fit`` ``resize``: image by area averaging or bilinear, label nearest: :func:`pipeline.core.geometry.resize_planar`). ``meta["original"]`` records the
files slice by slice and their size, ``meta["padding"]`` the offset of the cropped grid inside
the padded one, ``meta["resizing"]`` the size the cropped grid was resampled from. ``predict`` and ``evaluate`` call it on raw input;
:func:`preprocess_datalist` (the ``preprocess`` command) writes its result for every case of a
data list into the cache (:mod:`pipeline.preprocessing.cache`), where training reads it.
"""

from __future__ import annotations

import base64
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from pipeline.core.distributed import Shard, shard_positions
from pipeline.core.errors import ConfigError, InputError, PipelineError
from pipeline.core.geometry import (
    bounding_box,
    cache_affine,
    reorient_box,
    reoriented_shape,
    resize_planar,
    to_cache_grid,
    voxel_orientation,
)
from pipeline.datasets.case_checks import check_labels
from pipeline.datasets.datalist import SPLITS, load_datalist
from pipeline.datasets.reading import CaseVolumes, read_case, source_manifest
from pipeline.datasets.records import CaseRecord
from pipeline.preprocessing.cache import (
    discard,
    is_current,
    task_meta,
    write_case,
    write_index,
)
from pipeline.tasks.task import Task, resolve_task

__all__ = [
    "DEFAULT_MARGIN",
    "PreparedCase",
    "PreprocessSummary",
    "prepare_case",
    "preprocess_datalist",
]

#: Voxels kept around the brain box on every side.
DEFAULT_MARGIN = 4


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
class PreprocessSummary:
    """What :func:`preprocess_datalist` did."""

    cache_dir: Path
    processed: tuple[str, ...] = field(default_factory=tuple)
    skipped: tuple[str, ...] = field(default_factory=tuple)
    seconds: float = 0.0
    shard: Shard | None = None

    @property
    def cases(self) -> tuple[str, ...]:
        """Every case of the selection, processed now or already cached."""
        return self.processed + self.skipped

    def __str__(self) -> str:
        done = (
            f"{len(self.processed)} case(s) preprocessed, {len(self.skipped)} already cached "
            f"-> {self.cache_dir} ({self.seconds:.1f} s)"
        )
        if self.shard is None:
            return done
        return f"shard {self.shard}: {done}; when every shard is done, preprocess without --shard writes the cache index"


# ----------------------------------------------------------------------------- processing


def _to_internal_labels(label: np.ndarray, record: CaseRecord, allow_resection_cavity: bool, task: Task) -> np.ndarray:
    """Map a (cropped) label volume to the task's internal labels through a look-up table of the values it holds."""
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
    check_labels(record.label, values, record.label_convention, allow_resection_cavity, task)
    mapped = task.convention(record.label_convention).to_internal(values.astype(np.int64), allow_optional=allow_resection_cavity)
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


def _nifti_original(record: CaseRecord, reference: nib.Nifti1Image, shape: tuple[int, ...], raw_label: np.ndarray | None) -> dict:
    """What ``meta["original"]`` records of a NIfTI case: the grid and the first image's header, exactly."""
    header = reference.header
    _, qform_code = header.get_qform(coded=True)
    _, sform_code = header.get_sform(coded=True)
    return {
        "shape": list(shape),
        "image_shape": [int(n) for n in reference.shape],
        "affine": np.asarray(reference.affine, dtype=np.float64).tolist(),
        "qform": header.get_qform().tolist(),
        "qform_code": int(qform_code),
        "sform": header.get_sform().tolist(),
        "sform_code": int(sform_code),
        "zooms": [float(z) for z in header.get_zooms()[:3]],
        "dtype": header.get_data_dtype().name,
        "label_dtype": raw_label.dtype.name if raw_label is not None else None,
        "header": _file_header_b64(record.images[0], reference),
        "header_source": str(record.images[0]),
    }


def _planar_original(record: CaseRecord, volumes: CaseVolumes, shape: tuple[int, ...], raw_label: np.ndarray | None) -> dict:
    """What ``meta["original"]`` records of a 2D-layout case: its files in slice order and their size (no geometry is stored in them)."""
    planar = volumes.planar
    assert planar is not None
    return {
        "format": record.layout,
        "shape": list(shape),
        "axes": ["row", "column", "slice"],
        "affine": np.eye(4).tolist(),
        "zooms": [1.0, 1.0, 1.0],
        "spacing_stored": False,
        "components": planar.components,
        "slices": [{"number": number, "image": str(image), "mask": str(mask) if mask is not None else None} for number, image, mask in planar.slices],
        "dtype": volumes.channels[0].dtype.name,
        "label_dtype": raw_label.dtype.name if raw_label is not None else None,
        "label_values": sorted(int(v) for v in np.unique(raw_label)) if raw_label is not None else None,
    }


def _pad_planar(image: np.ndarray, label: np.ndarray | None, size: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Zero-pad the in-plane axes of ``(Z, C, X, Y)`` / ``(Z, X, Y)`` arrays, centred, to ``size``; the offset undoes it."""
    rows, columns = image.shape[2:]
    offset = [(int(size[0]) - rows) // 2, (int(size[1]) - columns) // 2]
    window = (slice(offset[0], offset[0] + rows), slice(offset[1], offset[1] + columns))
    padded = np.zeros((*image.shape[:2], int(size[0]), int(size[1])), dtype=image.dtype)
    padded[(..., *window)] = image
    padded_label = None
    if label is not None:
        padded_label = np.zeros((label.shape[0], int(size[0]), int(size[1])), dtype=label.dtype)
        padded_label[(..., *window)] = label
    return padded, padded_label, {"size": [int(n) for n in size], "offset": offset, "cropped_shape": [rows, columns]}


def _prepare(record: CaseRecord, margin: int, allow_resection_cavity: bool, task: Task) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Preprocess one case in memory: float16 image (Z, C, X, Y), uint8 label (Z, X, Y) or None, manifest."""
    if tuple(record.channels) != task.channels:
        raise ConfigError(record.case_id, f"the case's channels {', '.join(record.channels)} are not task {task.name}'s ({', '.join(task.channels)})")
    volumes = read_case(record, task)
    channels, raw_label, reference = volumes.channels, volumes.label, volumes.reference
    shape = tuple(int(n) for n in channels[0].shape)
    affine = reference.affine if reference is not None else np.eye(4)  # 2D files store no geometry: unit spacing
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
    crop_box = reorient_box(source_box, shape, ornt)
    canonical = reoriented_shape(shape, ornt)
    grid = {"orientation": ornt.tolist(), "canonical_shape": list(canonical), "crop_box": crop_box}
    size_x, size_y, size_z = (high - low for low, high in crop_box)

    image = np.empty((size_z, len(channels), size_x, size_y), dtype=np.float16)
    means, stds = [], []
    for index, volume in enumerate(channels):
        mean, std, count = _normalise_channel(to_cache_grid(volume, grid), image[:, index])
        if count == 0:
            name = record.channels[index]
            raise InputError(record.images[0 if record.channel_indices is not None else index], f"modality {name} is entirely zero")
        means.append(mean)
        stds.append(std)

    label = None
    if raw_label is not None:
        label = np.ascontiguousarray(_to_internal_labels(to_cache_grid(raw_label, grid), record, allow_resection_cavity, task))

    zooms = nib.affines.voxel_sizes(affine)
    spacing = [0.0] * 3
    for axis, (target, _flip) in enumerate(ornt):
        spacing[target] = float(zooms[axis])
    grid_affine = cache_affine(affine, ornt, shape, crop_box)
    padding = resizing = None
    if task.planar_size and volumes.planar is not None and task.planar_fit == "resize":
        resizing = {"size": [int(n) for n in task.planar_size], "cropped_shape": [int(n) for n in image.shape[2:]]}
        scale = [old / new for old, new in zip(resizing["cropped_shape"], resizing["size"])]
        image = resize_planar(image, task.planar_size)
        label = resize_planar(label, task.planar_size, labels=True) if label is not None else None
        # a resampled voxel's centre: old index = scale * new index + (scale - 1) / 2 (corners not aligned)
        grid_affine = grid_affine @ nib.affines.from_matvec(np.diag([*scale, 1.0]), [(f - 1) / 2 for f in scale] + [0])
        spacing = [spacing[0] * scale[0], spacing[1] * scale[1], spacing[2]]
    elif task.planar_size and volumes.planar is not None:
        image, label, padding = _pad_planar(image, label, task.planar_size)
        grid_affine = grid_affine @ nib.affines.from_matvec(np.eye(3), [-padding["offset"][0], -padding["offset"][1], 0])
    if volumes.planar is not None:
        original = _planar_original(record, volumes, shape, raw_label)
    else:
        original = _nifti_original(record, reference, shape, raw_label)
    meta = {
        "case_id": record.case_id,
        "source": volumes.source,
        "label_convention": record.label_convention,
        "original": original,
        **grid,
        "margin": margin,
        **({"padding": padding} if padding else {}),
        **({"resizing": resizing} if resizing else {}),
        "affine": grid_affine.tolist(),
        "spacing": spacing,
        "shape": list(image.shape),
        "modalities": list(record.channels),
        "task": task_meta(task),
        "normalization": {"method": "zscore_nonzero", "mean": means, "std": stds},
        "has_label": label is not None,
        "foreground_per_slice": np.count_nonzero(label, axis=(1, 2)).tolist() if label is not None else None,
        "allow_resection_cavity": allow_resection_cavity,
    }
    return image, label, meta


def prepare_case(record: CaseRecord, allow_resection_cavity: bool = False, margin: int = DEFAULT_MARGIN, task: Task | None = None) -> PreparedCase:
    """Preprocess one case in memory exactly as the cache would hold it (``predict`` uses this on raw input).

    Args:
        record: the case (paths of the task's channels, channel indices for a 4D file, label convention).
        allow_resection_cavity: map the BraTS 2024 resection-cavity label 4 to background instead of refusing it.
        margin: voxels kept around the brain box.
        task: the task whose channels the record holds and whose labels the label maps to
            (default: the BraTS glioma task).

    Returns:
        The image as float32 (holding the float16 values of the cache), the internal label or
        None, and the manifest.

    Raises:
        InputError: a missing, damaged or inconsistent file, named in the message.
    """
    image, label, meta = _prepare(record, margin, allow_resection_cavity, resolve_task(task))
    return PreparedCase(image=image.astype(np.float32), label=label, meta=meta)


# ----------------------------------------------------------------------------- building the cache


def _is_cached(record: CaseRecord, case_dir: Path, margin: int, allow_resection_cavity: bool, task: Task) -> bool:
    """True if ``case_dir`` holds a complete entry made from the same, unchanged source files and settings."""
    try:
        source = source_manifest(record)
    except InputError:
        return False
    wanted = {
        "source": source,
        "label_convention": record.label_convention,
        "margin": margin,
        "allow_resection_cavity": allow_resection_cavity,
        "task": task_meta(task),
    }
    return is_current(case_dir, wanted)


def _write_case(record: CaseRecord, case_dir: Path, margin: int, allow_resection_cavity: bool, task: Task) -> None:
    """Preprocess one case into ``case_dir``; the old entry is discarded first, so a failure never leaves it looking done."""
    discard(case_dir)
    image, label, meta = _prepare(record, margin, allow_resection_cavity, task)
    write_case(case_dir, image, label, meta)


def _write_case_in_worker(record: CaseRecord, case_dir: Path, margin: int, allow_resection_cavity: bool, task: Task) -> tuple[str, str, str] | None:
    """:func:`_write_case` for a pool worker: a pipeline error comes back as (type, where, problem)."""
    try:
        _write_case(record, case_dir, margin, allow_resection_cavity, task)
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
    shard: Shard | str | None = None,
) -> PreprocessSummary:
    """Build (or complete) the cache of a data list's cases, for the data list's task (its channels and labels).

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
        shard: build only shard K of N of the selected cases (``"K/N"``, 1-based; :mod:`pipeline.core.distributed`),
            so that several machines fill one cache: each writes only its cases' folders and
            leaves ``cache.json`` alone; a final run without a shard skips every finished case,
            builds any left and writes ``cache.json``.
    """
    started = time.perf_counter()
    source = Path(datalist)
    cache = Path(cache_dir)
    wanted = Shard.parse(shard) if isinstance(shard, str) else shard
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
    records = [records[position] for position in shard_positions([record.case_id for record in records], wanted)]
    existing = next(folder for folder in (cache, *cache.absolute().parents) if folder.exists())
    if not existing.is_dir():
        raise ConfigError(cache, f"cannot create the cache folder: {existing} is a file")

    task = loaded.task
    cached = {r.case_id for r in records if _is_cached(r, cache / r.case_id, margin, allow_resection_cavity, task)}
    skipped = [r.case_id for r in records if r.case_id in cached]
    todo = [r for r in records if r.case_id not in cached]
    bar = tqdm(total=len(records), initial=len(skipped), desc="preprocess", unit="case", disable=not progress)
    try:
        if workers == 1 or len(todo) <= 1:
            for record in todo:
                bar.set_postfix_str(record.case_id, refresh=False)
                _write_case(record, cache / record.case_id, margin, allow_resection_cavity, task)
                bar.update()
        else:
            # spawn: workers start clean whatever the parent process has loaded (threads, torch).
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=context) as pool:
                futures = [pool.submit(_write_case_in_worker, r, cache / r.case_id, margin, allow_resection_cavity, task) for r in todo]
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
        if wanted is None:  # the one writer of the shared index: shards running at once never race on it
            write_index(cache, loaded.path, loaded.sha256, {split: [r.case_id for r in loaded.records[split]] for split in SPLITS})
    return PreprocessSummary(
        cache_dir=cache,
        processed=tuple(r.case_id for r in todo),
        skipped=tuple(skipped),
        seconds=time.perf_counter() - started,
        shard=wanted,
    )
