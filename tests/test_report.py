"""Reports: the per-patient CSV, its summary, plots, training curves and radiological overlays."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation.metrics import case_metrics
from pipeline.evaluation.report import (
    REGION_COLOURS,
    plot_training_curves,
    read_training_logs,
    summarise,
    summary_table,
    write_report,
)
from pipeline.inference.writers import LABEL_COLOURS
from pipeline.tasks.labels import ED, ET, NEC
from pipeline.visualize.overlays import (
    ERROR_ALPHA,
    ERROR_COLOURS,
    FALSE_NEGATIVE,
    FALSE_POSITIVE,
    LABEL_ALPHA,
    TRUE_POSITIVE,
    WRONG_CLASS,
    error_map,
    error_overlay_figure,
    figure_rgb,
    most_error_slices,
    most_tumour_slices,
    overlay_figure,
    paint,
    radiological_slice,
    write_overlay,
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


def _error_case() -> tuple[np.ndarray, np.ndarray]:
    """A cubic ED tumour; predicted with 6 false positives in axial slice 1, 16 false negatives in axial slice 6, ET for ED in slice 4."""
    truth = np.zeros((10, 12, 14), np.uint8)
    truth[3:8, 4:8, 4:8] = ED
    prediction = truth.copy()
    prediction[1, 0:3, 0:2] = ED  # false positives: axial 1, sagittal (X) 0-2, coronal (Y) 0-1
    prediction[6, 4:8, 4:8] = 0  # false negatives: axial 6, X and Y 4-7
    prediction[4, 4:8, 4:8] = ET  # wrong class: not an FP or FN error
    return truth, prediction


def test_error_map_categories():
    truth, prediction = _error_case()
    errors = error_map(prediction, truth)
    assert errors[1, 0, 0] == FALSE_POSITIVE and errors[6, 5, 5] == FALSE_NEGATIVE
    assert errors[3, 5, 5] == TRUE_POSITIVE and errors[4, 5, 5] == WRONG_CLASS and errors[0, 9, 9] == 0
    assert np.count_nonzero(errors == FALSE_POSITIVE) == 6 and np.count_nonzero(errors == FALSE_NEGATIVE) == 16
    assert np.count_nonzero(errors == WRONG_CLASS) == 16 and np.count_nonzero(errors == TRUE_POSITIVE) == 48
    with pytest.raises(ValueError, match="differ in shape"):
        error_map(prediction[1:], truth)


def test_most_error_slices_finds_the_slice_with_most_false_positives_and_negatives():
    truth, prediction = _error_case()
    assert most_tumour_slices(truth > 0) == {"axial": 3, "coronal": 4, "sagittal": 4}
    # FN (16 voxels in axial 6) outweigh FP (6 in axial 1); the wrong-class slice 4 is not an error slice.
    assert most_error_slices(prediction, truth) == {"axial": 6, "coronal": 4, "sagittal": 4}
    # 30 false positives in axial 1: 10 per coronal slice Y 0-2 (against 4 FN), 3 per sagittal slice X 0-9 (+4 FN at X 4-7).
    prediction[1, 0:10, 0:3] = ED
    assert most_error_slices(prediction, truth) == {"axial": 1, "coronal": 0, "sagittal": 4}
    # No FP or FN: the slices of largest tumour.
    assert most_error_slices(truth, truth) == most_tumour_slices(truth > 0)


def test_error_colours_are_distinct_from_each_other_and_from_the_label_colours():
    colours = [np.array(c) for c in ERROR_COLOURS.values()] + [np.array(c) for k, c in LABEL_COLOURS.items() if k]
    for i, first in enumerate(colours):
        for second in colours[i + 1 :]:
            assert np.abs(first - second).max() >= 100, (first, second)


def test_paint_colours_error_voxels_as_documented():
    truth, prediction = _error_case()
    errors = error_map(prediction, truth)
    grey = np.full(errors.shape, 0.5, np.float32)
    opaque = paint(grey[1], errors[1], ERROR_COLOURS, (0.0, 1.0), alpha=1.0)
    assert opaque.dtype == np.uint8 and opaque.shape == (12, 14, 3)
    assert tuple(opaque[0, 0]) == ERROR_COLOURS[FALSE_POSITIVE] and tuple(opaque[9, 9]) == (128, 128, 128)
    blended = paint(grey[6], errors[6], ERROR_COLOURS, (0.0, 1.0), alpha=ERROR_ALPHA)
    expected = (1 - ERROR_ALPHA) * 127.5 + ERROR_ALPHA * np.array(ERROR_COLOURS[FALSE_NEGATIVE])
    assert np.abs(blended[5, 5] - expected).max() <= 0.5 + 1e-3  # blended over the grey, rounded
    assert tuple(paint(grey[3], errors[3], ERROR_COLOURS, (0.0, 1.0), alpha=1.0)[5, 5]) == ERROR_COLOURS[TRUE_POSITIVE]
    assert tuple(paint(grey[4], errors[4], ERROR_COLOURS, (0.0, 1.0), alpha=1.0)[5, 5]) == ERROR_COLOURS[WRONG_CLASS]


def _has_colour(rgb: np.ndarray, colour: np.ndarray) -> bool:
    return bool((rgb.reshape(-1, 3) == colour.astype(np.uint8)).all(axis=1).any())


def test_error_overlay_figure_draws_the_error_map():
    truth, prediction = _error_case()
    prediction[1, 0:10, 0:3] = ED  # false positives on the slices of largest error (axial 1, coronal 0)
    image = np.zeros((10, 4, 12, 14), np.float32)  # black: a filled voxel shows alpha x its colour
    rgb = figure_rgb(error_overlay_figure(image, prediction, truth, (1.0, 1.0, 1.0), title="case"))
    for code in (TRUE_POSITIVE, FALSE_POSITIVE, FALSE_NEGATIVE, WRONG_CLASS):
        assert _has_colour(rgb, np.rint(ERROR_ALPHA * np.array(ERROR_COLOURS[code]))), code
    assert _has_colour(rgb, np.array(ERROR_COLOURS[FALSE_POSITIVE]))  # the legend
    assert _has_colour(rgb, np.rint(LABEL_ALPHA * np.array(LABEL_COLOURS[ED])))  # ground truth and prediction filled
    without_errors = figure_rgb(error_overlay_figure(image, truth, truth, (1.0, 1.0, 1.0), title="case"))
    assert not _has_colour(without_errors, np.rint(ERROR_ALPHA * np.array(ERROR_COLOURS[FALSE_POSITIVE])))


def test_overlays_without_ground_truth_show_the_prediction_alone(tmp_path):
    image, prediction, _ = _overlay_case()
    image = np.zeros_like(image)
    rgb = figure_rgb(overlay_figure(image, prediction, None, (1.0, 1.0, 2.5), title="case"))
    assert rgb.shape[:2] == (8 * 72, 12 * 72)
    for label in (NEC, ED, ET):  # filled in the label colours (and in the legend)
        assert _has_colour(rgb, np.array(LABEL_COLOURS[label])), label
    assert not _has_colour(rgb, np.array(ERROR_COLOURS[FALSE_POSITIVE]))  # no error map, no error legend
    out = write_overlay(tmp_path / "overlays" / "unlabelled.png", image, prediction, None, (1.0, 1.0, 2.5), title="case")
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size < 1_000_000


# ---- tasks ------------------------------------------------------------------------------------
def test_overlays_and_plots_of_a_one_channel_task(tmp_path):
    from pipeline.evaluation.report import region_colours, write_report
    from pipeline.tasks.task import resolve_task
    from pipeline.visualize.overlays import figure_rgb, overlay_figure

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
