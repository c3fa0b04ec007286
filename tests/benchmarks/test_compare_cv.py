"""Paired comparison of two cross-validation records (benchmarks.compare_cv) on tiny hand-made records."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from benchmarks.compare_cv import COMPARED, main, paired_differences, record_rows
from pipeline.core.errors import PipelineError


def _row(case_id: str, arm: str, wt: float, tc: float) -> dict:
    row = {column: 0.5 for column in COMPARED}
    return {**row, "case_id": case_id, "arm": arm, "fold": 0, "dice_WT": wt, "dice_TC": tc, "lesion_dice_ET": float("nan")}


def _record(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps({"rows": rows}))
    return path


def test_differences_are_paired_by_patient_not_by_row_order(tmp_path: Path) -> None:
    candidate = _record(tmp_path / "a.json", [_row("p1", "pipeline", 0.9, 0.6), _row("p2", "pipeline", 0.7, 0.8), _row("p3", "pipeline", 0.8, 0.7)])
    reference = _record(
        tmp_path / "b.json",
        [_row("p3", "pipeline", 0.7, 0.7), _row("p1", "pipeline", 0.8, 0.7), _row("p2", "pipeline", 0.8, 0.6), _row("p1", "baseline", 0.1, 0.1)],
    )
    summary = paired_differences(record_rows(candidate), record_rows(reference))
    wt = summary.loc["dice_WT"]
    assert math.isclose(wt["difference"], (0.1 - 0.1 + 0.1) / 3) and wt["better"] == 2 and wt["patients"] == 3
    assert math.isclose(wt["standard_error"], statistics.stdev([0.1, -0.1, 0.1]) / math.sqrt(3))
    tc = summary.loc["dice_TC"]
    assert math.isclose(tc["difference"], (-0.1 + 0.2 + 0.0) / 3) and tc["better"] == 1
    assert summary.loc["lesion_dice_ET", "patients"] == 0  # NaN cells leave the patient out of that column


def test_an_arm_is_chosen_and_different_cohorts_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    both = _record(tmp_path / "both.json", [_row("p1", "pipeline", 0.9, 0.6), _row("p1", "baseline", 0.5, 0.5)])
    assert record_rows(both).loc["p1", "dice_WT"] == 0.9
    assert record_rows(both, "baseline").loc["p1", "dice_WT"] == 0.5
    other = _record(tmp_path / "other.json", [_row("p2", "best + bundle post", 0.9, 0.6)])
    assert list(record_rows(other).index) == ["p2"]  # the only arm
    with pytest.raises(PipelineError, match="different patients: p1, p2"):
        paired_differences(record_rows(both), record_rows(other))
    assert main([str(both), str(other)]) == 2 and "different patients" in capsys.readouterr().err
    assert main([str(both), str(both), "--reference-arm", "baseline"]) == 0
    table = capsys.readouterr().out
    assert "| dice_WT | 0.900 | 0.500 | +0.400 +/- nan | 1 of 1 |" in table
