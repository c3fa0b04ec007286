"""Patient-level folds: a validated data root -> a data list JSON (format: :mod:`pipeline.datalist`).

Splitting is seeded and stable: the labelled cases are sorted by id, shuffled with
``numpy.random.default_rng(seed)``, the first ``round(test_fraction * n)`` are held out as the
test set (fold -1) and the rest are dealt round-robin into folds; fold 0 is written as
``validation``, the other folds as ``training``. Cases without a segmentation go to
``unlabelled``. The same data root and seed always give a byte-identical file.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path

import numpy as np

from pipeline.datasets import discover, validate_cases
from pipeline.errors import ConfigError, InputError
from pipeline.io import write_json
from pipeline.modalities import MODALITIES

logger = logging.getLogger(__name__)


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
) -> dict:
    """Discover and validate every case under ``data_root`` and write its data list to ``out``.

    Nothing is written unless every case passes validation, or ``skip_bad`` is set (bad cases
    are then logged as warnings and left out). Warnings are logged on ``pipeline.splits`` and
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
    out = Path(out)
    dataset = discover(data_root)
    root = Path(data_root).resolve()
    for line in dataset.warnings:
        logger.warning("warning: %s", line)

    problems = validate_cases(dataset.records, allow_resection_cavity=allow_resection_cavity, workers=workers, progress=progress)
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
    payload: dict = {
        "name": out.name.removesuffix(".json"),
        "release": dataset.release,
        "label_convention": dataset.label_convention,
        "data_root": _stored_data_root(root, out),
        "modalities": list(MODALITIES),
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
        payload[split].append(placed.to_entry(root, default_convention=dataset.label_convention))
    write_json(out, payload)
    return payload
