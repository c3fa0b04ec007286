"""Overlays: radiological display, error maps, painted labels, the overlay figures and files."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluation.report import REGION_COLOURS
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
