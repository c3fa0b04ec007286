"""The demo end to end in a tiny, fast mode: every stage, every output, the summary, and reuse on a rerun."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from pipeline.cli.main import main
from pipeline.demo import DEMO_CONFIG, configured_epochs, datalist_matches_cohort
from tiny_training import TINY_NETWORK_AND_BUDGET

#: A tiny network and budget: the orchestration is under test, not the Dice target.
TINY = list(TINY_NETWORK_AND_BUDGET)


def _demo(paths: dict[str, Path], *extra: str):
    args = ["demo", "--out", str(paths["out"]), "--data", str(paths["data"]), "--datalist", str(paths["datalist"]), "--cache", str(paths["cache"])]
    args += ["--cases", "8", "--size", "tiny", "--workers", "1", "--no-progress", *extra]
    for setting in TINY:
        args += ["--set", setting]
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def demo_paths(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("demo")
    shutil.copytree(tiny_cohort, root / "data" / "synthetic")  # the same cohort the demo would generate (seed 0)
    shutil.rmtree(root / "data" / "synthetic" / "BraTS2021_00007")  # one case left for the demo to generate
    return {"root": root, "out": root / "outputs" / "demo", "data": root / "data" / "synthetic", "datalist": root / "data_lists" / "synthetic.json", "cache": root / "cache" / "synthetic"}


@pytest.fixture(scope="module")
def first_run(demo_paths: dict[str, Path]):
    return _demo(demo_paths, "--epochs", "1")


@pytest.mark.slow
def test_demo_writes_every_output(demo_paths, first_run):
    assert first_run.exit_code == 0, first_run.output
    out, evaluation = demo_paths["out"], demo_paths["out"] / "evaluation"
    assert (demo_paths["data"] / "BraTS2021_00007" / "BraTS2021_00007_seg.nii.gz").is_file()
    listing = json.loads(demo_paths["datalist"].read_text())
    test_cases = sorted(entry["case_id"] for entry in listing["test"])
    assert test_cases and json.loads((demo_paths["cache"] / "cache.json").read_text())["cases"]
    run = out / "run"
    for name in ("config.json", "provenance.json", "models/model.pt", "models/latest.pt", "logs/train.log"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (evaluation / "predictions").glob("*_seg.nii.gz")) == [f"{c}_seg.nii.gz" for c in test_cases]
    assert (evaluation / "predictions" / "brats_brats2017.ctbl").is_file()
    assert sorted(p.stem for p in (evaluation / "overlays").glob("*.png")) == test_cases
    for plot in ("dice_distribution", "dice_per_case", "training_curves"):
        assert (evaluation / "plots" / f"{plot}.png").stat().st_size > 1000, plot
    metrics = pd.read_csv(evaluation / "metrics.csv")
    assert sorted(metrics["case_id"]) == test_cases and "dice_WT" in metrics
    summary = json.loads((out / "demo.json").read_text())
    assert summary["test_cases"] == len(test_cases) and summary["epochs"] == 1
    assert summary["mean_dice"]["WT"] == pytest.approx(metrics["dice_WT"].mean(), abs=1e-5)
    assert set(summary["seconds"]) >= {"cohort", "datalist", "preprocess", "training", "evaluation", "total"}


@pytest.mark.slow
def test_demo_prints_stages_and_a_one_screen_summary(demo_paths, first_run):
    output = first_run.output
    for stage in ("[1/5] Synthetic cohort", "[2/5] Data list", "[3/5] Preprocessing", "[4/5] Training", "[5/5] Evaluating"):
        assert stage in output, stage
    summary = output[output.index("Demo finished") :]
    assert len(summary.splitlines()) <= 30
    for structure in ("WT", "TC", "ET"):
        assert f"\n  {structure} " in summary
    assert "whole-tumour Dice target 0.85" in summary and "3D Slicer" in summary
    assert str(demo_paths["out"] / "evaluation" / "predictions") in summary
    assert "_flair.nii.gz" in summary and ".ctbl" in summary


@pytest.mark.slow
def test_demo_rerun_reuses_and_resumes(demo_paths, first_run):
    assert first_run.exit_code == 0, first_run.output
    model = demo_paths["out"] / "run" / "models" / "model.pt"
    stamp = model.stat().st_mtime_ns
    again = _demo(demo_paths, "--epochs", "1")
    assert again.exit_code == 0, again.output
    assert json.loads((demo_paths["out"] / "demo.json").read_text())["reused"] == ["cohort", "datalist", "cache", "training", "evaluation"]
    assert model.stat().st_mtime_ns == stamp
    assert "kept the finished run" in again.output

    longer = _demo(demo_paths, "--epochs", "2")  # a bigger budget continues the run instead of starting over
    assert longer.exit_code == 0, longer.output
    assert "resuming the run" in longer.output
    latest = torch.load(demo_paths["out"] / "run" / "models" / "latest.pt", weights_only=True)
    assert latest["epoch"] == 2
    assert "evaluation" not in json.loads((demo_paths["out"] / "demo.json").read_text())["reused"]


def test_datalist_is_rebuilt_for_another_cohort(tiny_datalist, tiny_cohort, tmp_path):
    from pipeline.datasets.datalist import load_datalist

    cases = [record.case_id for split in ("training", "validation", "test") for record in load_datalist(tiny_datalist).cases(split)]
    assert datalist_matches_cohort(tiny_datalist, tiny_cohort, cases)
    assert not datalist_matches_cohort(tiny_datalist, tiny_cohort, cases[:-1])
    assert not datalist_matches_cohort(tiny_datalist, tmp_path, cases)
    assert not datalist_matches_cohort(tmp_path / "missing.json", tiny_cohort, cases)


def test_demo_budget_comes_from_demo_yaml():
    import yaml

    budget = yaml.safe_load(DEMO_CONFIG.read_text())
    assert configured_epochs([DEMO_CONFIG], {}) == budget["epochs"]
    assert configured_epochs([DEMO_CONFIG], {"epochs": 3}) == 3
