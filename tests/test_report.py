"""Reports: the per-patient CSV, its summary, plots, training curves and radiological overlays."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.labels import ED, ET, NEC
from pipeline.metrics import case_metrics
from pipeline.report import (
    REGION_COLOURS,
    figure_rgb,
    most_tumour_slices,
    overlay_figure,
    plot_training_curves,
    radiological_slice,
    read_training_logs,
    summarise,
    summary_table,
    write_overlay,
    write_report,
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


def test_radiological_display_puts_patient_right_on_the_left():
    # RAS-ordered (Z, X, Y) volume, a marker at high X (patient right), high Y (anterior), high Z (superior)
    volume = np.zeros((5, 6, 7))
    volume[4, 5, 6] = 1
    axial, aspect = radiological_slice(volume, "axial", 4, (1.0, 2.0, 3.0))
    rows, columns = np.nonzero(axial)
    assert axial.shape == (7, 6) and aspect == 2.0
    assert columns[0] == 0  # patient right -> left edge
    assert rows[0] == 6  # anterior -> top with origin="lower"
    coronal, _ = radiological_slice(volume, "coronal", 6, (1.0, 2.0, 3.0))
    assert np.argwhere(coronal).tolist() == [[4, 0]]  # superior up, right on the left
    sagittal, aspect = radiological_slice(volume, "sagittal", 5, (1.0, 2.0, 3.0))
    assert np.argwhere(sagittal).tolist() == [[4, 0]] and aspect == 1.5  # anterior on the left


def test_most_tumour_slices():
    mask = np.zeros((6, 7, 8), bool)
    mask[2, 3, 1:6] = True
    mask[4, 3, 1] = True
    assert most_tumour_slices(mask) == {"axial": 2, "coronal": 1, "sagittal": 3}
    assert most_tumour_slices(np.zeros((6, 7, 8), bool)) == {"axial": 3, "coronal": 4, "sagittal": 3}


def test_write_overlay(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(12, 4, 16, 18)).astype(np.float32)
    truth = np.zeros((12, 16, 18), np.uint8)
    truth[4:9, 5:11, 6:12] = ED
    truth[5:8, 6:9, 7:10] = ET
    prediction = np.roll(truth, 1, axis=1)
    out = write_overlay(tmp_path / "overlays" / "case.png", image, prediction, truth, (1.0, 1.0, 2.5), title="case")
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 10_000
    no_truth = write_overlay(tmp_path / "overlays" / "unlabelled.png", image, prediction, None, (1.0, 1.0, 2.5))
    assert no_truth.is_file()


def _overlay_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(12, 4, 16, 18)).astype(np.float32)
    truth = np.zeros((12, 16, 18), np.uint8)
    truth[4:9, 5:11, 6:12] = ED
    truth[5:8, 6:9, 7:10] = ET
    truth[6:7, 7:8, 8:9] = NEC
    return image, np.roll(truth, 1, axis=1), truth


def test_overlay_figure_as_pixels():
    image, prediction, truth = _overlay_case()
    rgb = figure_rgb(overlay_figure(image, prediction, truth, (1.0, 1.0, 2.5), title="case"))
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.shape[:2] == (8 * 72, 12 * 72)  # 2 rows x 3 planes of 4-inch panels at 72 dpi
    pixels = rgb.reshape(-1, 3).astype(int)
    for region, colour in REGION_COLOURS.items():  # every region drawn (lines and legend) in its report colour
        assert (np.abs(pixels - np.array(colour) * 255).max(axis=1) < 80).any(), region
    assert np.array_equal(rgb, figure_rgb(overlay_figure(image, prediction, truth, (1.0, 1.0, 2.5), title="case")))
