"""Label confusion of the real-data cross-validation: for each true internal label, the voxels predicted as each label.

Dice per structure says how much of the necrotic core a model finds, not where the rest goes;
the confusion table does: its rows are the true internal labels (background, NEC, ED, ET), its
columns the predicted ones, each cell a voxel count over every held-out patient of an arm, with
the row percentages beside it (how much of the true NEC is predicted as ED, background or ET).
Per patient, the shares of the true NEC predicted as NEC and as ED show which patients drive it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.datasets.records import CaseRecord
from pipeline.core.errors import InputError
from pipeline.tasks.labels import BACKGROUND, SUBREGIONS

__all__ = ["LABELS", "NEC_SHARES", "label_confusion", "case_confusion", "nec_shares", "arm_confusions", "confusion_markdown"]

#: Internal label names by value (row and column order of a confusion table).
LABELS: tuple[str, ...] = tuple(name for name, _ in sorted({"background": BACKGROUND, **SUBREGIONS}.items(), key=lambda item: item[1]))

#: Per-patient row keys: the share of the true NEC voxels predicted as NEC and as ED.
NEC_SHARES: tuple[str, ...] = ("nec_as_NEC", "nec_as_ED")


def label_confusion(predicted: np.ndarray, truth: np.ndarray, labels: int = len(LABELS)) -> np.ndarray:
    """Voxel counts of every (true label, predicted label) pair: ``counts[t, p]`` voxels are ``t`` in ``truth`` and ``p`` in ``predicted``.

    Written with ``np.bincount`` over the pair index ``t * labels + p``: one pass over the
    volume, where ``sklearn.metrics.confusion_matrix`` (not a dependency of the project) builds
    a sparse matrix first, and MONAI's ``get_confusion_matrix`` gives per-class binary counts
    (TP, FP, TN, FN), not which other class a voxel went to.

    Args:
        predicted: internal labels (0 to ``labels - 1``) of the prediction.
        truth: internal labels of the ground truth, the same shape.
        labels: number of labels (rows and columns).

    Returns:
        An int64 array of shape ``(labels, labels)``; rows are true labels, columns predicted.

    Raises:
        ValueError: the shapes differ or a value is outside ``0 .. labels - 1``.
    """
    if predicted.shape != truth.shape:
        raise ValueError(f"prediction shape {predicted.shape} differs from the ground truth's {truth.shape}")
    pairs = truth.astype(np.int64).ravel() * labels + predicted.astype(np.int64).ravel()
    if pairs.size and (min(truth.min(), predicted.min()) < 0 or max(truth.max(), predicted.max()) >= labels):
        raise ValueError(f"labels outside 0..{labels - 1}")
    return np.bincount(pairs, minlength=labels * labels).reshape(labels, labels)


def case_confusion(seg_path: str | Path, record: CaseRecord) -> np.ndarray:
    """:func:`label_confusion` of a segmentation file written in the case's label values against the case's ground truth (both read as internal labels)."""
    from pipeline.evaluation.evaluate import read_internal_labels

    assert record.label is not None
    truth, _ = read_internal_labels(record.label, record.label_convention)
    predicted, _ = read_internal_labels(seg_path, record.label_convention)
    try:
        return label_confusion(predicted, truth)
    except ValueError as err:
        raise InputError(seg_path, f"cannot compare with {record.label}: {err}") from None


def nec_shares(confusion: np.ndarray | Sequence[Sequence[int]]) -> dict[str, float]:
    """The share of the true NEC voxels predicted as NEC and as ED (:data:`NEC_SHARES`; NaN without true NEC)."""
    row = np.asarray(confusion)[LABELS.index("NEC")]
    total = int(row.sum())
    return {key: (float(row[LABELS.index(key.rpartition("_")[2])] / total) if total else float("nan")) for key in NEC_SHARES}


def arm_confusions(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The confusion table of each arm, summed over its rows that hold one (``row["confusion"]``).

    Returns:
        Per arm, in order of appearance: ``patients`` (rows summed), ``labels`` (:data:`LABELS`),
        ``counts`` (true x predicted voxels) and ``row_percent`` (each count as a percentage of
        its true label's voxels; NaN for a label absent from the truth).
    """
    tables: dict[str, dict[str, Any]] = {}
    for arm in dict.fromkeys(row["arm"] for row in rows if row.get("confusion") is not None):
        chosen = [np.asarray(row["confusion"], dtype=np.int64) for row in rows if row["arm"] == arm and row.get("confusion") is not None]
        counts = np.sum(chosen, axis=0)
        totals = counts.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            percent = np.where(totals > 0, 100.0 * counts / totals, np.nan)
        tables[arm] = {"patients": len(chosen), "labels": list(LABELS), "counts": counts.tolist(), "row_percent": percent.tolist()}
    return tables


def _percent(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.1f} %"


def confusion_markdown(tables: Mapping[str, Mapping[str, Any]], rows: Sequence[Mapping[str, Any]] = ()) -> str:
    """Each arm's confusion table (count and row percentage per cell) and, from ``rows``, the per-patient NEC shares, as markdown."""
    lines = ["### Label confusion (voxels over the held-out patients; rows: true label, columns: predicted)"]
    for arm, table in tables.items():
        labels = table["labels"]
        lines += ["", f"**{arm}** ({table['patients']} patients)", ""]
        lines += ["| true \\ predicted | " + " | ".join(labels) + " | true voxels |", "|" + "---|" * (len(labels) + 2)]
        for name, counts, percents in zip(labels, table["counts"], table["row_percent"]):
            cells = [f"{count:,} ({_percent(percent)})" for count, percent in zip(counts, percents)]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {sum(counts):,} |")
    chosen = [row for row in rows if row.get("confusion") is not None]
    if chosen:
        lines += ["", "### True NEC per patient: share predicted as NEC and as ED", "", "| fold | case | arm | true NEC voxels | as NEC | as ED |", "|---|---|---|---|---|---|"]
        for row in sorted(chosen, key=lambda r: (r["fold"], r["case_id"], r["arm"] != "pipeline", r["arm"])):
            shares = nec_shares(row["confusion"])
            nec_voxels = sum(row["confusion"][LABELS.index("NEC")])
            lines.append(f"| {row['fold']} | {row['case_id']} | {row['arm']} | {nec_voxels:,} | " + " | ".join(_percent(100 * shares[k]) for k in NEC_SHARES) + " |")
    return "\n".join(lines) + "\n"
