"""Reading and checking the Decathlon-style data list files that every stage after discovery uses.

A data list is a JSON file::

    {
      "name": "synthetic", "release": "brats2021", "label_convention": "brats2017",
      "data_root": "../data/synthetic",          # absolute, or relative to the JSON file's folder
      "task": {"name": "brats-glioma", "channels": [...], "classes": [...], ...},   # pipeline.tasks.task.Task.to_dict()
      "modalities": ["t1", "t1ce", "t2", "flair"],   # the task's channels, in order
      "num_folds": 5, "seed": 0, "test_fraction": 0.2,
      "training":   [{"case_id": ..., "image": [one path per channel], "label": path, "fold": k}, ...],
      "validation": [...],                       # the cases of fold 0, the default validation fold
      "test":       [...],                       # held out, "fold": -1
      "unlabelled": [{"case_id": ..., "image": [...]}]   # no ground truth: inference only
    }

Image and label paths are relative to ``data_root``. An MSD entry has one 4D image path and
``"channel_indices"``: the channel of each of the task's channels inside that file. An entry of a
2D layout carries ``"layout"``: ``kaggle-lgg`` (image and label are the patient folder of TIFF
slices) or ``image-2d`` (one image file and its mask; ``channel_indices`` pick colour components
of an RGB image). An entry may
carry its own ``"label_convention"`` (a data root that mixes releases); it overrides the
top-level one for that case. Every label convention is one the task reads.

``"task"`` is the task the list was built for (:mod:`pipeline.tasks.task`): its input channels (the
files of each entry, in order), classes and label values. A data list without one (written
before tasks existed) holds the BraTS glioma task (:data:`pipeline.tasks.task.DEFAULT_TASK`).

Writing one (the ``datalist`` command, :func:`build_datalist`): splitting is seeded and stable: the labelled cases are sorted by id, shuffled with
``numpy.random.default_rng(seed)``, the first ``round(test_fraction * n)`` are held out as the
test set (fold -1) and the rest are dealt round-robin into folds; fold 0 is written as
``validation``, the other folds as ``training``. Cases without a segmentation go to
``unlabelled``. The same data root and seed always give a byte-identical file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from pipeline.core.errors import ConfigError, InputError
from pipeline.core.io import write_json
from pipeline.datasets import discover, layout_task, validate_cases
from pipeline.datasets.records import LAYOUTS, NIFTI, CaseRecord
from pipeline.tasks.task import DEFAULT_TASK, Task, resolve_task, task_from_dict

__all__ = [
    "SCORED_SPLITS",
    "SPLITS",
    "SPLIT_CHOICES",
    "Datalist",
    "assign_folds",
    "build_datalist",
    "datalist_task",
    "load_datalist",
]


logger = logging.getLogger(__name__)

#: The lists a data list may hold, in the order they are written.
SPLITS: tuple[str, ...] = ("training", "validation", "test", "unlabelled")

#: The splits whose cases have ground truth.
LABELLED_SPLITS: tuple[str, ...] = ("training", "validation", "test")

#: The name that selects every labelled case.
ALL_LABELLED = "all"

#: Names accepted where a command selects cases (``all`` = every labelled case).
SPLIT_CHOICES: tuple[str, ...] = (*SPLITS, ALL_LABELLED)

#: Names accepted where a command scores a model against ground truth, test first.
SCORED_SPLITS: tuple[str, ...] = (*reversed(LABELLED_SPLITS), ALL_LABELLED)

_REQUIRED_KEYS = ("data_root", "label_convention", "training", "validation", "test")
_SETTING_KEYS = ("name", "release", "label_convention", "data_root", "task", "modalities", "num_folds", "seed", "test_fraction")
_SAFE_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class Datalist:
    """A loaded, checked data list."""

    path: Path
    data_root: Path
    label_convention: str
    records: dict[str, tuple[CaseRecord, ...]]
    sha256: str
    num_folds: int
    name: str = ""
    task: Task = DEFAULT_TASK

    def cases(self, split: str) -> list[CaseRecord]:
        """Cases of one split; ``all`` is every labelled case (training, validation and test)."""
        if split not in SPLIT_CHOICES:
            raise ConfigError(self.path, f"unknown split {split!r}; choose one of {', '.join(SPLIT_CHOICES)}")
        if split == ALL_LABELLED:
            return [c for s in LABELLED_SPLITS for c in self.records[s]]
        return list(self.records[split])

    def fold_split(self, fold: int | None) -> tuple[list[CaseRecord], list[CaseRecord]]:
        """Training and validation cases for cross-validation fold ``fold`` (test cases excluded); ``None``: every case trains, none validates."""
        pool = self.records["training"] + self.records["validation"]
        if fold is None:
            return list(pool), []
        if not 0 <= fold < max(self.num_folds, 1):
            raise ConfigError(self.path, f"fold {fold} does not exist; this data list has {self.num_folds} folds")
        return [c for c in pool if c.fold != fold], [c for c in pool if c.fold == fold]


def _resolve_inside(data_root: Path, relative: object, where: Path, what: str) -> Path:
    if not isinstance(relative, str) or not relative:
        raise ConfigError(where, f"{what}: expected a path string, got {relative!r}")
    posix = PurePosixPath(relative)
    if posix.is_absolute() or ".." in posix.parts:
        raise ConfigError(where, f"{what}: path {relative!r} escapes the data root")
    return data_root / Path(*posix.parts)


def _check_convention(name: object, source: Path, where: str, task: Task) -> str:
    if not isinstance(name, str):
        raise ConfigError(source, f"{where}label_convention must be a name, got {name!r}")
    if name not in task.labels:
        raise ConfigError(source, f"{where}unknown label convention {name!r}; task {task.name} reads {', '.join(task.conventions)}")
    return name


def _check_layout(name: object, source: Path, where: str) -> str:
    if name not in LAYOUTS:
        raise ConfigError(source, f"{where}unknown layout {name!r}; choose one of {', '.join(LAYOUTS)}")
    return str(name)


def _stored_task(payload: dict, source: Path) -> Task:
    """The task a data list's JSON object holds (:data:`DEFAULT_TASK` when it names none)."""
    if "task" not in payload:
        return DEFAULT_TASK
    return task_from_dict(payload["task"], source)


def datalist_task(path: str | os.PathLike[str]) -> dict:
    """The task mapping a data list stores (:meth:`pipeline.tasks.task.Task.to_dict`), or the default task's.

    Raises:
        ConfigError: naming the file, if it cannot be read or its task is malformed.
    """
    return load_datalist(path).task.to_dict()


def load_datalist(path: str | Path) -> Datalist:
    """Read and check a data list; any problem is a one-line :class:`ConfigError` naming the file."""
    source = Path(path)
    try:
        raw_bytes = source.read_bytes()
    except OSError as err:
        raise ConfigError(source, f"cannot read data list: {err.strerror or err}") from err
    try:
        payload = json.loads(raw_bytes)
    except json.JSONDecodeError as err:
        raise ConfigError(source, f"not valid JSON ({err.msg} at line {err.lineno})") from err
    if not isinstance(payload, dict):
        raise ConfigError(source, "a data list must be a JSON object")
    missing = [key for key in _REQUIRED_KEYS if key not in payload]
    if missing:
        raise ConfigError(source, f"data list is missing key(s): {', '.join(missing)}")
    unknown = [key for key, value in payload.items() if isinstance(value, list) and key not in SPLITS and key not in _SETTING_KEYS]
    if unknown:
        raise ConfigError(source, f"unknown split(s) {', '.join(unknown)}; a data list holds {', '.join(SPLITS)}")
    task = _stored_task(payload, source)
    channels = list(task.channels)
    modalities = payload.get("modalities", channels)
    if modalities != channels:
        raise ConfigError(source, f"modalities must be {channels} (task {task.name}'s channels, in order), got {modalities}")
    convention = _check_convention(payload["label_convention"], source, "", task)
    if not isinstance(payload["data_root"], str) or not payload["data_root"]:
        raise ConfigError(source, f"data_root must be a path string, got {payload['data_root']!r}")
    try:
        num_folds = int(payload.get("num_folds", 1) or 1)
    except (TypeError, ValueError):
        raise ConfigError(source, f"num_folds must be an integer, got {payload.get('num_folds')!r}") from None
    data_root = Path(payload["data_root"])
    if not data_root.is_absolute():
        data_root = (source.resolve().parent / data_root).resolve()

    records: dict[str, tuple[CaseRecord, ...]] = {}
    seen: dict[str, str] = {}
    for split in SPLITS:
        entries = payload.get(split, [])
        if not isinstance(entries, list):
            raise ConfigError(source, f"{split!r} must be a list")
        parsed = []
        for index, entry in enumerate(entries):
            where = f"{split}[{index}]"
            if not isinstance(entry, dict) or "case_id" not in entry or "image" not in entry:
                raise ConfigError(source, f"{where}: each entry needs 'case_id' and 'image'")
            case_id = entry["case_id"]
            if not isinstance(case_id, str) or not _SAFE_CASE_ID.match(case_id):
                raise ConfigError(source, f"{where}: case id {case_id!r} is not a safe file name")
            if case_id in seen:
                raise ConfigError(source, f"case {case_id} appears twice ({seen[case_id]} and {split})")
            seen[case_id] = split
            if split != "unlabelled" and "label" not in entry:
                raise ConfigError(source, f"{where} ({case_id}): missing 'label' (cases without one belong in 'unlabelled')")
            images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
            channel_indices = entry.get("channel_indices")
            expected = 1 if channel_indices is not None else len(channels)
            if len(images) != expected:
                raise ConfigError(source, f"{where} ({case_id}): expected {expected} image path(s), got {len(images)}")
            if channel_indices is not None and (
                not isinstance(channel_indices, list)
                or len(channel_indices) != len(channels)
                or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in channel_indices)
            ):
                raise ConfigError(source, f"{where} ({case_id}): channel_indices must be {len(channels)} channel numbers, got {channel_indices!r}")
            fold = entry.get("fold")
            if fold is not None and (not isinstance(fold, int) or isinstance(fold, bool)):
                raise ConfigError(source, f"{where} ({case_id}): fold must be an integer, got {fold!r}")
            label = entry.get("label")
            has_label = split != "unlabelled" or label is not None
            parsed.append(
                CaseRecord(
                    case_id=case_id,
                    images=tuple(_resolve_inside(data_root, p, source, f"{where} ({case_id}) image") for p in images),
                    label=_resolve_inside(data_root, label, source, f"{where} ({case_id}) label") if has_label else None,
                    split=split,
                    fold=fold,
                    channel_indices=tuple(channel_indices) if channel_indices is not None else None,
                    label_convention=_check_convention(entry["label_convention"], source, f"{where} ({case_id}): ", task)
                    if "label_convention" in entry
                    else convention,
                    channels=task.channels,
                    layout=_check_layout(entry.get("layout", NIFTI), source, f"{where} ({case_id}): "),
                )
            )
        records[split] = tuple(parsed)
    return Datalist(
        path=source,
        data_root=data_root,
        label_convention=convention,
        records=records,
        sha256=hashlib.sha256(raw_bytes).hexdigest(),
        num_folds=num_folds,
        name=str(payload.get("name", "")),
        task=task,
    )


def assign_folds(case_ids: list[str], folds: int, test_fraction: float, seed: int) -> dict[str, int]:
    """Give each labelled case a fold (``-1`` = test), reproducibly.

    Args:
        case_ids: the labelled cases (any order: they are sorted first).
        folds: the number of cross-validation folds; fewer are used when there are fewer cases.
        test_fraction: share of cases held out, rounded half up; at least one case stays out of the test set.
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        Fold by case id.
    """
    ordered = sorted(case_ids)
    shuffled = [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]
    n_test = min(math.floor(test_fraction * len(ordered) + 0.5), max(len(ordered) - 1, 0))
    n_folds = max(1, min(folds, len(ordered) - n_test))
    assignment = {case_id: -1 for case_id in shuffled[:n_test]}
    assignment.update({case_id: index % n_folds for index, case_id in enumerate(shuffled[n_test:])})
    return assignment


def _stored_data_root(data_root: Path, out: Path) -> str:
    """``data_root`` relative to the JSON's folder when it lies inside that folder's parent, else absolute."""
    json_folder = out.resolve().parent
    if data_root.is_relative_to(json_folder.parent):
        return Path(os.path.relpath(data_root, json_folder)).as_posix()
    return data_root.as_posix()


def build_datalist(
    data_root: Path,
    out: Path,
    folds: int = 5,
    test_fraction: float = 0.2,
    seed: int = 0,
    skip_bad: bool = False,
    allow_resection_cavity: bool = False,
    progress: bool = True,
    workers: int = 1,
    task: Task | str | os.PathLike[str] | None = None,
    channels: Sequence[str] | None = None,
) -> dict:
    """Discover and validate every case under ``data_root`` for a task and write its data list to ``out``.

    Nothing is written unless every case passes validation, or ``skip_bad`` is set (bad cases
    are then logged as warnings and left out). Warnings are logged on ``pipeline.datasets.datalist`` and
    ``pipeline.datasets`` loggers as ``warning: <path>: <reason>``.

    Args:
        data_root: the release folder (any layout :func:`pipeline.datasets.discover` knows).
        out: the JSON file to write (atomically).
        folds: cross-validation folds over the non-test labelled cases (fewer if there are fewer cases).
        test_fraction: share of labelled cases held out as the test set, in [0, 1).
        seed: seed of the shuffle.
        skip_bad: leave bad cases out instead of failing.
        allow_resection_cavity: accept the BraTS 2024 resection cavity label (mapped to background on read).
        progress: show a progress bar while validating.
        workers: processes validating cases in parallel.
        task: the task (a :class:`~pipeline.tasks.task.Task`, a built-in name or a task file; default:
            the 2D layout's own task, ``kaggle-lgg`` or ``image-mask-2d[-rgb]``
            (:func:`pipeline.datasets.layout_task`), else the BraTS glioma task): each case needs the files of its channels and labels its
            conventions give its classes; the list stores it.
        channels: a subset of the task's channels to read (``["flair"]``), in this order.

    Returns:
        The data list as written.

    Raises:
        ConfigError: for a bad option.
        InputError: if the data root holds no usable case, or (without ``skip_bad``) any case is
            bad; the message's first line names the first bad file, the following lines list every
            problem.
    """
    if folds < 1:
        raise ConfigError("--folds", f"needs at least 1 fold, got {folds}")
    if not 0 <= test_fraction < 1:
        raise ConfigError("--test-fraction", f"must be in [0, 1), got {test_fraction}")
    if workers < 1:
        raise ConfigError("--workers", f"needs at least 1 worker, got {workers}")
    task = resolve_task(task if task is not None else layout_task(data_root), channels)
    out = Path(out)
    dataset = discover(data_root, task)
    root = Path(data_root).resolve()
    for line in dataset.warnings:
        logger.warning("warning: %s", line)

    problems = validate_cases(dataset.records, allow_resection_cavity=allow_resection_cavity, workers=workers, progress=progress, task=task)
    for case_id, lines in dataset.problems.items():
        problems[case_id] = lines + problems.get(case_id, [])
    bad = [case_id for case_id in sorted(problems) if problems[case_id]]
    if bad and not skip_bad:
        lines = [line for case_id in bad for line in problems[case_id]]
        summary = (
            f"{len(lines)} problem(s) in {len(bad)} of {len(dataset.records)} case(s); nothing was written "
            "(--skip-bad leaves bad cases out)"
        )
        where, first = lines[0].split(": ", 1)
        raise InputError(where, "\n".join([first, *lines[1:], summary]))
    for case_id in bad:
        for line in problems[case_id]:
            logger.warning("warning: %s (case %s left out)", line, case_id)
    records = [record for record in dataset.records if not problems.get(record.case_id)]
    if not records:
        raise InputError(data_root, f"no usable case left: all {len(dataset.records)} case(s) are bad")

    labelled = [record.case_id for record in records if record.label is not None]
    assignment = assign_folds(labelled, folds, test_fraction, seed)
    n_folds = len({fold for fold in assignment.values() if fold >= 0})
    if labelled and n_folds < folds:
        logger.warning(
            "warning: %s: only %d labelled case(s) outside the test set, so %d fold(s) instead of %d", root, n_folds, n_folds, folds
        )
    split_of = {case_id: "test" if fold < 0 else "validation" if fold == 0 else "training" for case_id, fold in assignment.items()}
    convention = dataset.label_convention
    if convention not in task.labels:  # the cases of that convention were bad and left out
        kept = Counter(record.label_convention for record in records)
        convention = min(kept, key=lambda name: (-kept[name], name))
    payload: dict = {
        "name": out.name.removesuffix(".json"),
        "release": dataset.release,
        "label_convention": convention,
        "data_root": _stored_data_root(root, out),
        "task": task.to_dict(),
        "modalities": list(task.channels),
        "num_folds": n_folds,
        "seed": seed,
        "test_fraction": test_fraction,
        "training": [],
        "validation": [],
        "test": [],
        "unlabelled": [],
    }
    for record in records:  # sorted by case id
        if record.label is None:
            split, placed = "unlabelled", dataclasses.replace(record, split="unlabelled", fold=None)
        else:
            split = split_of[record.case_id]
            placed = dataclasses.replace(record, split=split, fold=assignment[record.case_id])
        payload[split].append(placed.to_entry(root, default_convention=convention))
    write_json(out, payload)
    return payload
