"""Checks of every file of a case before anything is built from it.

A case is usable when the files of its task's channels are there and readable, 3D (MSD: one
4D file with four channels), on one grid (same shape, affine within :data:`AFFINE_TOLERANCE_MM`),
finite, no channel entirely zero, and its segmentation (if any) holds only the labels its
convention gives the task's classes (:meth:`pipeline.tasks.task.Task.convention`; default: the BraTS
glioma task, whose conventions are :data:`pipeline.tasks.labels.CONVENTIONS`).
Each problem is one line, ``<file>: <reason>``.

Cases of the 2D layouts (:data:`pipeline.datasets.records.PLANAR_LAYOUTS`: Kaggle LGG patient
folders, 2D image/mask pairs) are judged by :func:`read_planar`, which also reads them for
preprocessing: every slice and mask readable and non-empty, the colour components the task
reads, slices of one size, each mask of its image's size and holding only the values of the
task's mask convention (0/255 or 0/1), slice numbers without gaps, every slice with its mask.

This module is the one place that judges a case: :func:`check_same_grid`, :func:`check_finite`
and :func:`check_labels` are the same checks, raising at the first problem, for the stages that
read a case's voxels themselves (preprocess, predict, evaluate).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.core.errors import InputError
from pipeline.core.io import load_nifti, read_image_2d, read_voxels
from pipeline.datasets import image_folders, kaggle_lgg
from pipeline.datasets.records import IMAGE_2D, KAGGLE_LGG, PLANAR_LAYOUTS, CaseRecord
from pipeline.tasks.modalities import MSD_CHANNELS
from pipeline.tasks.task import (
    DEFAULT_TASK,
    IMAGE_MASK_2D,
    TASKS,
    Task,
    get_task,
    resolve_task,
)

__all__ = [
    "AFFINE_TOLERANCE_MM",
    "PlanarCase",
    "check_finite",
    "check_labels",
    "check_same_grid",
    "grid_difference",
    "label_problem",
    "non_finite_problem",
    "read_planar",
    "validate_case",
    "validate_cases",
]

#: Largest difference (mm) between two affines' entries that still counts as the same grid.
AFFINE_TOLERANCE_MM = 1e-3


def _one_line(err: InputError) -> str:
    # library messages (nibabel, gzip) sometimes span lines; a problem is always one line
    return re.sub(r"\s*\n\s*", " ", str(err))


def grid_difference(
    shape: Sequence[int], affine: np.ndarray, reference_shape: Sequence[int], reference_affine: np.ndarray, reference: Path
) -> str | None:
    """Why a volume is not on the grid of ``reference`` (shape, then affine within :data:`AFFINE_TOLERANCE_MM`), or None."""
    if tuple(shape) != tuple(reference_shape):
        return f"shape {tuple(shape)} differs from {reference.name}'s {tuple(reference_shape)}"
    if not np.allclose(affine, reference_affine, rtol=0, atol=AFFINE_TOLERANCE_MM):
        worst = float(np.max(np.abs(np.asarray(affine) - np.asarray(reference_affine))))
        return f"affine differs from {reference.name}'s by up to {worst:.4g} mm (tolerance {AFFINE_TOLERANCE_MM} mm)"
    return None


def check_same_grid(
    path: str | PathLike[str], shape: Sequence[int], affine: np.ndarray, reference: Path, reference_shape: Sequence[int], reference_affine: np.ndarray
) -> None:
    """Raise a one-line :class:`InputError` naming ``path`` unless it lies on the grid of ``reference``."""
    problem = grid_difference(shape, affine, reference_shape, reference_affine, reference)
    if problem:
        raise InputError(path, problem)


def non_finite_problem(voxels: np.ndarray, what: str = "image") -> str | None:
    """Why ``voxels`` are not all finite (NaN or infinity), or None; integer volumes always are."""
    if voxels.dtype.kind not in "fc":
        return None
    non_finite = int(np.count_nonzero(~np.isfinite(voxels)))
    return f"{what} has {non_finite} non-finite voxel(s) (NaN or infinity)" if non_finite else None


def check_finite(path: str | PathLike[str], voxels: np.ndarray, what: str = "image") -> None:
    """Raise a one-line :class:`InputError` naming ``path`` if ``voxels`` hold NaN or infinity."""
    problem = non_finite_problem(voxels, what)
    if problem:
        raise InputError(path, problem)


def _grid_problem(path: Path, image: nib.Nifti1Image, shape: tuple[int, ...], affine: np.ndarray, reference: Path) -> str | None:
    problem = grid_difference(image.shape[:3], image.affine, shape, affine, reference)
    return f"{path}: {problem}" if problem else None


def _intensity_problems(path: Path, voxels: np.ndarray, what: str = "image") -> list[str]:
    problem = non_finite_problem(voxels, what)
    if problem:
        return [f"{path}: {problem}"]
    if not np.any(voxels):
        return [f"{path}: {what} is entirely zero"]
    return []


def _unread_convention(task: Task, convention_name: str) -> str:
    readers = [name for name, other in TASKS.items() if convention_name in other.labels]
    hint = f"; --task {readers[0]} reads them" if readers else ""
    return f"task {task.name} does not read {convention_name} labels (it reads {', '.join(task.conventions)}){hint}"


def label_problem(values: np.ndarray, convention_name: str, allow_resection_cavity: bool = False, task: Task | None = None) -> str | None:
    """Why a segmentation holding the label ``values`` (its distinct values) does not fit its convention under ``task``, or None."""
    values = np.asarray(values)
    fractional = sorted(float(v) for v in values if v != np.round(v))
    if fractional:
        return f"segmentation holds non-integer values {fractional[:5]}"
    task = resolve_task(task)
    if convention_name not in task.labels:
        return _unread_convention(task, convention_name)
    convention = task.convention(convention_name)
    unknown = convention.unknown_labels(values.astype(np.int64), allow_optional=allow_resection_cavity)
    if not unknown:
        return None
    refused = [v for v in unknown if v in convention.optional_labels]
    hint = ""
    if refused:
        hint = (
            f"; label {refused[0]} (the BraTS 2024 resection cavity) is read only when mapping it to "
            "background is asked for (--map-resection-cavity), or as a class with --task brats2024-post-treatment"
        )
    of_task = "" if task.name == DEFAULT_TASK.name else f" of task {task.name}"
    return f"labels {unknown} are not in the {convention.name} convention{of_task} {list(convention.labels)}{hint}"


def check_labels(
    path: str | PathLike[str], values: np.ndarray, convention_name: str, allow_resection_cavity: bool = False, task: Task | None = None
) -> None:
    """Raise a one-line :class:`InputError` naming ``path`` unless the label ``values`` fit the convention under ``task``."""
    problem = label_problem(values, convention_name, allow_resection_cavity, task)
    if problem:
        raise InputError(path, problem)


def _label_problems(path: Path, seg: np.ndarray, convention_name: str, allow_resection_cavity: bool, task: Task | None) -> list[str]:
    # pandas.unique hashes instead of sorting: several times faster than np.unique on a full volume.
    problem = non_finite_problem(seg, "segmentation") or label_problem(pd.unique(seg.ravel()), convention_name, allow_resection_cavity, task)
    return [f"{path}: {problem}"] if problem else []


@dataclass(frozen=True)
class PlanarCase:
    """A 2D-layout case read from its image files.

    Attributes:
        channels: one ``(rows, columns, slices)`` array per channel of the record, as stored (uint8 for 8-bit files).
        label: the raw masks ``(rows, columns, slices)`` (0/255 or 0/1), or None.
        slices: ``(number, image, mask)`` of every slice in order (a 2D pair: number 1).
        components: the colour components of each slice as the task reads it (1: grayscale; 2D images are converted to it).
    """

    channels: list[np.ndarray]
    label: np.ndarray | None
    slices: list[tuple[int, Path, Path | None]]
    components: int


def _size(array: np.ndarray) -> str:
    return "x".join(map(str, array.shape[:2]))


def _planar_slices(record: CaseRecord) -> tuple[list[tuple[int, Path, Path | None]], list[str]]:
    if record.layout == KAGGLE_LGG:
        listed, problems = kaggle_lgg.list_slices(record.images[0])
        if record.label is not None and listed and listed[0].mask is None:
            problems = [f"{record.images[0]}: no mask found; the data list expects this patient's masks"]
        return [(s.number, s.image, s.mask if record.label is not None else None) for s in listed], problems
    return [(1, record.images[0], record.label)], []


def _planar_image(path: Path, voxels: np.ndarray, record: CaseRecord, task: Task) -> tuple[np.ndarray | None, str | None]:
    """A slice as the task reads it (a 2D image converted to the task's colour components: :func:`image_folders.to_task_components`), or a problem."""
    components = voxels.shape[2] if voxels.ndim == 3 else 1
    if record.layout == IMAGE_2D:
        try:
            voxels = image_folders.to_task_components(voxels, 1 if record.channel_indices is None else 3)
        except ValueError as err:
            return None, f"{path}: {err}"
    elif record.channel_indices is not None and (components < 3 or max(record.channel_indices) >= components):
        return None, f"{path}: image has {components} colour component(s); task {task.name} reads {', '.join(task.channels)}"
    size = task.planar_size
    if size and task.planar_fit == "pad" and (voxels.shape[0] > size[0] or voxels.shape[1] > size[1]):
        return None, f"{path}: image {_size(voxels)} is larger than task {task.name}'s planar_size {'x'.join(map(str, size))} (planar_fit pad; a task with planar_fit resize reads it)"
    return voxels, None


def _planar_mask(path: Path, voxels: np.ndarray, image: Path, image_voxels: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """The one-component mask of a mask file (RGB masks whose components agree are accepted), or a problem."""
    if voxels.ndim == 3:
        if np.any(voxels[..., 1:3] != voxels[..., :1]):
            return None, f"{path}: mask has {voxels.shape[2]} colour components that differ; save it as one channel"
        voxels = voxels[..., 0]
    if voxels.shape != image_voxels.shape[:2]:
        return None, f"{path}: mask {_size(voxels)} differs from image {image.name}'s {_size(image_voxels)}"
    return voxels, None


def read_planar(record: CaseRecord, task: Task | None = None) -> tuple[PlanarCase | None, list[str]]:
    """Read and judge a 2D-layout case (:data:`PLANAR_LAYOUTS`) under ``task``: the case, or None and its problem lines.

    ``task`` defaults to the layout's own (``kaggle-lgg``, ``image-mask-2d``).

    Reading stops at the first unreadable or inconsistent file; listing problems (a slice
    without its mask, a gap in the numbers) are all reported.
    """
    task = resolve_task(task) if task is not None else get_task(KAGGLE_LGG) if record.layout == KAGGLE_LGG else IMAGE_MASK_2D
    slices, problems = _planar_slices(record)
    if problems or not slices:
        return None, problems
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    first: tuple[Path, np.ndarray] | None = None
    for _number, image_path, mask_path in slices:
        try:
            voxels, problem = _planar_image(image_path, read_image_2d(image_path), record, task)
            if problem is None and first is not None and voxels.shape != first[1].shape:
                problem = f"{image_path}: slice {_size(voxels)} differs from {first[0].name}'s {_size(first[1])}"
            if problem:
                return None, [problem]
            first = first or (image_path, voxels)
            images.append(voxels)
            if mask_path is not None:
                mask, problem = _planar_mask(mask_path, read_image_2d(mask_path), image_path, voxels)
                problem = problem or next(iter(_label_problems(mask_path, mask, record.label_convention, False, task)), None)
                if problem:
                    return None, [problem]
                masks.append(mask)
        except InputError as err:
            return None, [_one_line(err)]
    stack = np.stack(images, axis=2)  # (rows, columns, slices[, components])
    components = stack.shape[3] if stack.ndim == 4 else 1
    channels = [stack] if record.channel_indices is None else [stack[..., index] for index in record.channel_indices]
    for channel, name in zip(channels, record.channels):
        if not np.any(channel):
            where = record.images[0]
            return None, [f"{where}: {'image' if record.layout == IMAGE_2D else f'channel {name}'} is entirely zero"]
    label = np.stack(masks, axis=2) if masks else None
    return PlanarCase(channels=[np.ascontiguousarray(c) for c in channels], label=label, slices=slices, components=components), []


def validate_case(record: CaseRecord, allow_resection_cavity: bool = False, task: Task | None = None) -> list[str]:
    """Check every file of one case; reads every voxel.

    Args:
        record: the case (one 3D image per channel of ``record.channels``, or one 4D image with
            ``channel_indices``), with its label path or None.
        allow_resection_cavity: accept the optional labels of the record's convention (the
            BraTS 2024 resection cavity).
        task: whose label conventions judge the segmentation (default: the BraTS glioma task).

    Returns:
        One ``<file>: <reason>`` line per problem; empty when the case is usable.
    """
    if record.layout in PLANAR_LAYOUTS:
        return read_planar(record, task)[1]
    is_4d = record.channel_indices is not None
    problems: list[str] = []
    if record.label is None and record.label_convention not in resolve_task(task).labels:
        # no label to judge, but its predictions are written in this convention
        problems.append(f"{record.images[0]}: {_unread_convention(resolve_task(task), record.label_convention)}")
    reference: tuple[Path, tuple[int, ...], np.ndarray] | None = None
    names = ["4D image"] if is_4d else [f"{channel} image" for channel in record.channels]
    for path, name in zip(record.images, names):
        if not path.is_file():
            problems.append(f"{path}: {name} missing")
            continue
        try:
            image = load_nifti(path)
            if is_4d:
                needed = len(MSD_CHANNELS)
                if image.ndim != 4 or image.shape[3] != needed:
                    problems.append(f"{path}: expected a 4D image with {needed} channels, got shape {image.shape}")
                    continue
            elif image.ndim != 3:
                problems.append(f"{path}: expected a 3D volume, got shape {image.shape}")
                continue
            if reference is None:
                reference = (path, tuple(image.shape[:3]), image.affine)
            else:
                grid = _grid_problem(path, image, reference[1], reference[2], reference[0])
                if grid:
                    problems.append(grid)
                    continue
            voxels = read_voxels(image, path)
        except InputError as err:
            problems.append(_one_line(err))
            continue
        if is_4d:
            for modality, channel in zip(record.channels, record.channel_indices or ()):
                problems += _intensity_problems(path, voxels[..., channel], f"channel {channel} ({modality})")
        else:
            problems += _intensity_problems(path, voxels)
        del voxels

    if record.label is not None:
        path = record.label
        try:
            image = load_nifti(path)
            if image.ndim != 3:
                problems.append(f"{path}: expected a 3D segmentation, got shape {image.shape}")
                return problems
            grid = _grid_problem(path, image, reference[1], reference[2], reference[0]) if reference else None
            if grid:
                problems.append(grid)
                return problems
            seg = read_voxels(image, path)
        except InputError as err:
            problems.append(_one_line(err))
            return problems
        problems += _label_problems(path, seg, record.label_convention, allow_resection_cavity, task)
    return problems


def validate_cases(
    records: Sequence[CaseRecord], allow_resection_cavity: bool = False, workers: int = 1, progress: bool = True, task: Task | None = None
) -> dict[str, list[str]]:
    """Run :func:`validate_case` over many cases (under ``task``), in a process pool when ``workers`` > 1.

    Returns:
        Problem lines by case id, for every case (an empty list for a usable one), in input order.
    """
    check = functools.partial(validate_case, allow_resection_cavity=allow_resection_cavity, task=task)
    bar = tqdm(total=len(records), desc="validating cases", unit="case", disable=not progress)
    results: dict[str, list[str]] = {}
    with bar:
        if workers <= 1 or len(records) <= 1:
            for record in records:
                results[record.case_id] = check(record)
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(records))) as pool:
                for record, problems in zip(records, pool.map(check, records)):
                    results[record.case_id] = problems
                    bar.update()
    return results
