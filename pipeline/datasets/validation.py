"""Checks of every file of a case before anything is built from it.

A case is usable when the files of its task's channels are there and readable, 3D (MSD: one
4D file with four channels), on one grid (same shape, affine within :data:`AFFINE_TOLERANCE_MM`),
finite, no channel entirely zero, and its segmentation (if any) holds only the labels its
convention gives the task's classes (:meth:`pipeline.tasks.Task.convention`; default: the BraTS
glioma task, whose conventions are :data:`pipeline.labels.CONVENTIONS`).
Each problem is one line, ``<file>: <reason>``.

This module is the one place that judges a case: :func:`check_same_grid`, :func:`check_finite`
and :func:`check_labels` are the same checks, raising at the first problem, for the stages that
read a case's voxels themselves (preprocess, predict, evaluate).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from os import PathLike
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.datasets.records import CaseRecord
from pipeline.errors import InputError
from pipeline.io import load_nifti, read_voxels
from pipeline.modalities import MSD_CHANNELS
from pipeline.tasks import DEFAULT_TASK, TASKS, Task, resolve_task

__all__ = [
    "AFFINE_TOLERANCE_MM",
    "check_finite",
    "check_labels",
    "check_same_grid",
    "grid_difference",
    "label_problem",
    "non_finite_problem",
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
