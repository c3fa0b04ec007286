"""Reports: the per-patient CSV, its summary, plots and training curves (overlays: tests/visualize/test_overlays.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation.metrics import case_metrics
from pipeline.evaluation.report import (
    plot_training_curves,
    read_training_logs,
    summarise,
    summary_table,
    write_report,
)
from pipeline.tasks.labels import ED, ET, NEC
from pipeline.visualize.overlays import (
    figure_rgb,
    overlay_figure,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rows() -> list[dict]:
    truth = np.zeros((10, 10, 10), np.uint8)
    truth[2:8, 2:8, 2:8] = ED
    truth[3:6, 3:6, 3:6] = NEC
    truth[4:5, 4:5, 4:6] = ET
    shifted = np.roll(truth, 1, axis=0)
    return [
        {"case_id": "case_a", **case_metrics(truth, truth, (1, 1, 1))},
        {"case_id": "case_b", **case_metrics(shifted, truth, (1, 1, 1))},
        {"case_id": "case_c", **case_metrics(np.zeros_like(truth), truth, (1, 1, 1))},
    ]


def test_summary_statistics_by_hand():
    frame = pd.DataFrame({"case_id": ["a", "b", "c"], "dice_WT": [1.0, 0.5, 0.0]})
    summary = summarise(frame)
    assert summary["cases"] == 3
    assert summary["metrics"]["dice_WT"] == {"mean": 0.5, "median": 0.5, "std": pytest.approx(0.5), "min": 0.0, "max": 1.0}


def test_write_report_files(tmp_path):
    rows = _rows()
    summary = write_report(rows, tmp_path, extra_summary={"split": "test"})
    frame = pd.read_csv(tmp_path / "metrics.csv")
    assert frame["case_id"].tolist() == ["case_a", "case_b", "case_c"]
    assert frame.columns[0] == "case_id" and {"dice_WT", "hd95_ET", "sensitivity_NEC", "true_volume_ml_TC"} <= set(frame.columns)
    assert frame.loc[2, "dice_WT"] == 0.0 and frame.loc[2, "hd95_WT"] == pytest.approx(373.13)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["cases"] == 3 and written["split"] == "test"
    assert written["metrics"]["dice_WT"]["max"] == 1.0 and written["metrics"]["dice_WT"]["min"] == 0.0
    assert written["metrics"]["dice_WT"]["mean"] == pytest.approx(np.mean([r["dice_WT"] for r in rows]))
    assert summary["plots"] == {"dice_distribution": "plots/dice_distribution.png", "dice_per_case": "plots/dice_per_case.png"}
    for name in summary["plots"].values():
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC


def test_summary_table_lists_every_structure():
    table = summary_table(pd.DataFrame(_rows()))
    lines = table.splitlines()
    assert [line.split()[0] for line in lines[1:6]] == ["NEC", "ED", "ET", "WT", "TC"]
    assert lines[4].split()[1] == f"{np.mean([r['dice_WT'] for r in _rows()]):.3f}"
    assert "3 case(s)" in table


def test_training_curves_from_csv_and_tensorboard(tmp_path):
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    (run / "logs" / "metrics.csv").write_text("epoch,train_loss,val_mean_dice\n1,0.9,0.2\n2,0.7,0.4\n3,0.6,\n")
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run / "tensorboard"))
    for step, value in enumerate([1.0, 0.5, 0.25]):
        writer.add_scalar("train_loss", value, step)
    writer.close()
    series = read_training_logs(run)
    assert series["metrics/val_mean_dice"] == [(1.0, 0.2), (2.0, 0.4)]
    assert series["train_loss"] == [(0.0, 1.0), (1.0, 0.5), (2.0, 0.25)]
    out = plot_training_curves(run, tmp_path / "curves.png")
    assert out is not None and out.read_bytes()[:8] == PNG_MAGIC
    assert plot_training_curves(tmp_path / "empty", tmp_path / "none.png") is None
    summary = write_report(_rows(), tmp_path / "eval", run_dir=run)
    assert summary["plots"]["training_curves"] == "plots/training_curves.png"




def _has_colour(rgb: np.ndarray, colour: np.ndarray) -> bool:
    return bool((rgb.reshape(-1, 3) == colour.astype(np.uint8)).all(axis=1).any())



# ---- tasks ------------------------------------------------------------------------------------
def test_overlays_and_plots_of_a_one_channel_task(tmp_path):
    from pipeline.evaluation.report import region_colours, write_report
    from pipeline.tasks.task import resolve_task

    task = resolve_task("brats2024-post-treatment").with_channels(["flair"])
    image = np.random.default_rng(0).normal(size=(6, 1, 12, 12)).astype(np.float32)
    truth = np.zeros((6, 12, 12), np.uint8)
    truth[2:4, 3:8, 3:8] = task.class_value("SNFH")
    truth[2:4, 9:11, 9:11] = task.class_value("RC")
    rgb = figure_rgb(overlay_figure(image, truth, None, (1.0, 1.0, 1.0), title="case", task=task))
    assert _has_colour(rgb, np.array(task.colour("RC")))  # the legend shows every class in its colour
    assert region_colours(task)["WT"] == tuple(c / 255 for c in task.colour("SNFH"))
    rows = [{"case_id": f"c{i}", **case_metrics(truth, truth, (1.0, 1.0, 1.0), task=task)} for i in range(2)]
    summary = write_report(rows, tmp_path, task=task)
    assert set(summary["plots"]) == {"dice_distribution", "dice_per_case"} and summary["metrics"]["dice_RC"]["mean"] == 1.0
    assert [line.split()[0] for line in (tmp_path / "summary.txt").read_text().splitlines()[1:-1]] == list(task.structures)
