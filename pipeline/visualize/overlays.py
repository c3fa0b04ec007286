"""Overlays a person reads at a glance: the prediction, the ground truth and an error map over the scan.

``overlays/<case_id>.png`` of an evaluation shows where the prediction is wrong
(:func:`error_overlay_figure`): in each plane (axial, coronal, sagittal), the ground truth and the
prediction filled in the label colours of the 3D Slicer colour table (NEC red, ED green, ET yellow)
and an error map of the whole tumour (true positives cyan, false positives magenta, false
negatives orange, wrong class inside the tumour white), on the slice with the most tumour and on
the slice with the most false positive + false negative voxels.

A 2D-layout case (Kaggle LGG patient, 2D image) gets :func:`contour_overlay_figure` instead: the
ground truth and the prediction drawn as contours on the image as stored (FLAIR for Kaggle), on
the slices with the most tumour.

A case without ground truth, and the TensorBoard image of training, get the compact
:func:`overlay_figure`: the prediction filled over FLAIR and T1ce (or, with ground truth, over
FLAIR above the error map) on the slices with the most tumour.

Overlays are drawn in the **radiological convention**, as 3D Slicer and most clinical viewers
show images: the patient's right on the left of the picture; axial slices seen from the feet
with anterior up, coronal slices seen from the front with superior up, sagittal slices with
anterior on the left and superior up. Pixels keep their physical aspect ratio.

Figures are drawn with Matplotlib's object API on the Agg canvas (no display needed, no global
pyplot state).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from pipeline.core.io import atomic_path
from pipeline.inference.writers import label_colours
from pipeline.tasks.task import DEFAULT_TASK, Task

__all__ = [
    "CONTOUR_COLOURS",
    "ERROR_ALPHA",
    "ERROR_COLOURS",
    "ERROR_NAMES",
    "FALSE_NEGATIVE",
    "FALSE_POSITIVE",
    "LABEL_ALPHA",
    "OVERLAY_DPI",
    "TRUE_POSITIVE",
    "WRONG_CLASS",
    "contour_overlay_figure",
    "error_map",
    "error_overlay_figure",
    "figure_rgb",
    "intensity_window",
    "most_error_slices",
    "most_tumour_slices",
    "overlay_figure",
    "paint",
    "radiological_slice",
    "save_figure",
    "shown_channels",
    "write_contour_overlay",
    "write_overlay",
]


#: Error-map categories (:func:`error_map`): codes and names.
TRUE_POSITIVE, FALSE_POSITIVE, FALSE_NEGATIVE, WRONG_CLASS = 1, 2, 3, 4
ERROR_NAMES: dict[int, str] = {
    TRUE_POSITIVE: "true positive",
    FALSE_POSITIVE: "false positive",
    FALSE_NEGATIVE: "false negative",
    WRONG_CLASS: "wrong class",
}
#: Error-map colours (R, G, B): distinct from each other and from the label colours.
ERROR_COLOURS: dict[int, tuple[int, int, int]] = {
    TRUE_POSITIVE: (0, 200, 255),  # cyan
    FALSE_POSITIVE: (255, 0, 255),  # magenta
    FALSE_NEGATIVE: (255, 110, 0),  # orange
    WRONG_CLASS: (255, 255, 255),  # white
}
#: Opacity of the label fills (the anatomy shows through) and of the error map.
LABEL_ALPHA, ERROR_ALPHA = 0.45, 0.8
#: Resolution of the overlay images (dots per inch of the figure).
OVERLAY_DPI = 72
_PLANES: tuple[str, ...] = ("axial", "coronal", "sagittal")
#: The channels overlays show, in order of preference (a task without them shows its first channels).
_SHOWN_MODALITIES: tuple[str, ...] = ("flair", "t1ce")

def save_figure(figure: Figure, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Write a figure as PNG, atomically."""
    FigureCanvasAgg(figure)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)



def error_map(prediction_zxy: np.ndarray, ground_truth_zxy: np.ndarray) -> np.ndarray:
    """Per-voxel error category (uint8): 0 outside both whole tumours, else one of :data:`ERROR_NAMES`.

    On the whole tumour: :data:`TRUE_POSITIVE` (both tumour, same label), :data:`FALSE_POSITIVE`
    (predicted tumour, truly background), :data:`FALSE_NEGATIVE` (true tumour, predicted
    background); :data:`WRONG_CLASS` where both are tumour but the labels differ.
    """
    prediction, truth = np.asarray(prediction_zxy), np.asarray(ground_truth_zxy)
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and ground truth {truth.shape} differ in shape")
    predicted, true = prediction > 0, truth > 0
    errors = np.zeros(prediction.shape, dtype=np.uint8)
    errors[predicted & true] = TRUE_POSITIVE
    errors[predicted & true & (prediction != truth)] = WRONG_CLASS
    errors[predicted & ~true] = FALSE_POSITIVE
    errors[~predicted & true] = FALSE_NEGATIVE
    return errors


def most_tumour_slices(mask_zxy: np.ndarray) -> dict[str, int]:
    """Index of the slice with the most true voxels in each plane of a ``(Z, X, Y)`` mask (centre if empty)."""
    mask = np.asarray(mask_zxy, dtype=bool)
    if not mask.any():
        return {plane: size // 2 for plane, size in zip(_PLANES, (mask.shape[0], mask.shape[2], mask.shape[1]))}
    return {
        "axial": int(np.argmax(mask.sum(axis=(1, 2)))),
        "coronal": int(np.argmax(mask.sum(axis=(0, 1)))),
        "sagittal": int(np.argmax(mask.sum(axis=(0, 2)))),
    }


def most_error_slices(prediction_zxy: np.ndarray, ground_truth_zxy: np.ndarray) -> dict[str, int]:
    """Index of the slice with the most whole-tumour errors (false positive + false negative voxels) in each plane.

    Where the prediction has no such error, the slices with the most tumour.
    """
    errors = np.isin(error_map(prediction_zxy, ground_truth_zxy), (FALSE_POSITIVE, FALSE_NEGATIVE))
    return most_tumour_slices(errors if errors.any() else _tumour(prediction_zxy, ground_truth_zxy))


def _tumour(prediction_zxy: np.ndarray, ground_truth_zxy: np.ndarray | None) -> np.ndarray:
    """The whole tumour the overlays centre on: the ground truth's, or the prediction's where it is empty or absent."""
    if ground_truth_zxy is not None and np.any(ground_truth_zxy):
        return np.asarray(ground_truth_zxy) > 0
    return np.asarray(prediction_zxy) > 0


def radiological_slice(volume_zxy: np.ndarray, plane: str, index: int, spacing_xyz: Sequence[float]) -> tuple[np.ndarray, float]:
    """A 2D slice of a RAS-ordered ``(Z, X, Y)`` volume, arranged for ``imshow(origin="lower")``, and its aspect.

    Rows go up (anterior for axial, superior otherwise); columns put the patient's right on the
    left (axial, coronal) and anterior on the left (sagittal).
    """
    sx, sy, sz = (float(s) for s in spacing_xyz)
    if plane == "axial":
        return volume_zxy[index].T[:, ::-1], sy / sx
    if plane == "coronal":
        return volume_zxy[:, :, index][:, ::-1], sz / sx
    if plane == "sagittal":
        return volume_zxy[:, index, :][:, ::-1], sz / sy
    raise ValueError(f"unknown plane {plane!r}")


def intensity_window(channel: np.ndarray) -> tuple[float, float]:
    """Display window of an image channel: the 1st and 99th percentiles of its non-zero (brain) voxels."""
    brain = channel[channel != 0]
    if not brain.size:
        return 0.0, 1.0
    low, high = np.percentile(brain, (1, 99))
    return float(low), float(high)


def paint(
    picture: np.ndarray,
    categories: np.ndarray,
    colours: Mapping[int, tuple[int, int, int]],
    window: tuple[float, float],
    alpha: float,
) -> np.ndarray:
    """A grey-scale slice as an RGB uint8 image ``(H, W, 3)`` with each category filled in its colour.

    Args:
        picture: the image slice.
        categories: a label or :func:`error_map` slice of the same shape; 0 is left unpainted.
        colours: colour (R, G, B, 0-255) of each category (:data:`LABEL_COLOURS`, :data:`ERROR_COLOURS`).
        window: intensities shown as black and white.
        alpha: opacity of the fill (1 hides the image).
    """
    low, high = window
    grey = np.clip((np.asarray(picture, dtype=np.float32) - low) / max(high - low, 1e-6), 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for code, colour in colours.items():
        where = categories == code
        if code and where.any():
            rgb[where] = (1.0 - alpha) * rgb[where] + alpha * np.asarray(colour, dtype=np.float32)
    return np.rint(rgb).astype(np.uint8)


def _colour_legend(colours: Mapping[int, tuple[int, int, int]], names: Mapping[int, str]) -> list[Patch]:
    return [Patch(facecolor=np.asarray(colours[code]) / 255, edgecolor="black", label=name) for code, name in names.items()]


def _draw_panel(axes: Any, rgb: np.ndarray, aspect: float, plane: str, title: str) -> None:
    axes.imshow(rgb, origin="lower", aspect=aspect, interpolation="nearest")
    axes.set_title(title, fontsize=9)
    axes.set_xticks([])
    axes.set_yticks([])
    left, right = ("A", "P") if plane == "sagittal" else ("R", "L")
    axes.text(0.02, 0.02, left, color="white", transform=axes.transAxes, fontsize=9)
    axes.text(0.95, 0.02, right, color="white", transform=axes.transAxes, fontsize=9)


def shown_channels(task: Task) -> tuple[str, str]:
    """The channel overlays show first (FLAIR) and second (T1ce), or the task's own first channels."""
    shown = [c for c in _SHOWN_MODALITIES if c in task.channels] + [c for c in task.channels if c not in _SHOWN_MODALITIES]
    return shown[0], shown[min(1, len(shown) - 1)]


class _Case:
    """One case's volumes prepared for drawing: the shown channels (FLAIR, T1ce) with their windows, the labels, the error map."""

    def __init__(
        self,
        image_zcxy: np.ndarray,
        prediction_zxy: np.ndarray,
        ground_truth_zxy: np.ndarray | None,
        spacing_xyz: Sequence[float],
        task: Task = DEFAULT_TASK,
    ) -> None:
        self.task = task
        self.shown = shown_channels(task)
        self.channels = {m: np.asarray(image_zcxy[:, task.channels.index(m)], dtype=np.float32) for m in dict.fromkeys(self.shown)}
        self.colours = label_colours(task)
        self.legend = _colour_legend(self.colours, {task.class_value(name): name for name in task.classes})
        self.windows = {m: intensity_window(channel) for m, channel in self.channels.items()}
        self.labels = {"prediction": np.asarray(prediction_zxy)}
        if ground_truth_zxy is not None:
            self.labels["ground truth"] = np.asarray(ground_truth_zxy)
            self.labels["errors"] = error_map(prediction_zxy, ground_truth_zxy)
        self.spacing = spacing_xyz

    def panel(self, axes: Any, modality: str, layer: str, plane: str, index: int, title: str) -> np.ndarray:
        """Draw ``layer`` (a label volume or the error map) filled over ``modality``; return the layer's slice."""
        picture, aspect = radiological_slice(self.channels[modality], plane, index, self.spacing)
        categories, _ = radiological_slice(self.labels[layer], plane, index, self.spacing)
        colours, alpha = (ERROR_COLOURS, ERROR_ALPHA) if layer == "errors" else (self.colours, LABEL_ALPHA)
        _draw_panel(axes, paint(picture, categories, colours, self.windows[modality], alpha), aspect, plane, title)
        return categories


def overlay_figure(
    image_zcxy: np.ndarray,
    prediction_zxy: np.ndarray,
    ground_truth_zxy: np.ndarray | None,
    spacing_xyz: Sequence[float],
    title: str = "",
    task: Task = DEFAULT_TASK,
) -> Figure:
    """The compact overlay (TensorBoard, cases without ground truth): two rows of three planes.

    Without ground truth: the prediction filled in the label colours over FLAIR and over T1ce.
    With it: the prediction over FLAIR, and the :func:`error_map` over FLAIR. Each plane shows
    its slice with the most tumour (ground truth, or the prediction where the ground truth is
    empty or absent), in the radiological convention.

    Args:
        image_zcxy: the case's preprocessed image ``(Z, C, X, Y)``, RAS voxel order, channels in
            the task's order.
        prediction_zxy: predicted internal labels on the same grid.
        ground_truth_zxy: ground-truth internal labels on the same grid, or None.
        spacing_xyz: voxel size (mm) along X, Y, Z.
        title: figure title (the case id).
        task: the image's channels and the labels' classes and colours.
    """
    case = _Case(image_zcxy, prediction_zxy, ground_truth_zxy, spacing_xyz, task)
    slices = most_tumour_slices(_tumour(prediction_zxy, ground_truth_zxy))
    first, second = case.shown
    rows = [(first, "prediction"), (first, "errors")] if ground_truth_zxy is not None else [(first, "prediction"), (second, "prediction")]
    figure = Figure(figsize=(4 * len(_PLANES), 4 * len(rows)))
    for row, (modality, layer) in enumerate(rows):
        for column, plane in enumerate(_PLANES):
            axes = figure.add_subplot(len(rows), len(_PLANES), row * len(_PLANES) + column + 1)
            case.panel(axes, modality, layer, plane, slices[plane], f"{layer}: {task.channel_name(modality)} {plane} {slices[plane]}")
    handles = list(case.legend)
    if ground_truth_zxy is not None:
        handles += _colour_legend(ERROR_COLOURS, ERROR_NAMES)
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9)
    figure.suptitle(f"{title} (radiological convention: patient right on the left)", fontsize=11)
    return figure


def error_overlay_figure(
    image_zcxy: np.ndarray,
    prediction_zxy: np.ndarray,
    ground_truth_zxy: np.ndarray,
    spacing_xyz: Sequence[float],
    title: str = "",
    task: Task = DEFAULT_TASK,
) -> Figure:
    """The evaluation overlay: where the prediction is wrong, on the slices of largest tumour and of largest error.

    Two blocks side by side, the slices with the most ground-truth tumour
    (:func:`most_tumour_slices`) and those with the most false positive + false negative voxels
    (:func:`most_error_slices`); in each, one row per plane (axial, coronal, sagittal) of three
    panels over FLAIR: the ground truth filled in the label colours (:data:`LABEL_COLOURS`, as
    in the 3D Slicer colour table), the prediction filled in the same colours, and the
    :func:`error_map` (:data:`ERROR_COLOURS`) titled with the slice's false positive and false
    negative voxel counts. Radiological convention.

    Args:
        image_zcxy: the case's preprocessed image ``(Z, C, X, Y)``, RAS voxel order.
        prediction_zxy: predicted internal labels on the same grid.
        ground_truth_zxy: ground-truth internal labels on the same grid.
        spacing_xyz: voxel size (mm) along X, Y, Z.
        title: figure title (the case id).
        task: the image's channels and the labels' classes and colours.
    """
    case = _Case(image_zcxy, prediction_zxy, ground_truth_zxy, spacing_xyz, task)
    blocks = {
        "slices of largest tumour": most_tumour_slices(_tumour(prediction_zxy, ground_truth_zxy)),
        "slices of largest error (false positives + false negatives)": most_error_slices(prediction_zxy, ground_truth_zxy),
    }
    layers = ("ground truth", "prediction", "errors")
    figure = Figure(figsize=(3.2 * len(layers) * len(blocks), 3.2 * len(_PLANES) + 1.2), layout="constrained")
    for subfigure, (heading, slices) in zip(figure.subfigures(1, len(blocks)), blocks.items()):
        subfigure.suptitle(heading, fontsize=11)
        grid = subfigure.subplots(len(_PLANES), len(layers))
        for row, plane in enumerate(_PLANES):
            for column, layer in enumerate(layers):
                axes = grid[row, column]
                shown = case.panel(axes, case.shown[0], layer, plane, slices[plane], f"{layer}: {plane} {slices[plane]}")
                if layer == "errors":
                    fp, fn = (int(np.count_nonzero(shown == code)) for code in (FALSE_POSITIVE, FALSE_NEGATIVE))
                    axes.set_title(f"errors: {plane} {slices[plane]} (FP {fp}, FN {fn} voxels)", fontsize=9)
    handles = case.legend + _colour_legend(ERROR_COLOURS, ERROR_NAMES)
    figure.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=10)
    figure.suptitle(f"{title}: ground truth, prediction and errors over {task.channel_name(case.shown[0])} (radiological convention: patient right on the left)", fontsize=12)
    return figure


def write_overlay(
    path: str | os.PathLike[str],
    image_zcxy: np.ndarray,
    prediction_zxy: np.ndarray,
    ground_truth_zxy: np.ndarray | None,
    spacing_xyz: Sequence[float],
    title: str = "",
    task: Task = DEFAULT_TASK,
) -> Path:
    """Write a case's overlay as a PNG at ``path``: :func:`error_overlay_figure` with ground truth, else :func:`overlay_figure`."""
    draw = overlay_figure if ground_truth_zxy is None else error_overlay_figure
    return save_figure(draw(image_zcxy, prediction_zxy, ground_truth_zxy, spacing_xyz, title=title, task=task), path, dpi=OVERLAY_DPI)


#: Contour colours (0-1) of :func:`contour_overlay_figure`: ground truth green, prediction red.
CONTOUR_COLOURS: dict[str, tuple[float, float, float]] = {"ground truth": (0.0, 0.85, 0.0), "prediction": (1.0, 0.1, 0.1)}


def contour_overlay_figure(
    image_rcs: np.ndarray, prediction_rcs: np.ndarray, ground_truth_rcs: np.ndarray | None, title: str = "", max_slices: int = 4
) -> Figure:
    """Ground truth (wide, green) and prediction (thin, red) as contours on a 2D-layout case's image, as stored (rows down, columns across).

    Args:
        image_rcs: the shown channel ``(rows, columns, slices)`` as read from the files (FLAIR for Kaggle LGG).
        prediction_rcs: predicted tumour (any non-zero label) on the same grid.
        ground_truth_rcs: ground-truth labels on the same grid, or None.
        title: figure title (case id and its scores).
        max_slices: at most this many slices, those with the most tumour (ground truth + prediction), in slice order.
    """
    prediction = np.asarray(prediction_rcs) > 0
    truth = np.asarray(ground_truth_rcs) > 0 if ground_truth_rcs is not None else np.zeros_like(prediction)
    tumour = (truth.sum(axis=(0, 1)) + prediction.sum(axis=(0, 1))).astype(np.int64)
    order = np.argsort(-tumour, kind="stable")[:max_slices]
    shown = sorted(int(z) for z in order)
    figure = Figure(figsize=(3.2 * len(shown), 3.6))
    window = intensity_window(np.asarray(image_rcs, dtype=np.float32))
    for index, z in enumerate(shown, start=1):
        axes = figure.add_subplot(1, len(shown), index)
        axes.imshow(image_rcs[:, :, z], cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest")
        for name, mask, width in (("ground truth", truth, 2.4), ("prediction", prediction, 1.0)):  # the truth wider, under the prediction
            if mask[:, :, z].any() and (name == "prediction" or ground_truth_rcs is not None):
                axes.contour(mask[:, :, z].astype(np.float32), levels=[0.5], colors=[CONTOUR_COLOURS[name]], linewidths=width)
        axes.set_title(f"slice {z + 1}" if image_rcs.shape[2] > 1 else "image", fontsize=9)
        axes.set_xticks([])
        axes.set_yticks([])
    names = ("ground truth", "prediction") if ground_truth_rcs is not None else ("prediction",)
    handles = [Patch(facecolor="none", edgecolor=CONTOUR_COLOURS[name], label=name) for name in names]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9)
    figure.suptitle(title, fontsize=10)
    return figure


def write_contour_overlay(
    path: str | os.PathLike[str], image_rcs: np.ndarray, prediction_rcs: np.ndarray, ground_truth_rcs: np.ndarray | None, title: str = ""
) -> Path:
    """Write :func:`contour_overlay_figure` as a PNG at ``path``."""
    return save_figure(contour_overlay_figure(image_rcs, prediction_rcs, ground_truth_rcs, title=title), path, dpi=OVERLAY_DPI)


def figure_rgb(figure: Figure, dpi: int = OVERLAY_DPI) -> np.ndarray:
    """A figure (e.g. an :func:`overlay_figure`) rendered as an RGB image ``(H, W, 3)`` uint8, for TensorBoard."""
    figure.set_dpi(dpi)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.array(canvas.buffer_rgba())[..., :3]
