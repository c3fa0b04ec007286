"""Patient-level cross-validation folds over one data list, and the per-fold data lists that hold each fold's patients out.

The cohort's data list is written once (every labelled case in ``training``/``validation``);
for fold ``k`` :func:`write_fold_datalist` rewrites which cases are ``training``, ``validation``
and ``test`` in the same JSON format, so ``pipeline train --fold 0`` validates on the chosen
validation patient(s) and ``pipeline evaluate --split test`` scores only the held-out ones.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from pipeline.datasets.datalist import assign_folds, load_datalist
from pipeline.core.errors import ConfigError
from pipeline.core.io import write_json

__all__ = ["Fold", "fold_run_folder", "make_folds", "result_run_folder", "write_fold_datalist"]

#: Fold numbers written into a per-fold data list: test (held out), validation, training.
TEST_FOLD, VALIDATION_FOLD, TRAINING_FOLD = -1, 0, 1


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold: who is held out, who validates, who trains.

    Attributes:
        index: the fold number (0-based).
        test: the held-out patients, scored and never used for training or checkpoint choice.
        validation: the patients the pipeline validates on each epoch (none: it trains on them too).
        training: every other patient.
    """

    index: int
    test: tuple[str, ...]
    validation: tuple[str, ...]
    training: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        """The fold as plain JSON types."""
        return {"fold": self.index, "test": list(self.test), "validation": list(self.validation), "training": list(self.training)}


def make_folds(case_ids: list[str], folds: int, val_cases: int = 1, seed: int = 0) -> list[Fold]:
    """Split patients into ``folds`` patient-level folds (seeded, stable) and choose each fold's validation patients.

    The patients are dealt into folds by :func:`pipeline.datasets.datalist.assign_folds` (the data list's
    own seeded split, with nothing held out); fold ``k`` holds out its patients, and its
    validation patients are the first ``val_cases`` of the following folds, so each fold
    validates on a different patient.

    Args:
        case_ids: the labelled patients.
        folds: number of folds, from 2 to the number of patients (that many = leave-one-out).
        val_cases: validation patients per fold; 0: none, every patient not held out trains
            (``pipeline train --fold none``: the final weights are kept, nothing is chosen by validation).
        seed: seed of the shuffle.

    Raises:
        ConfigError: for a fold count or validation count the cohort cannot give.
    """
    n = len(case_ids)
    if not 2 <= folds <= n:
        raise ConfigError("--folds", f"needs 2 to {n} folds for {n} patients, got {folds}")
    most = n - math.ceil(n / folds) - 1  # at least one patient must still train
    if not 0 <= val_cases <= most:
        raise ConfigError("--val-cases", f"needs 0 to {most} validation patient(s) with {folds} folds of {n} patients, got {val_cases}")
    assignment = assign_folds(case_ids, folds, 0.0, seed)
    members = [sorted(case for case, fold in assignment.items() if fold == k) for k in range(folds)]
    result = []
    for k in range(folds):
        rest = [case for j in range(1, folds) for case in members[(k + j) % folds]]
        result.append(Fold(k, tuple(members[k]), tuple(sorted(rest[:val_cases])), tuple(sorted(rest[val_cases:]))))
    return result


def write_fold_datalist(datalist: str | Path, fold: Fold, out: str | Path) -> Path:
    """Write ``datalist`` with its cases moved into ``fold``'s test, validation and training lists.

    The data root is written as an absolute path, so the new file may live anywhere. Validation
    cases get fold 0 (train with ``--fold 0``, or ``--fold none`` when the fold has none), training
    cases fold 1, held-out cases -1.

    Raises:
        ConfigError: a patient of the fold is not a labelled case of ``datalist``.
    """
    source = Path(datalist)
    payload = json.loads(source.read_text())
    entries = {entry["case_id"]: entry for split in ("training", "validation", "test") for entry in payload.get(split, [])}
    unplaced = sorted(set(entries) - {*fold.test, *fold.validation, *fold.training})
    if unplaced:
        raise ConfigError(source, f"case {unplaced[0]} is in no list of fold {fold.index}")
    placed = {"test": (fold.test, TEST_FOLD), "validation": (fold.validation, VALIDATION_FOLD), "training": (fold.training, TRAINING_FOLD)}
    for split, (cases, number) in placed.items():
        missing = [case for case in cases if case not in entries]
        if missing:
            raise ConfigError(source, f"case {missing[0]} of fold {fold.index} is not a labelled case of this data list")
        payload[split] = [{**entries[case], "fold": number} for case in cases]
    payload["data_root"] = load_datalist(source).data_root.as_posix()
    payload["name"] = f"{payload.get('name', source.stem)}_fold{fold.index}"
    payload["num_folds"] = 2
    payload["test_fraction"] = round(len(fold.test) / len(entries), 4)
    write_json(out, payload)
    return Path(out)


def result_run_folder(result: dict) -> Path:
    """The folder of a ``benchmarks.real_cv`` result's fold runs (``WORK/runs/<start>-<label>``, as the run named it)."""
    stamp = result["started"][:19].replace("-", "").replace(":", "")
    return Path(result["data"]["work"]) / "runs" / f"{stamp}-{result['label']}"


def fold_run_folder(result: dict, fold: int) -> Path:
    """Fold ``fold``'s folder (``datalist.json``, ``pipeline/``, ``pipeline_eval/``) of a result, or of the part of a merged result that ran it."""
    for part in result.get("parts", ()):
        if fold in part["folds"]:
            return result_run_folder({"started": part["started"], "label": part["label"], "data": result["data"]}) / f"fold{fold}"
    return result_run_folder(result) / f"fold{fold}"
