"""The Medical Segmentation Decathlon's Task01_BrainTumour layout.

``dataset.json``, ``imagesTr/BRATS_NNN.nii.gz`` (4D: FLAIR, T1w, t1gd, T2w), ``labelsTr/BRATS_NNN.nii.gz``
and ``imagesTs/`` (no labels: kept as unlabelled cases).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.errors import InputError
from pipeline.datasets.records import CaseRecord
from pipeline.tasks.modalities import MODALITIES, MSD_CHANNELS

__all__ = ["RELEASE", "discover_msd", "is_msd_root", "read_msd_file"]


RELEASE = "msd-task01"
LABEL_CONVENTION = "msd"
CASE_PATTERN = re.compile(r"BRATS_\d{3,}")

#: dataset.json modality names -> canonical modality.
_MODALITY_NAMES: dict[str, str] = {"flair": "flair", "t1w": "t1", "t1gd": "t1ce", "t2w": "t2"}

#: dataset.json label names Task01 uses (spelling varies: tumor/tumour).
_LABEL_NAMES: dict[str, str] = {"0": "background", "1": "edema", "2": "non-enhancing", "3": "enhancing"}


def is_msd_root(folder: Path) -> bool:
    """Whether ``folder`` looks like a Decathlon task folder (``imagesTr/`` or ``dataset.json``)."""
    return (folder / "imagesTr").is_dir() or (folder / "dataset.json").is_file()


def channel_indices_from_dataset_json(path: Path) -> tuple[int, ...]:
    """Read ``dataset.json`` and check that it describes Task01's channels and labels.

    Returns:
        The channel of each canonical modality inside the 4D images (``MSD_CHANNELS`` order).

    Raises:
        InputError: if the file is missing or unreadable, or its ``modality`` or ``labels``
            differ from Task01_BrainTumour's.
    """
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "missing: needed to check the channel order of the 4D images") from None
    except (OSError, ValueError) as err:
        raise InputError(path, f"not a readable JSON file ({err})") from err
    modality = payload.get("modality") if isinstance(payload, dict) else None
    if not isinstance(modality, dict):
        raise InputError(path, "no 'modality' dictionary")
    channels: dict[str, int] = {}
    for index, name in modality.items():
        canonical = _MODALITY_NAMES.get(str(name).strip().lower())
        if canonical is None or not str(index).isdigit():
            raise InputError(path, f"modality {index!r}: {name!r} is not one of Task01's FLAIR, T1w, t1gd, T2w")
        channels[canonical] = int(index)
    expected = {modality_name: MSD_CHANNELS[modality_name] for modality_name in MODALITIES}
    if channels != expected:
        raise InputError(path, f"modality {modality} does not match Task01's channel order {{0: FLAIR, 1: T1w, 2: t1gd, 3: T2w}}")
    labels = payload.get("labels")
    if not isinstance(labels, dict) or set(labels) != set(_LABEL_NAMES) or any(
        not str(labels[key]).strip().lower().startswith(start) for key, start in _LABEL_NAMES.items()
    ):
        raise InputError(path, f"labels {labels} do not match Task01's {{0: background, 1: edema, 2: non-enhancing tumor, 3: enhancing tumour}}")
    return tuple(channels[modality_name] for modality_name in MODALITIES)


@dataclass
class MsdCases:
    """The cases of one Decathlon task folder and what was noticed while listing them."""

    records: list[CaseRecord]
    warnings: list[str] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)


def _case_files(folder: Path, warnings: list[str], problems: dict[str, list[str]]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    hidden = 0
    if not folder.is_dir():
        return files
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            hidden += 1  # macOS "._BRATS_001.nii.gz" resource files ship in the Task01 archive
            continue
        stem = entry.name.removesuffix(".gz").removesuffix(".nii") if entry.name.endswith((".nii", ".nii.gz")) else None
        if entry.is_file() and stem and CASE_PATTERN.fullmatch(stem):
            if stem in files:
                problems.setdefault(stem, []).append(f"{entry}: {stem} is present twice ({files[stem].name}, {entry.name}); keep one")
                continue
            files[stem] = entry
        else:
            warnings.append(f"{entry}: not a BRATS_NNN.nii.gz case file; ignored")
    if hidden:
        warnings.append(f"{folder}: {hidden} hidden file(s) ignored")
    return files


def _task_channels(indices: Sequence[int], channels: Sequence[str], where: Path) -> tuple[int, ...]:
    """The 4D image's channel of each of ``channels``, from its channel of each canonical modality (``indices``)."""
    missing = [channel for channel in channels if channel not in MODALITIES]
    if missing:
        raise InputError(where, f"Task01 images hold FLAIR, T1w, t1gd and T2w, not the task's channel(s) {', '.join(missing)}")
    return tuple(indices[MODALITIES.index(channel)] for channel in channels)


def discover_msd(root: Path, channels: Sequence[str] = MODALITIES) -> MsdCases:
    """List the labelled (``imagesTr`` + ``labelsTr``) and unlabelled (``imagesTs``) cases of a task folder.

    Each record reads ``channels`` (a task's input channels) out of its 4D image.
    """
    channel_indices = _task_channels(channel_indices_from_dataset_json(root / "dataset.json"), channels, root)
    warnings: list[str] = []
    problems: dict[str, list[str]] = {}
    train = _case_files(root / "imagesTr", warnings, problems)
    labels = _case_files(root / "labelsTr", warnings, problems)
    test = _case_files(root / "imagesTs", warnings, problems)
    for case_id in sorted(set(labels) - set(train)):
        warnings.append(f"{labels[case_id]}: label without an image in imagesTr; ignored")
    records = [
        CaseRecord(
            case_id=case_id,
            images=(path,),
            label=labels.get(case_id),
            split="all" if case_id in labels else "unlabelled",
            channel_indices=channel_indices,
            label_convention=LABEL_CONVENTION,
            channels=tuple(channels),
        )
        for files in (train, test)
        for case_id, path in files.items()
    ]
    for entry in sorted(root.iterdir()):
        if entry.name not in ("dataset.json", "imagesTr", "labelsTr", "imagesTs") and not entry.name.startswith("."):
            warnings.append(f"{entry}: not part of the Task01 layout; ignored")
    return MsdCases(records=records, warnings=warnings, problems=problems)


def read_msd_file(path: Path, channels: Sequence[str] = MODALITIES) -> CaseRecord:
    """One 4D Task01 image file as a case (its label from the sibling ``labelsTr/`` when present), reading ``channels``.

    The channel order is checked against a ``dataset.json`` two folders up when there is one.
    """
    stem = path.name.removesuffix(".gz").removesuffix(".nii")
    task_root = path.parent.parent
    if (task_root / "dataset.json").is_file():
        channel_indices = channel_indices_from_dataset_json(task_root / "dataset.json")
    elif CASE_PATTERN.fullmatch(stem):
        channel_indices = tuple(MSD_CHANNELS[modality] for modality in MODALITIES)
    else:
        raise InputError(
            path, "a single file is read only as an MSD Task01 4D image (BRATS_NNN.nii.gz, channels FLAIR, T1w, t1gd, T2w); pass a case folder instead"
        )
    channel_indices = _task_channels(channel_indices, channels, path)
    label = None
    if path.parent.name == "imagesTr":
        candidate = task_root / "labelsTr" / path.name
        label = candidate if candidate.is_file() else None
    return CaseRecord(
        case_id=stem,
        images=(path,),
        label=label,
        split="all" if label is not None else "unlabelled",
        channel_indices=channel_indices,
        label_convention=LABEL_CONVENTION,
        channels=tuple(channels),
    )
