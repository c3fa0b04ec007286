"""Finding the cases of a data root, whatever release (or mix of releases) it holds.

Each case is recognised on its own, from its folder name (BraTS releases) or from the Decathlon
task layout it sits in, and carries its own release's label convention. A folder that mixes
releases (say a BraTS 2021 case, a BraTS 2018 case and a BraTS 2023 case) is therefore read
case by case; its data list records the most common convention at the top level and the
others on their entries.

A root of Kaggle LGG patient folders (:mod:`pipeline.datasets.kaggle_lgg`) or of 2D image/mask
pairs (:mod:`pipeline.datasets.image_folders`) is recognised as a whole; :func:`layout_task`
gives the task such a root is read with when none is asked for.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.errors import InputError
from pipeline.core.io import IMAGE_2D_SUFFIXES
from pipeline.datasets import image_folders, kaggle_lgg, msd
from pipeline.datasets.brats import (
    find_case_prefix,
    identify_files,
    identify_release,
    read_case_folder,
)
from pipeline.datasets.records import NIFTI, CaseRecord
from pipeline.tasks.task import KAGGLE_LGG, Task, resolve_task

__all__ = ["MIXED_RELEASE", "DiscoveredDataset", "discover", "discover_case", "layout_task"]


logger = logging.getLogger(__name__)

#: How many levels of grouping folders (``HGG/``, ``LGG/``, ``MICCAI_BraTS2020_TrainingData/``) are searched.
MAX_GROUPING_DEPTH = 2

#: The release recorded when a data root holds cases of several releases.
MIXED_RELEASE = "mixed"

_EXPECTED = (
    "case folders such as BraTS2021_00000, BraTS20_Training_001, Brats18_2013_2_1 or BraTS-GLI-00000-000 or BraTS-MEN-RT-0000-1, "
    "an MSD Task01 folder (dataset.json, imagesTr/), Kaggle LGG patient folders (<folder>_<n>.tif + <folder>_<n>_mask.tif) "
    "or 2D images with masks (images/ + masks/, or <name>.png + <name>_mask.png)"
)


@dataclass
class DiscoveredDataset:
    """The cases found under a data root, before validation.

    Attributes:
        release: the release of every case, or ``"mixed"``.
        label_convention: the convention of every case, or (mixed roots) the most common one.
        records: one record per case, sorted by case id; each carries its own ``label_convention``.
        warnings: ``<path>: <reason>`` lines about files that were ignored or guessed.
        problems: ``<path>: <reason>`` lines found while listing, by case id (such a case is bad).
        releases: the release of each case, by case id.
    """

    release: str
    label_convention: str
    records: list[CaseRecord]
    warnings: list[str] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)
    releases: dict[str, str] = field(default_factory=dict)


@dataclass
class _Found:
    records: list[tuple[CaseRecord, str]] = field(default_factory=list)  # (record, release name)
    warnings: list[str] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)


def _scan(folder: Path, depth: int, found: _Found, task: Task) -> int:
    """Collect the cases under ``folder`` (the files of ``task``'s channels); returns how many were found."""
    if msd.is_msd_root(folder):
        cases = msd.discover_msd(folder, task.channels)
        found.records += [(record, msd.RELEASE) for record in cases.records]
        found.warnings += cases.warnings
        for case_id, lines in cases.problems.items():
            found.problems.setdefault(case_id, []).extend(lines)
        return len(cases.records)
    count = 0
    hidden = 0
    stray: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            hidden += 1
            continue
        release = identify_release(entry.name) if entry.is_dir() else None
        if release is not None:
            case = read_case_folder(entry, release, channels=task.channels, conventions=task.conventions)
            found.records.append((case.record, release.name))
            found.warnings += case.warnings
            if case.problems:
                found.problems.setdefault(case.record.case_id, []).extend(case.problems)
            count += 1
        elif entry.is_dir() and depth < MAX_GROUPING_DEPTH:
            inside = _scan(entry, depth + 1, found, task)
            if not inside:
                found.warnings.append(f"{entry}: holds no recognisable case; ignored")
            count += inside
        else:
            stray.append(entry)
    if depth == 0 or count:  # a grouping folder without cases is reported once, by its parent
        found.warnings += [f"{entry}: not a case {'folder' if entry.is_dir() else 'file'}; ignored" for entry in stray]
        if hidden:
            found.warnings.append(f"{folder}: {hidden} hidden file(s) or folder(s) ignored")
    return count


def discover(data_root: str | Path, task: Task | None = None) -> DiscoveredDataset:
    """Find every case under ``data_root`` and the release each belongs to.

    Recognised: BraTS 2017-2021 and 2023+ case folders (directly under the root or inside up to
    two grouping folders such as ``HGG/``/``LGG/``) and MSD Task01 folders. Nothing is read
    beyond file names and ``dataset.json``; :func:`pipeline.datasets.validate_case` checks the
    files. Each record holds the files of ``task``'s channels (default: the BraTS glioma task's
    four modalities), and the task's label conventions decide how an ambiguous release is read.

    Raises:
        InputError: if the root is missing, empty or holds no recognisable case, or if a case id
            appears twice.
    """
    root = Path(data_root).resolve()
    if not root.is_dir():
        raise InputError(data_root, "data root not found" if not root.exists() else "data root is not a folder")
    if not any(root.iterdir()):
        raise InputError(data_root, "data root is empty")
    if kaggle_lgg.is_patient_folder(root):
        raise InputError(data_root, "this looks like one Kaggle LGG patient folder: pass the folder that holds the patients")
    task = resolve_task(task if task is not None else layout_task(root))
    found = _Found()
    if kaggle_lgg.is_kaggle_root(root):
        planar = kaggle_lgg.discover_kaggle(root, task)
        found.records += [(record, kaggle_lgg.RELEASE) for record in planar.records]
        found.warnings += planar.warnings
    elif image_folders.is_image_folder_root(root):
        pairs = image_folders.discover_image_folders(root, task)
        found.records += [(record, image_folders.RELEASE) for record in pairs.records]
        found.warnings += pairs.warnings
        found.problems.update(pairs.problems)
    else:
        _scan(root, 0, found, task)
    if not found.records and found.problems:
        first = next(iter(found.problems.values()))[0]
        raise InputError(first.split(": ", 1)[0], f"{first.split(': ', 1)[1]}; no usable case found")
    if not found.records:
        hint = "; this looks like one case folder: pass the folder that holds the cases" if identify_release(root.name) else ""
        raise InputError(data_root, f"no recognisable case found; expected {_EXPECTED}{hint}")

    first_seen: dict[str, CaseRecord] = {}
    for record, _ in found.records:
        if record.case_id in first_seen:
            first = first_seen[record.case_id]
            raise InputError(_case_location(record), f"case id {record.case_id} appears twice (also at {_case_location(first)})")
        first_seen[record.case_id] = record

    ordered = sorted(found.records, key=lambda pair: pair[0].case_id)
    releases = {record.case_id: release for record, release in ordered}
    release_counts = Counter(releases.values())
    convention_counts = Counter(record.label_convention for record, _ in ordered)
    if len(release_counts) > 1:
        summary = ", ".join(f"{name}: {count}" for name, count in sorted(release_counts.items()))
        found.warnings.append(f"{root}: cases of several releases ({summary}); each case keeps its own label convention")
    return DiscoveredDataset(
        release=next(iter(release_counts)) if len(release_counts) == 1 else MIXED_RELEASE,
        # most common convention; ties go to the alphabetically first name, so the choice is stable
        label_convention=min(convention_counts, key=lambda name: (-convention_counts[name], name)),
        records=[record for record, _ in ordered],
        warnings=found.warnings,
        problems=found.problems,
        releases=releases,
    )


def layout_task(data_root: str | Path) -> Task | None:
    """The task a 2D layout is read with (``kaggle-lgg``, ``image-mask-2d`` or its RGB variant), or None for NIfTI layouts."""
    root = Path(data_root)
    if kaggle_lgg.is_kaggle_root(root):
        return KAGGLE_LGG
    if image_folders.is_image_folder_root(root) and not (root / "dataset.json").is_file():
        return image_folders.image_task(root)
    return None


def _case_location(record: CaseRecord) -> Path:
    return record.images[0] if record.channel_indices is not None or record.layout != NIFTI else record.images[0].parent


def discover_case(path: str | Path, task: Task | None = None) -> CaseRecord:
    """Read one case for inference: a case folder (any BraTS naming), one MSD Task01 4D file, a
    Kaggle LGG patient folder (its slices; its masks if any) or one 2D image (PNG, JPG, TIFF; no mask).

    A folder not named after its case (``new_case/``) is recognised from its file names.
    Warnings are logged; problems found while listing raise. The record holds the files of
    ``task``'s channels (default: the four BraTS modalities).

    Raises:
        InputError: if the path is missing, not recognisable, or the case is ambiguous.
    """
    source = Path(path).resolve()
    if kaggle_lgg.is_patient_folder(source):
        return kaggle_lgg.patient_record(source, resolve_task(task if task is not None else KAGGLE_LGG))
    if source.is_file() and source.suffix.lower() in IMAGE_2D_SUFFIXES:
        return image_folders.image_record(source, task)
    task = resolve_task(task)
    if source.is_file():
        return msd.read_msd_file(source, task.channels)
    if not source.is_dir():
        raise InputError(path, "input not found")
    release = identify_release(source.name)
    case_id = source.name
    if release is None:
        identified = find_case_prefix(source)
        if identified is None:
            raise InputError(
                path,
                "no single BraTS case found: expected <case>_{t1,t1ce,t2,flair}.nii.gz or <case>-{t1n,t1c,t2w,t2f}.nii.gz files",
            )
        case_id, release = identified
    case = read_case_folder(source, release, case_id=case_id, channels=task.channels, conventions=task.conventions)
    for line in case.warnings:
        logger.warning("warning: %s", line)
    if case.problems:
        first = case.problems[0]
        raise InputError(first.split(": ", 1)[0], first.split(": ", 1)[1])
    return case.record


def case_from_files(files: Sequence[str | Path]) -> CaseRecord:
    """Read one case for inference from its four modality files, given in canonical order (T1, T1ce, T2, FLAIR).

    The case id and the label convention follow the files' naming (:func:`pipeline.datasets.brats.identify_files`).

    Raises:
        InputError: if there are not exactly four files.
    """
    paths = [Path(p) for p in files]
    if len(paths) != 4:
        raise InputError(", ".join(map(str, paths)) or "case", f"expected 4 modality files (T1, T1ce, T2, FLAIR), got {len(paths)}")
    case_id, release = identify_files([path.name for path in paths])
    return CaseRecord(
        case_id=case_id,
        images=tuple(path.resolve() for path in paths),
        label=None,
        split="unlabelled",
        label_convention=release.label_convention,
    )
