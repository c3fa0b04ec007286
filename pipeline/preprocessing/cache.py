"""The preprocessed cache: its layout, format version, atomic write, completeness and memory-mapped read.

One folder per case (``cache_dir/<case_id>/``):

``image.npy``
    float16, shape ``(Z, C, X, Y)``: slice axis first (a 2.5D stack is one contiguous read),
    the task's input channels in its order (C = 4 for BraTS glioma), voxels in the closest canonical
    RAS order (exact axis permutation and flips, never resampled), cropped to the brain box,
    z-scored per channel over that channel's non-zero voxels (see :mod:`pipeline.preprocessing.prepare`).
``label.npy``
    uint8, shape ``(Z, X, Y)``, the task's internal labels (0 background, k = its k-th class;
    absent for unlabelled cases).
``meta.json``
    written last; ``"complete": true`` marks the case done and ``"format_version"`` the layout
    it follows; ``"task"`` the task it was built for (name, channels, classes: :func:`task_meta`;
    an entry written before tasks existed holds the BraTS glioma task). Everything needed to map a prediction back onto the source file
    (:func:`pipeline.core.geometry.restore_to_original`) and to write it with the source header.
    A case of a 2D layout (Kaggle LGG patient, 2D image/mask pair) has axes (row, column,
    slice) with unit spacing and an identity affine; its ``"original"`` holds ``"format"``
    (``kaggle-lgg`` or ``image-2d``), ``"shape"`` (rows, columns, slices), ``"components"`` and
    ``"slices"`` (number, image and mask file of every slice, in order): slice ``z`` of a
    prediction restored to ``original.shape`` is the mask of ``slices[z]``, at its image's own
    size. A task with ``planar_size`` adds ``"padding"``: ``size`` (the padded rows and columns),
    ``offset`` (where the cropped grid starts inside it) and ``cropped_shape``; undo it with
    ``[offset[0]:offset[0] + rows, offset[1]:offset[1] + columns]`` before restoring the crop.
    With ``planar_fit`` ``resize`` it adds ``"resizing"`` instead: ``size`` (the resampled rows
    and columns) and ``cropped_shape`` (resample back to it: :func:`pipeline.core.geometry.from_planar_size`).

``cache_dir/cache.json`` lists the data list (path, sha256) and the complete cases.

Every reader goes through :func:`read_meta` and :func:`load_array`, so a missing, unfinished,
old or foreign entry, or one built for another task, is the same one-line
:class:`~pipeline.core.errors.InputError` wherever it is met.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import InputError
from pipeline.core.io import save_npy, write_json, written_by_running_process
from pipeline.tasks.task import DEFAULT_TASK, Task

__all__ = [
    "FORMAT_VERSION",
    "IMAGE_FILE",
    "INDEX_FILE",
    "LABEL_FILE",
    "META_FILE",
    "CachedCase",
    "IncompleteEntryError",
    "complete_case_ids",
    "discard",
    "is_complete",
    "is_current",
    "load_array",
    "load_case",
    "read_meta",
    "task_meta",
    "write_case",
    "write_index",
]

#: Version of the cache layout; an entry of another version is refused by readers and rebuilt by preprocess.
FORMAT_VERSION = 1

IMAGE_FILE, LABEL_FILE, META_FILE, INDEX_FILE = "image.npy", "label.npy", "meta.json", "cache.json"


class IncompleteEntryError(InputError):
    """A case the cache does not hold complete: no ``meta.json``, or one not marked complete."""


@dataclass(frozen=True)
class CachedCase:
    """One case read from the cache (memory-mapped by default): float16 image, uint8 label or None, manifest."""

    image: np.ndarray
    label: np.ndarray | None
    meta: dict


def task_meta(task: Task) -> dict[str, Any]:
    """What a cache entry records of its task: name, input channels, classes and (2D tasks) ``planar_size`` and ``planar_fit``: they fix the arrays' meaning."""
    meta = {"name": task.name, "channels": list(task.channels), "classes": list(task.classes)}
    if task.planar_size:
        meta["planar_size"] = list(task.planar_size)
        meta["planar_fit"] = task.planar_fit
    return meta


def _with_task(meta: dict) -> dict:
    """``meta`` with its task; an entry written before tasks existed holds the default task."""
    if "task" not in meta:
        meta["task"] = task_meta(DEFAULT_TASK)
    return meta


def _meta_or_none(case_dir: Path) -> dict | None:
    try:
        meta = json.loads((case_dir / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return _with_task(meta) if isinstance(meta, dict) else None


def is_complete(case_dir: str | os.PathLike[str]) -> bool:
    """True if ``case_dir`` holds a ``meta.json`` marked complete (of any format version)."""
    meta = _meta_or_none(Path(case_dir))
    return bool(meta) and meta.get("complete") is True


def complete_case_ids(cache_dir: str | os.PathLike[str]) -> list[str]:
    """The ids of the complete cases in ``cache_dir``, sorted.

    Raises:
        InputError: if the cache folder does not exist.
    """
    root = Path(cache_dir)
    if not root.is_dir():
        raise InputError(root, "cache folder not found (run preprocess first)")
    return [path.parent.name for path in sorted(root.glob(f"*/{META_FILE}")) if is_complete(path.parent)]


def read_meta(cache_dir: str | os.PathLike[str], case_id: str, require_label: bool = False, task: Task | None = None) -> dict[str, Any]:
    """Read and check one case's ``meta.json``: complete, this format version, shape ``(Z, C, X, Y)``.

    The returned manifest always holds ``"task"`` (:func:`task_meta`; the default task for an
    entry written before tasks existed): ``meta["task"]["channels"]`` are the image's channels.

    Args:
        cache_dir: the cache folder.
        case_id: the case.
        require_label: also require a label and its per-slice tumour counts (training, validation).
        task: when given, require the entry to be built for this task (its name, channels and
            classes), e.g. the task of the data list it is read through.

    Raises:
        IncompleteEntryError: the case is missing or not completely preprocessed.
        InputError: an old or foreign cache, one built for another task, or a manifest that does
            not describe the arrays.
    """
    case_dir = Path(cache_dir) / case_id
    meta_path = case_dir / META_FILE
    if not meta_path.is_file():
        raise IncompleteEntryError(case_dir, "not a cached case (meta.json missing; run preprocess first)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(meta_path, f"not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("complete") is not True:
        raise IncompleteEntryError(case_dir, "not a complete cache entry; run `brats-pipeline preprocess` again")
    if meta.get("format_version") != FORMAT_VERSION:
        raise InputError(
            case_dir,
            f"cache format {meta.get('format_version')} is not {FORMAT_VERSION} (an old or foreign cache); run preprocess again",
        )
    built = _with_task(meta)["task"]
    if task is not None and built != task_meta(task):
        raise InputError(
            case_dir,
            f"built for task {built.get('name')} (channels {', '.join(map(str, built.get('channels', [])))}), "
            f"not {task.name} (channels {', '.join(task.channels)}); run preprocess again",
        )
    shape = meta.get("shape")
    if not isinstance(shape, list) or len(shape) != 4:
        raise InputError(meta_path, f"'shape' must be [Z, C, X, Y], got {shape!r}")
    if require_label:
        counts = meta.get("foreground_per_slice")
        if not meta.get("has_label", counts is not None) or counts is None:
            raise InputError(case_dir, "case has no label; it cannot be used for training")
        if len(counts) != shape[0]:
            raise InputError(meta_path, f"'foreground_per_slice' has {len(counts)} entries for {shape[0]} slices")
    return meta


def load_array(path: str | os.PathLike[str], dtype: np.dtype | type, shape: Sequence[int], mmap: bool = True) -> np.ndarray:
    """One cached array, memory-mapped read-only (or read into memory), checked against its manifest.

    Raises:
        InputError: naming the file, if it cannot be read (damaged, truncated, pickled) or is
            not ``dtype`` of ``shape``.
    """
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(path, f"cannot read the cached arrays ({err}); run preprocess again") from err
    if array.dtype != dtype or array.shape != tuple(shape):
        raise InputError(path, f"expected {np.dtype(dtype).name} {tuple(shape)}, found {array.dtype} {array.shape}")
    return array


def load_case(
    cache_dir: str | os.PathLike[str], case_id: str, mmap: bool = True, require_label: bool = False, task: Task | None = None
) -> CachedCase:
    """Read one case (image and label memory-mapped read-only unless ``mmap`` is False); ``task``: as :func:`read_meta`.

    Raises:
        InputError: if the case is missing, incomplete, of another format or task, or damaged (preprocess it again).
    """
    meta = read_meta(cache_dir, case_id, require_label=require_label, task=task)
    case_dir = Path(cache_dir) / case_id
    z, channels, x, y = meta["shape"]
    image = load_array(case_dir / IMAGE_FILE, np.float16, (z, channels, x, y), mmap)
    label = load_array(case_dir / LABEL_FILE, np.uint8, (z, x, y), mmap) if meta.get("has_label") else None
    return CachedCase(image=image, label=label, meta=meta)


def is_current(case_dir: str | os.PathLike[str], wanted: Mapping[str, Any]) -> bool:
    """True if ``case_dir`` holds a complete entry of this format whose manifest has every ``wanted`` value.

    ``preprocess`` skips such an entry (same source files and settings) and rebuilds any other.
    """
    folder = Path(case_dir)
    meta = _meta_or_none(folder)
    if not meta or meta.get("complete") is not True or meta.get("format_version") != FORMAT_VERSION:
        return False
    if any(meta.get(key) != value for key, value in wanted.items()):
        return False
    files = [IMAGE_FILE] + ([LABEL_FILE] if meta.get("has_label") else [])
    return all((folder / name).is_file() for name in files)


def discard(case_dir: str | os.PathLike[str]) -> None:
    """Mark an entry incomplete (remove its ``meta.json``) and remove temporaries a killed write left in it.

    The temporaries of a writer that still runs stay: processes filling one cache side by side
    may write the same entry at once, and each one's files must survive the other's discard.
    """
    folder = Path(case_dir)
    (folder / META_FILE).unlink(missing_ok=True)
    for leftover in folder.glob(".*.tmp"):
        if not written_by_running_process(leftover):
            leftover.unlink(missing_ok=True)


def write_case(case_dir: str | os.PathLike[str], image: np.ndarray, label: np.ndarray | None, meta: Mapping[str, Any]) -> None:
    """Write one case atomically: the arrays first, then ``meta.json`` marked complete with this format version.

    A crash never leaves an entry that looks done: the old entry is :func:`discard`-ed first,
    and a failed write (full disk, interrupt) removes the arrays it wrote.
    """
    folder = Path(case_dir)
    discard(folder)
    created = not folder.exists()
    try:
        save_npy(folder / IMAGE_FILE, image)
        if label is not None:
            save_npy(folder / LABEL_FILE, label)
        else:
            (folder / LABEL_FILE).unlink(missing_ok=True)
        write_json(folder / META_FILE, {**meta, "format_version": FORMAT_VERSION, "complete": True})
    except BaseException:
        for name in (IMAGE_FILE, LABEL_FILE, META_FILE):
            (folder / name).unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def write_index(cache_dir: str | os.PathLike[str], datalist: str | os.PathLike[str], datalist_sha256: str, splits: Mapping[str, Sequence[str]]) -> None:
    """``cache.json``: the data list the cache was built from and every case of it held complete, by split."""
    root = Path(cache_dir)
    complete = {split: [case_id for case_id in ids if is_complete(root / case_id)] for split, ids in splits.items()}
    complete = {split: ids for split, ids in complete.items() if ids}
    cases = [case_id for ids in complete.values() for case_id in ids]
    if not cases and not root.is_dir():
        return
    write_json(
        root / INDEX_FILE,
        {
            "format_version": FORMAT_VERSION,
            "datalist": str(Path(datalist).resolve()),
            "datalist_sha256": datalist_sha256,
            "cases": cases,
            "splits": complete,
        },
    )
