"""The 2D data sets' cross-validation benchmark on tiny written layouts: every held-out case scored once per arm, results written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from planar_cases import image_pairs, kaggle_root
from tiny_training import TINY_NETWORK_AND_BUDGET

from benchmarks.planar_cv import main

TINY = [item for setting in TINY_NETWORK_AND_BUDGET if not setting.startswith("samples_per_epoch") for item in ("--set", setting)]


@pytest.mark.parametrize("data", ["kaggle", "pairs"])
def test_every_case_is_held_out_once_per_arm_and_the_results_are_written(data, tmp_path, capsys):
    shared = tmp_path / "shared"
    if data == "kaggle":
        kaggle_root(shared / "lgg_kaggle_3m", [(f"TCGA_AB_{n:04d}_20000101", 3) for n in range(4)])
    else:
        image_pairs(shared / "png_pairs", names=("a", "b", "c", "d"), sizes=((16, 16), (20, 12), (10, 18), (12, 12)))
    args = ["--data", data, "--folds", "2", "--epochs", "1", "--samples-per-epoch", "8", "--shared-data", str(shared), "--work", str(tmp_path / "work"), "--results", str(tmp_path / "results"), "--baseline-cpu-seconds", "2", *TINY]
    assert main(args) == 0
    (result,) = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")]
    cases = ["a", "b", "c", "d"] if data == "pairs" else [f"TCGA_AB_{n:04d}_20000101" for n in range(4)]
    for arm in ("pipeline", "baseline"):
        assert sorted(row["case_id"] for row in result["rows"] if row["arm"] == arm) == cases and len(result["folds"]) == 2
        assert 0.0 <= result["means"][arm]["dice"] <= 1.0 and 0.0 <= result["means"][arm]["iou"] <= 1.0
    assert result["unit"] == ("image" if data == "pairs" else "patient") and result["mean_dice"] == result["means"]["pipeline"]["dice"]
    for fold in result["seconds_per_fold"]:  # the baseline trains for the CPU seconds it is given
        assert fold["baseline"]["steps"] >= 1 and fold["baseline"]["train_cpu_s"] >= 2 and fold["train_cpu_s"] > 0
    markdown = next((tmp_path / "results").glob("*.md")).read_text()
    assert ("Published: 0.82" in markdown) == (data == "kaggle") and "for 2 CPU seconds (not the pipeline's)" in markdown and "pipeline - baseline: Dice" in capsys.readouterr().out


def test_an_absent_data_set_is_skipped(tmp_path, capsys):
    assert main(["--data", "kaggle", "--shared-data", str(tmp_path), "--results", str(tmp_path / "results")]) == 0
    assert capsys.readouterr().out.startswith("skipped:") and not (tmp_path / "results").exists()
