"""Per-patient rows of the real-data cross-validation, their means per arm, and the markdown tables.

Both arms are scored by :func:`pipeline.evaluation.metrics.case_metrics` (lesion-wise included) on the
written segmentation read back on the input's grid; each row adds the number of connected
whole-tumour components of the prediction (26-connectivity), the count the lesion-wise scores
punish when it is above the true number of lesions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cc3d
import numpy as np

from benchmarks.label_confusion import case_confusion, nec_shares
from pipeline.datasets.records import CaseRecord
from pipeline.evaluation.evaluate import read_internal_labels
from pipeline.evaluation.metrics import case_metrics

__all__ = ["STRUCTURES", "ROW_METRICS", "ARMS", "wt_components", "score_prediction", "case_row", "arm_means", "markdown_tables", "structure_table"]

#: The scored structures: the BraTS regions, then the sub-regions that are not one.
STRUCTURES: tuple[str, ...] = ("WT", "TC", "ET", "NEC", "ED")

#: The columns of a row, in table order.
ROW_METRICS: tuple[str, ...] = (
    *(f"dice_{s}" for s in STRUCTURES),
    *(f"hd95_{s}" for s in STRUCTURES),
    *(f"lesion_dice_{s}" for s in ("WT", "TC", "ET")),
    "precision_WT",
    "wt_components",
)

#: The two arms, the pipeline first: differences are pipeline - baseline.
ARMS: tuple[str, ...] = ("pipeline", "baseline")


def wt_components(seg_path: str | Path) -> int:
    """Connected components (26-connectivity) of the whole tumour (every nonzero label) of a segmentation file."""
    from pipeline.core.io import load_nifti

    mask = np.asarray(load_nifti(seg_path).dataobj) != 0
    return int(cc3d.connected_components(mask, connectivity=26, return_N=True)[1])


def score_prediction(seg_path: str | Path, record: CaseRecord) -> dict[str, float]:
    """:func:`pipeline.evaluation.metrics.case_metrics` (lesion-wise) of a segmentation file written in the case's label values against its ground truth."""
    assert record.label is not None
    truth, truth_image = read_internal_labels(record.label, record.label_convention)
    predicted, _ = read_internal_labels(seg_path, record.label_convention)
    spacing = tuple(float(z) for z in truth_image.header.get_zooms()[:3])
    return case_metrics(predicted, truth, spacing, lesion_wise=True)


def case_row(fold: int, case_id: str, arm: str, metrics: Mapping[str, Any], seg_path: str | Path, record: CaseRecord | None = None) -> dict[str, Any]:
    """One table row: the :data:`ROW_METRICS` of ``metrics`` (``case_metrics`` keys) and the prediction's WT components.

    With the case's ``record``, the row also holds the prediction's label confusion against the
    ground truth (``confusion``, true x predicted voxel counts) and the shares of the true NEC
    predicted as NEC and as ED (:mod:`benchmarks.label_confusion`).
    """
    row: dict[str, Any] = {"fold": int(fold), "case_id": case_id, "arm": arm}
    row.update({name: float(metrics[name]) for name in ROW_METRICS if name != "wt_components"})
    row["wt_components"] = wt_components(seg_path)
    if record is not None:
        confusion = case_confusion(seg_path, record)
        row["confusion"] = confusion.tolist()
        row.update(nec_shares(confusion))
    return row


#: The per-case uncertainty score set beside the pipeline's rows (``evaluate(..., uncertainty=True)``).
UNCERTAINTY_SCORE = "uncertainty_entropy_WT"


def uncertainty_rank_correlation(rows: Sequence[Mapping[str, Any]], structures: Sequence[str] = ("WT", "TC", "ET")) -> dict[str, float]:
    """Spearman's rank correlation of the pipeline's per-case uncertainty score with its per-case Dice, per structure.

    A clearly negative value means the cases the model is least sure of are the ones it gets
    wrong: the order in which a user should check predictions. ``nan`` with fewer than 3 cases.
    """
    from scipy.stats import spearmanr

    chosen = [row for row in rows if row["arm"] == "pipeline" and UNCERTAINTY_SCORE in row]
    if len(chosen) < 3:
        return {name: float("nan") for name in structures}
    scores = [row[UNCERTAINTY_SCORE] for row in chosen]
    return {name: float(spearmanr(scores, [row[f"dice_{name}"] for row in chosen]).statistic) for name in structures}


def _arms(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The arms of ``rows``: :data:`ARMS` first, then any other (another task's pipeline) in order of appearance."""
    seen = list(dict.fromkeys(row["arm"] for row in rows))
    return [arm for arm in ARMS if arm in seen] + [arm for arm in seen if arm not in ARMS]


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def arm_means(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean of every :data:`ROW_METRICS` column per arm (NaN cells, structures an arm does not score, left out), and ``pipeline - baseline`` when both are present."""
    means = {}
    for arm in _arms(rows):
        chosen = [row for row in rows if row["arm"] == arm]
        means[arm] = {name: _mean([float(row[name]) for row in chosen]) for name in ROW_METRICS}
    if all(arm in means for arm in ARMS):
        means["pipeline - baseline"] = {name: means["pipeline"][name] - means["baseline"][name] for name in ROW_METRICS}
    return means


def _cell(value: float, name: str) -> str:
    if math.isnan(value):
        return "nan"
    if name == "wt_components":
        return f"{value:.1f}" if value != int(value) else str(int(value))
    return f"{value:.1f}" if name.startswith("hd95") else f"{value:.3f}"


def markdown_tables(rows: Sequence[Mapping[str, Any]], means: Mapping[str, Mapping[str, float]]) -> str:
    """The per-patient rows, the means per arm (with the difference) and the means per structure as three markdown tables."""
    header = " | ".join(ROW_METRICS) + " |"
    rule = "|" + "---|" * (len(ROW_METRICS) + 3)
    lines = ["### Per patient", "", "| fold | case | arm | " + header, rule]
    order = _arms(rows)
    for row in sorted(rows, key=lambda r: (r["fold"], r["case_id"], order.index(r["arm"]))):
        lines.append(f"| {row['fold']} | {row['case_id']} | {row['arm']} | " + " | ".join(_cell(row[n], n) for n in ROW_METRICS) + " |")
    lines += ["", "### Means over patients", "", "| arm | patients | " + header, rule[:-4]]
    for arm, values in means.items():
        patients = sum(1 for row in rows if row["arm"] == arm) if arm in order else ""
        lines.append(f"| {arm} | {patients} | " + " | ".join(_cell(values[n], n) for n in ROW_METRICS) + " |")
    return "\n".join(lines) + "\n\n" + structure_table(means)


def structure_table(means: Mapping[str, Mapping[str, float]]) -> str:
    """The means per arm turned round: one row per structure of :data:`STRUCTURES`, Dice, HD95 and lesion-wise Dice per arm ("-": not scored)."""
    kinds = (("Dice", "dice"), ("HD95 mm", "hd95"), ("lesion-wise Dice", "lesion_dice"))
    header = [f"{arm} {title}" for title, _ in kinds for arm in means]
    lines = ["### Means per structure", "", "| structure | " + " | ".join(header) + " |", "|" + "---|" * (len(header) + 1)]
    for structure in STRUCTURES:
        cells = [_cell(values[f"{kind}_{structure}"], f"{kind}_{structure}") if f"{kind}_{structure}" in values else "-" for _, kind in kinds for values in means.values()]
        lines.append(f"| {structure} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
