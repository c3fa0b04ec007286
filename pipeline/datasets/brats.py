"""BraTS releases stored as one folder per case: how each names its cases and files.

Covered: BraTS 2017, 2018, 2019 (``Brats17_*``, ``Brats18_*``, ``BraTS19_*``), 2020
(``BraTS20_Training_NNN``, ``BraTS20_Validation_NNN``), 2021 (``BraTS2021_NNNNN``), all with
``<case>_{flair,t1,t1ce,t2,seg}.nii[.gz]``, and BraTS 2023+ (``BraTS-{GLI,MEN,MET,SSA,PED}-NNNNN-NNN``
with ``<case>-{t1n,t1c,t2w,t2f,seg}.nii[.gz]``), and BraTS 2024 meningioma radiotherapy
(``BraTS-MEN-RT-NNNN-N`` with ``<case>_t1c.nii.gz`` and the label ``<case>_gtv.nii.gz``).

A case is read for the channels of a task (:mod:`pipeline.tasks.task`): only those files are
required. BraTS-PED labels are ambiguous (2023 and 2024 use different schemes under the same
names): they are read only under a task that names the 2024 scheme (``--task brats2024-ped``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.datasets.records import CaseRecord
from pipeline.tasks.modalities import BRATS2023_SUFFIXES, MODALITIES

__all__ = ["RELEASES", "Release", "find_case_prefix", "identify_release", "is_prepared_case_extra", "read_case_folder"]


#: NIfTI file endings the releases use (mirrors often ship uncompressed ``.nii``).
NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")

_LEGACY_SUFFIXES: dict[str, str] = {modality: modality for modality in MODALITIES}


@dataclass(frozen=True)
class Release:
    """One BraTS release (or sub-challenge) that stores a folder per case.

    Args:
        name: the release recorded in data lists (``brats2021``, ``brats2023-gli``, ...).
        case_pattern: a full match of this release's case folder names.
        separator: what joins the case id and the modality suffix in file names.
        suffixes: canonical modality -> this release's file suffix.
        label_convention: the label convention of its segmentations (a name tasks declare values
            for, :meth:`pipeline.tasks.task.Task.convention`; the glioma task's are :mod:`pipeline.tasks.labels`'s).
        seg_aliases: known misnamed segmentation files (exact file names) found in public mirrors.
        refused_seg_reason: when set, a segmentation of this release is refused with this reason,
            unless the task reads ``task_convention``.
        seg_suffix: the file suffix of the segmentation.
        task_convention: the convention a task must name to have this release's segmentations
            read (with it); the case is then recorded with this convention.
    """

    name: str
    case_pattern: re.Pattern[str]
    separator: str
    suffixes: dict[str, str]
    label_convention: str
    seg_aliases: tuple[str, ...] = ()
    refused_seg_reason: str | None = None
    seg_suffix: str = "seg"
    task_convention: str | None = None

    def file_stem(self, case_id: str, suffix: str) -> str:
        """The file name of one modality (or ``seg``) without its NIfTI ending."""
        return f"{case_id}{self.separator}{suffix}"


def _brats2023(sub_challenge: str, refused_seg_reason: str | None = None, task_convention: str | None = None) -> Release:
    return Release(
        name=f"brats2023-{sub_challenge.lower()}",
        case_pattern=re.compile(rf"BraTS-{sub_challenge}-\d{{5}}-\d{{3}}"),
        separator="-",
        suffixes=dict(BRATS2023_SUFFIXES),
        label_convention="brats2023",
        refused_seg_reason=refused_seg_reason,
        task_convention=task_convention,
    )


#: Every folder-per-case release, checked in this order (the case patterns do not overlap).
RELEASES: tuple[Release, ...] = (
    Release("brats2017", re.compile(r"Brats17_[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*"), "_", _LEGACY_SUFFIXES, "brats2017"),
    Release("brats2018", re.compile(r"Brats18_[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*"), "_", _LEGACY_SUFFIXES, "brats2017"),
    Release("brats2019", re.compile(r"BraTS19_[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*"), "_", _LEGACY_SUFFIXES, "brats2017"),
    Release(
        "brats2020",
        re.compile(r"BraTS20_(?:Training|Validation|Testing)_\d{3}"),
        "_",
        _LEGACY_SUFFIXES,
        "brats2017",
        # Case 355 of the training set ships its segmentation under this name in a widely used mirror.
        seg_aliases=("W39_1998.09.19_Segm.nii", "W39_1998.09.19_Segm.nii.gz"),
    ),
    Release("brats2021", re.compile(r"BraTS2021_\d{5}"), "_", _LEGACY_SUFFIXES, "brats2017"),
    _brats2023("GLI"),
    _brats2023("MEN"),
    _brats2023("MET"),
    _brats2023("SSA"),
    _brats2023(
        "PED",
        refused_seg_reason="BraTS-PED segmentations are not read: the 2023 release labels them like GLI "
        "(1 NETC, 2 SNFH, 3 ET) but 2024 uses 1 ET, 2 NETC, 3 CC, 4 ED, and the file names do not say which; "
        "for the 2024 scheme pass --task brats2024-ped",
        task_convention="brats2024-ped",
    ),
    Release(
        "brats2024-men-rt",
        re.compile(r"BraTS-MEN-RT-\d{4,5}-\d{1,3}"),
        "_",
        {"t1ce": "t1c"},
        "brats2024-men-rt",
        seg_suffix="gtv",
    ),
)


def identify_release(case_id: str) -> Release | None:
    """The release whose case naming ``case_id`` follows, or None."""
    for release in RELEASES:
        if release.case_pattern.fullmatch(case_id):
            return release
    return None


@dataclass
class FolderCase:
    """A case folder read from disk: its record, and what was noticed while reading it.

    ``warnings`` are informational lines; ``problems`` are lines that make the case unusable.
    Both name a file or folder and the reason.
    """

    record: CaseRecord
    release: Release
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def is_prepared_case_extra(name: str, case_id: str) -> bool:
    """Whether ``name`` is a file the ``prepare`` command writes beside a case's contrasts: the brain
    mask ``<case>_brain_mask.nii.gz`` or a ``<case>_<channel>_to_<reference>.tfm`` transform (for
    people checking the case in 3D Slicer; case reading ignores them without a warning)."""
    return name == f"{case_id}_brain_mask.nii.gz" or (name.startswith(f"{case_id}_") and name.endswith(".tfm"))


def _nifti_stem(name: str) -> str | None:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def read_case_folder(
    folder: Path,
    release: Release,
    case_id: str | None = None,
    channels: Sequence[str] = MODALITIES,
    conventions: Sequence[str] = (),
) -> FolderCase:
    """Find the files of ``channels`` and the segmentation of one case folder.

    A missing channel is given its expected ``.nii.gz`` path (validation reports it missing);
    a missing segmentation makes the case unlabelled. Files that belong to no modality of the
    release are warnings (those of channels the task does not use are ignored silently); a
    modality present both as ``.nii`` and ``.nii.gz`` is a problem.

    Args:
        folder: the case folder.
        release: the release whose file naming the folder follows.
        case_id: the case id in the file names (default: the folder name).
        channels: the task's input channels, in its order.
        conventions: the label conventions the task reads (decides how an ambiguous release's
            segmentations are read, see :attr:`Release.task_convention`).
    """
    case_id = case_id or folder.name
    suffixes = {**release.suffixes, **{channel: channel for channel in channels if channel not in release.suffixes}}
    wanted = {release.file_stem(case_id, suffix): modality for modality, suffix in suffixes.items()}
    wanted[release.file_stem(case_id, release.seg_suffix)] = "seg"
    found: dict[str, list[Path]] = {}
    extra: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or is_prepared_case_extra(entry.name, case_id):
            continue  # operating-system metadata (.DS_Store, ._* resource forks) or a prepared case's mask and transforms, never case data
        stem = _nifti_stem(entry.name)
        if entry.is_file() and stem in wanted:
            found.setdefault(wanted[stem], []).append(entry)
        else:
            extra.append(entry)

    warnings: list[str] = []
    problems: list[str] = []
    for key, paths in found.items():
        if len(paths) > 1:
            problems.append(f"{paths[0]}: {key} is present twice ({', '.join(p.name for p in paths)}); keep one")

    seg = found.get("seg", [None])[0]
    if seg is None:
        for alias in release.seg_aliases:
            if folder.joinpath(alias).is_file():
                seg = folder / alias
                extra = [p for p in extra if p != seg]
                warnings.append(f"{seg}: misnamed segmentation of {case_id} (a known naming error in {release.name} mirrors); used as its seg")
                break
    for path in extra:
        warnings.append(f"{path}: not one of {case_id}'s modality or seg files; ignored")
    named = release.task_convention is not None and release.task_convention in conventions
    if seg is not None and release.refused_seg_reason and not named:
        problems.append(f"{seg}: {release.refused_seg_reason}")

    images = tuple(
        found[channel][0] if channel in found else folder / f"{release.file_stem(case_id, suffixes[channel])}{NIFTI_SUFFIXES[0]}"
        for channel in channels
    )
    record = CaseRecord(
        case_id=case_id,
        images=images,
        label=seg,
        split="all" if seg is not None else "unlabelled",
        label_convention=release.task_convention if named else release.label_convention,
        channels=tuple(channels),
    )
    return FolderCase(record=record, release=release, warnings=warnings, problems=problems)


def identify_files(names: Sequence[str]) -> tuple[str, Release]:
    """The case id and release naming of loose modality files given in canonical order (T1, T1ce, T2, FLAIR).

    Files named ``<case>_{t1,t1ce,t2,flair}`` or ``<case>-{t1n,t1c,t2w,t2f}`` (``.nii[.gz]``) give
    ``<case>`` and its release (BraTS 2021 or BraTS 2023 GLI when the id is none of theirs);
    other names give their common prefix, with BraTS 2023 naming when every name ends in a
    2023+ suffix, else BraTS 2021.
    """
    styles = [release for release in RELEASES if release.name in ("brats2021", "brats2023-gli")]
    stems = [_nifti_stem(name) or name.split(".")[0] for name in names]
    for style in styles:
        endings = [style.separator + style.suffixes[modality] for modality in MODALITIES]
        if len(stems) != len(endings) or not all(stem.endswith(ending) for stem, ending in zip(stems, endings)):
            continue
        prefixes = {stem[: -len(ending)] for stem, ending in zip(stems, endings)}
        if len(prefixes) == 1:
            (prefix,) = prefixes
            release = identify_release(prefix)
            return prefix, release if release is not None and release.separator == style.separator else style
    legacy, modern = styles
    modern_endings = tuple(modern.separator + suffix for suffix in modern.suffixes.values())
    prefix = os.path.commonprefix(list(names)).rstrip("_-.") or stems[0]
    return prefix, modern if all(stem.endswith(modern_endings) for stem in stems) else legacy


def find_case_prefix(folder: Path) -> tuple[str, Release] | None:
    """Identify a case folder that is not named after its case (e.g. ``new_case/``) from its files.

    Returns the case id used in the file names and the release whose naming they follow (the
    release matched by that id, else BraTS 2021 for ``_flair``-style names or BraTS 2023 GLI
    for ``-t2f``-style names), or None when no single case's four modalities are there.
    """
    styles = [release for release in RELEASES if release.name in ("brats2021", "brats2023-gli")]
    names = {stem for stem in (_nifti_stem(p.name) for p in folder.iterdir() if p.is_file()) if stem}
    candidates: list[tuple[str, Release]] = []
    for style in styles:
        flair_ending = style.separator + style.suffixes["flair"]
        for stem in sorted(names):
            prefix = stem[: -len(flair_ending)]
            if not stem.endswith(flair_ending) or not all(style.file_stem(prefix, s) in names for s in style.suffixes.values()):
                continue
            release = identify_release(prefix)
            candidates.append((prefix, release if release is not None and release.separator == style.separator else style))
    return candidates[0] if len(candidates) == 1 else None
