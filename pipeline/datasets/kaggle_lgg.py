"""The Kaggle LGG segmentation layout (``kaggle_3m``, Buda et al. 2019).

One folder per patient, ``TCGA_<inst>_<patient>_<date>/``, holding ``<folder>_<n>.tif`` (the n-th
axial slice, n from 1, RGB: pre-contrast, FLAIR, post-contrast) and ``<folder>_<n>_mask.tif``
(0/255). A patient is one case: its slices, sorted numerically, are one volume of Z slices.
The files store no spacing: the volume has unit spacing and an identity affine, its array axes
being (row, column, slice).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.errors import ConfigError
from pipeline.datasets.records import KAGGLE_LGG, CaseRecord, planar_record
from pipeline.tasks.task import Task

__all__ = ["CHANNELS", "LABEL_CONVENTION", "RELEASE", "KaggleCases", "SliceFiles", "channel_indices", "discover_kaggle", "has_masks", "is_kaggle_root", "is_patient_folder", "list_slices", "patient_record"]

RELEASE = "kaggle-lgg"
LABEL_CONVENTION = "mask255"

#: The colour components of every slice, in file order.
CHANNELS: tuple[str, ...] = ("pre", "flair", "post")

_SLICE = re.compile(r"^(?P<prefix>.+)_(?P<number>\d+)(?P<mask>_mask)?\.tiff?$", re.IGNORECASE)


@dataclass(frozen=True)
class SliceFiles:
    """One slice of a patient: its number and its image and mask files."""

    number: int
    image: Path
    mask: Path | None


@dataclass
class KaggleCases:
    """The patients under a Kaggle root, before validation."""

    records: list[CaseRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _slice_files(folder: Path) -> list[tuple[int, bool, Path]]:
    """(number, is mask, path) of the files named ``<folder>_<n>[_mask].tif`` in ``folder``."""
    found = []
    for path in folder.iterdir():
        match = _SLICE.match(path.name)
        if match and match["prefix"] == folder.name and path.is_file():
            found.append((int(match["number"]), bool(match["mask"]), path))
    return found


def is_patient_folder(folder: Path) -> bool:
    """Whether ``folder`` holds Kaggle LGG slices named after it (``<folder>_<n>.tif``, ``<folder>_<n>_mask.tif``)."""
    return folder.is_dir() and any(_SLICE.match(p.name) and p.name.startswith(f"{folder.name}_") for p in folder.iterdir())


def is_kaggle_root(folder: Path) -> bool:
    """Whether ``folder`` holds Kaggle LGG patient folders."""
    return folder.is_dir() and any(is_patient_folder(entry) for entry in folder.iterdir() if not entry.name.startswith("."))


def list_slices(folder: Path) -> tuple[list[SliceFiles], list[str]]:
    """The slices of a patient folder in numeric order (slice 10 after slice 9), and ``<file>: <reason>`` problems.

    Problems: no slice, a slice without its mask or a mask without its slice, a number used
    twice (``_5.tif`` and ``_5.tiff``), a gap in the numbers or numbers not starting at 1. A
    folder without any mask is an unlabelled patient: its slices have ``mask`` None.
    """
    images: dict[int, Path] = {}
    masks: dict[int, Path] = {}
    problems: list[str] = []
    for number, is_mask, path in sorted(_slice_files(folder), key=lambda item: (item[0], item[1], item[2].name)):
        files = masks if is_mask else images
        if number in files:
            problems.append(f"{path}: slice {number} {'mask ' if is_mask else ''}appears twice (also {files[number].name})")
            continue
        files[number] = path
    if not images and not masks:
        return [], [f"{folder}: no slice found (expected {folder.name}_<n>.tif and {folder.name}_<n>_mask.tif)"]
    if images and not masks:  # unlabelled: slices only
        masks = dict.fromkeys(images)
    for number in sorted(set(images) - set(masks)):
        problems.append(f"{images[number]}: slice {number} has no mask ({folder.name}_{number}_mask.tif)")
    for number in sorted(set(masks) - set(images)):
        problems.append(f"{masks[number]}: mask of slice {number} has no image ({folder.name}_{number}.tif)")
    numbers = sorted(set(images) | set(masks))
    missing = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        problems.append(f"{folder}: slice number(s) {shown} missing (slices run 1-{numbers[-1]})")
    slices = [SliceFiles(n, images[n], masks[n]) for n in numbers if n in images and n in masks]
    return slices, problems


def channel_indices(task: Task, where: str | Path) -> tuple[int, ...]:
    """The colour component of each of ``task``'s channels in a Kaggle slice.

    Raises:
        ConfigError: if the task reads channels a slice does not hold, or not the 0/255 masks.
    """
    unknown = [c for c in task.channels if c not in CHANNELS]
    if unknown or LABEL_CONVENTION not in task.labels:
        raise ConfigError(where, f"Kaggle LGG slices hold {', '.join(CHANNELS)} with 0/255 masks; task {task.name} reads {', '.join(task.channels)}: use --task kaggle-lgg")
    return tuple(CHANNELS.index(c) for c in task.channels)


def has_masks(folder: Path) -> bool:
    """Whether a patient folder holds any mask (a folder of slices only is an unlabelled patient)."""
    return any(is_mask for _, is_mask, _ in _slice_files(folder))


def patient_record(folder: Path, task: Task, indices: tuple[int, ...] | None = None) -> CaseRecord:
    """The record of one patient folder under ``task`` (its label is the folder, or None without any mask)."""
    indices = channel_indices(task, folder) if indices is None else indices
    label = folder if has_masks(folder) else None
    return planar_record(folder.name, folder, label, KAGGLE_LGG, task.channels, indices, LABEL_CONVENTION)


def discover_kaggle(root: Path, task: Task, folders: Sequence[Path] | None = None) -> KaggleCases:
    """One record per patient folder under ``root`` (or of ``folders``); validation lists and judges its slices.

    Raises:
        ConfigError: if ``task`` does not read Kaggle slices (:func:`channel_indices`).
    """
    indices = channel_indices(task, root)
    found = KaggleCases()
    for entry in sorted(root.iterdir()) if folders is None else folders:
        if entry.name.startswith("."):
            continue
        if not is_patient_folder(entry):
            found.warnings.append(f"{entry}: not a Kaggle LGG patient folder; ignored")
            continue
        found.records.append(patient_record(entry, task, indices))
        stray = {p for p in entry.iterdir() if not p.name.startswith(".")} - {p for _, _, p in _slice_files(entry)}
        found.warnings += [f"{path}: not a slice of {entry.name}; ignored" for path in sorted(stray)]
    return found
