"""Paired per-patient comparison of two cross-validation records on the same patients.

Two recipes scored on the same folds differ by less than the spread between patients, so a
difference of means alone says little. This prints, per structure, both means, the mean of the
per-patient differences (candidate - reference) with its standard error, and on how many patients
the candidate scored higher: the figures docs/results.md quotes for each recipe change.

Each record is a :mod:`benchmarks.real_cv` result or an :mod:`benchmarks.inference_cv` re-scoring
(``.json``); ``--arm`` and ``--reference-arm`` pick the arm of each (default: ``pipeline``, or the
record's only arm). Patients are matched by case id; a patient missing from either side is an
error, so that two different cohorts are never compared.

    python -m benchmarks.compare_cv benchmarks/results/real_cv-<...>-<candidate>.json benchmarks/results/real_cv-<...>-<reference>.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from benchmarks.cv_scoring import STRUCTURES
from pipeline.core.errors import PipelineError

__all__ = ["COMPARED", "record_rows", "paired_differences", "comparison_markdown", "main"]

#: The per-patient columns compared: Dice of every structure, then the lesion-wise Dice of the regions.
COMPARED: tuple[str, ...] = (*(f"dice_{s}" for s in STRUCTURES), *(f"lesion_dice_{s}" for s in ("WT", "TC", "ET")))


def record_rows(path: Path, arm: str | None = None) -> pd.DataFrame:
    """The rows of one arm of a recorded result, indexed by case id.

    Args:
        path: a ``real_cv`` or ``inference_cv`` ``.json`` result.
        arm: the arm to take; ``None``: ``pipeline`` when present, else the record's only arm.
    """
    try:
        rows = pd.DataFrame(json.loads(path.read_text())["rows"])
    except (OSError, ValueError, KeyError) as error:
        raise PipelineError(path, f"not a cross-validation result ({error})") from error
    arms = list(dict.fromkeys(rows["arm"]))
    if arm is None:
        if "pipeline" not in arms and len(arms) != 1:
            raise PipelineError(path, f"several arms ({', '.join(arms)}); choose one")
        arm = "pipeline" if "pipeline" in arms else arms[0]
    if arm not in arms:
        raise PipelineError(path, f"no arm {arm!r}; it has {', '.join(arms)}")
    return rows[rows["arm"] == arm].set_index("case_id")


def paired_differences(candidate: pd.DataFrame, reference: pd.DataFrame, columns: Sequence[str] = COMPARED) -> pd.DataFrame:
    """Per column: both means, the mean per-patient difference, its standard error, and the patients better / compared.

    NaN cells (a structure a patient does not have, e.g. lesion-wise scores of an absent region) leave
    that patient out of that column only.
    """
    if set(candidate.index) != set(reference.index):
        missing = sorted(set(candidate.index) ^ set(reference.index))
        raise PipelineError("patients", f"the records hold different patients: {', '.join(missing)}")
    summary = {}
    for column in columns:
        pair = pd.DataFrame({"candidate": candidate[column], "reference": reference.loc[candidate.index, column]}).dropna()
        difference = pair["candidate"] - pair["reference"]
        summary[column] = {
            "candidate": pair["candidate"].mean(),
            "reference": pair["reference"].mean(),
            "difference": difference.mean(),
            "standard_error": difference.std(ddof=1) / math.sqrt(len(difference)) if len(difference) > 1 else float("nan"),
            "better": int((difference > 0).sum()),
            "patients": len(difference),
        }
    return pd.DataFrame(summary).T


def comparison_markdown(summary: pd.DataFrame, candidate: str, reference: str) -> str:
    """The comparison as a markdown table, one row per compared column."""
    lines = [
        f"candidate: {candidate}  \nreference: {reference}",
        "",
        "| score | candidate | reference | paired difference (mean +/- s.e.) | candidate better |",
        "|---|---|---|---|---|",
    ]
    for column, row in summary.iterrows():
        lines.append(
            f"| {column} | {row['candidate']:.3f} | {row['reference']:.3f} | {row['difference']:+.3f} +/- {row['standard_error']:.3f} "
            f"| {int(row['better'])} of {int(row['patients'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidate", type=Path, help="result .json of the recipe under test")
    parser.add_argument("reference", type=Path, help="result .json of the recipe it is compared with (same patients)")
    parser.add_argument("--arm", default=None, help="arm of the candidate (default: pipeline, or its only arm)")
    parser.add_argument("--reference-arm", default=None, help="arm of the reference (default: pipeline, or its only arm)")
    args = parser.parse_args(argv)
    try:
        summary = paired_differences(record_rows(args.candidate, args.arm), record_rows(args.reference, args.reference_arm))
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(comparison_markdown(summary, args.candidate.name, args.reference.name), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
