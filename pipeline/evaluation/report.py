"""Evaluation reports: the per-patient table, its summary, the plots and the printed table.

Everything lands in the evaluation output folder:

``metrics.csv``
    one row per patient: ``case_id`` then ``<metric>_<structure>`` columns (:mod:`pipeline.evaluation.metrics`).
``summary.json``
    ``cases`` (the number of patients) and, per metric column, its mean, median, std (sample
    standard deviation, ``ddof=1``; 0 for one case), min and max; plus what the caller adds
    (model, data list, post-processing...).
``plots/dice_distribution.png``, ``plots/dice_per_case.png``
    Dice per structure as box and violin plots, and Dice of WT, TC and ET per case as bars.
``plots/dice_histogram.png``
    for the Kaggle LGG and 2D image tasks (metric sets ``volume-voxels`` and ``image``): the
    distribution of the per-patient (per-image) Dice as a histogram, with its mean and median.
``plots/training_curves.png``
    when the model's run folder holds logs (TensorBoard event files or CSV).

The overlays of ``overlays/<case_id>.png`` are drawn by :mod:`pipeline.visualize.overlays`.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.core.io import atomic_path, write_json, write_text
from pipeline.tasks.task import DEFAULT_TASK, Task
from pipeline.visualize.overlays import save_figure

__all__ = [
    "OVERLAYS_DIR",
    "REGION_COLOURS",
    "metrics_frame",
    "plot_training_curves",
    "region_colours",
    "read_training_logs",
    "summarise",
    "summary_table",
    "write_report",
]


METRICS_FILE, SUMMARY_FILE = "metrics.csv", "summary.json"
PLOTS_DIR, OVERLAYS_DIR = "plots", "overlays"
STATISTICS: tuple[str, ...] = ("mean", "median", "std", "min", "max")



def region_colours(task: Task = DEFAULT_TASK) -> dict[str, tuple[float, float, float]]:
    """Plot colour (0-1) of each scored structure: the colour of its defining class (:meth:`pipeline.tasks.task.Task.structure_colour`)."""
    return {name: tuple(c / 255 for c in task.structure_colour(name)) for name in task.structures}


#: Plot colour of each BraTS glioma region (WT: ED's, TC: NEC's, ET: ET's).
REGION_COLOURS: dict[str, tuple[float, float, float]] = {name: region_colours()[name] for name in ("WT", "TC", "ET")}
#: The structures of the per-case Dice bars when the task scores them all (BraTS), else every structure.
_PER_CASE_STRUCTURES: tuple[str, ...] = ("WT", "TC", "ET")


# ----------------------------------------------------------------------------- tables


def metrics_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per patient, ``case_id`` first, in the given order."""
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return pd.DataFrame(columns=["case_id"])
    columns = ["case_id"] + [c for c in frame.columns if c != "case_id"]
    return frame[columns]


def write_metrics_csv(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write the per-patient table as CSV, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    return Path(path)


def summarise(frame: pd.DataFrame) -> dict[str, Any]:
    """``{"cases": n, "metrics": {column: {mean, median, std, min, max}}}`` over the numeric columns."""
    numeric = frame.drop(columns=["case_id"], errors="ignore").apply(pd.to_numeric, errors="coerce")
    metrics: dict[str, dict[str, float | None]] = {}
    for column in numeric.columns:
        values = numeric[column].dropna()
        if values.empty:
            metrics[column] = {name: None for name in STATISTICS}
            continue
        metrics[column] = {
            "mean": float(values.mean()),
            "median": float(values.median()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(values.min()),
            "max": float(values.max()),
        }
    return {"cases": int(len(frame)), "metrics": metrics}


#: The two metrics :func:`summary_table` shows of each metric set, their short names, and its closing line.
_HEADLINES: dict[str, tuple[tuple[str, str], tuple[str, str], str]] = {
    "volume": (("dice", "Dice"), ("hd95", "HD95"), "case(s); HD95 in mm"),
    "volume-voxels": (("dice", "Dice"), ("hd95_voxels", "HD95"), "patient(s); per-volume Dice; HD95 in voxels (no spacing stored)"),
    "image": (("dice", "Dice"), ("iou", "IoU"), "image(s); per-image scores"),
}


def summary_table(frame: pd.DataFrame, structures: Sequence[str] = tuple(DEFAULT_TASK.structures), metric_set: str = "volume") -> str:
    """A short text table: mean and std of two metrics per structure (Dice and HD95; Dice and IoU per image), and the number of cases."""
    (first, first_name), (second, second_name), closing = _HEADLINES[metric_set]
    lines = [f"{'structure':<10}{first_name + ' mean':>10}{first_name + ' std':>10}{second_name + ' mean':>11}{second_name + ' std':>10}"]
    for name in structures:
        cells = []
        for metric in (first, second):
            values = pd.to_numeric(frame.get(f"{metric}_{name}", pd.Series(dtype=float)), errors="coerce").dropna()
            mean = values.mean() if len(values) else math.nan
            std = values.std(ddof=1) if len(values) > 1 else 0.0
            cells.append((mean, std))
        (dice_mean, dice_std), (hd_mean, hd_std) = cells
        lines.append(f"{name:<10}{dice_mean:>10.3f}{dice_std:>10.3f}{hd_mean:>11.2f}{hd_std:>10.2f}")
    lines.append(f"{len(frame)} {closing}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots


def plot_dice_distribution(frame: pd.DataFrame, path: str | os.PathLike[str], task: Task = DEFAULT_TASK) -> Path:
    """Violin plot with a box plot inside of the Dice of every structure of the task."""
    names = [s for s in task.structures if f"dice_{s}" in frame]
    data = [pd.to_numeric(frame[f"dice_{s}"], errors="coerce").dropna().to_numpy() for s in names]
    figure = Figure(figsize=(1.4 * len(names) + 2, 4))
    axes = figure.add_subplot()
    positions = list(range(1, len(names) + 1))
    drawable = [(p, d) for p, d in zip(positions, data) if len(d) > 1 and np.ptp(d) > 0]
    if drawable:  # a violin needs at least two distinct values
        parts = axes.violinplot([d for _, d in drawable], positions=[p for p, _ in drawable], showextrema=False)
        for body in parts["bodies"]:
            body.set_alpha(0.3)
    axes.boxplot(data, positions=positions, widths=0.25, showmeans=True)
    axes.set_xticks(positions, names)
    axes.set_ylim(-0.02, 1.02)
    axes.set_ylabel("Dice")
    axes.set_title(f"Dice per structure ({len(frame)} case(s))")
    axes.grid(axis="y", alpha=0.3)
    return save_figure(figure, path)


def plot_dice_histogram(frame: pd.DataFrame, path: str | os.PathLike[str], task: Task = DEFAULT_TASK) -> Path:
    """Histogram of the per-patient (per-image) Dice of every structure, bins of 0.05, mean and median marked."""
    names = [s for s in task.structures if f"dice_{s}" in frame]
    figure = Figure(figsize=(6, 3.2 * len(names)))
    unit = "image" if task.metrics == "image" else "patient"
    for index, name in enumerate(names, start=1):
        values = pd.to_numeric(frame[f"dice_{name}"], errors="coerce").dropna().to_numpy()
        axes = figure.add_subplot(len(names), 1, index)
        axes.hist(values, bins=np.linspace(0, 1, 21), color=region_colours(task)[name], edgecolor="black", alpha=0.8)
        if len(values):
            axes.axvline(float(values.mean()), color="black", linestyle="--", label=f"mean {values.mean():.3f}")
            axes.axvline(float(np.median(values)), color="grey", linestyle=":", label=f"median {np.median(values):.3f}")
            axes.legend(loc="upper left", fontsize=8)
        axes.set_xlim(0, 1)
        axes.set_xlabel(f"Dice per {unit} ({name})")
        axes.set_ylabel(f"{unit}s")
        axes.set_title(f"Dice distribution, {len(values)} {unit}(s)")
    figure.tight_layout()
    return save_figure(figure, path)


def plot_dice_per_case(frame: pd.DataFrame, path: str | os.PathLike[str], regions: Sequence[str] | None = None, task: Task = DEFAULT_TASK) -> Path:
    """Grouped bars: the Dice of each region (default: WT, TC, ET when the task scores them, else its structures) for every case."""
    if regions is None:
        regions = _PER_CASE_STRUCTURES if set(_PER_CASE_STRUCTURES) <= set(task.structures) else tuple(task.structures)
    colours = region_colours(task)
    cases = frame["case_id"].astype(str).tolist()
    figure = Figure(figsize=(max(6, 0.5 * len(cases) + 2), 4))
    axes = figure.add_subplot()
    width = 0.8 / len(regions)
    x = np.arange(len(cases))
    for index, region in enumerate(regions):
        values = pd.to_numeric(frame.get(f"dice_{region}", pd.Series([np.nan] * len(cases))), errors="coerce")
        axes.bar(x + (index - (len(regions) - 1) / 2) * width, values, width, label=region, color=colours.get(region))
    axes.set_xticks(x, cases, rotation=60, ha="right", fontsize=7)
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("Dice")
    axes.set_title("Dice per case")
    axes.legend(loc="lower right", fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    return save_figure(figure, path)


def read_training_logs(run_dir: str | os.PathLike[str]) -> dict[str, list[tuple[float, float]]]:
    """Scalar series ``{tag: [(step, value), ...]}`` from a run folder's TensorBoard events or CSV logs.

    Looks under ``run_dir/logs`` (and ``run_dir`` itself) for ``events.out.tfevents.*`` files and
    ``*.csv`` files with an ``epoch`` or ``step`` column. Returns ``{}`` when there is none.
    """
    root = Path(run_dir)
    search = [root / "logs", root]
    series: dict[str, list[tuple[float, float]]] = {}
    event_files = sorted({p for folder in search if folder.is_dir() for p in folder.rglob("events.out.tfevents.*")})
    if event_files:
        from tensorboard.backend.event_processing.event_accumulator import (
            EventAccumulator,
        )

        for event_file in event_files:
            accumulator = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
            try:
                accumulator.Reload()
            except Exception:  # a damaged or half-written event file only loses its curves
                continue
            for tag in accumulator.Tags().get("scalars", []):
                series.setdefault(tag, []).extend((float(e.step), float(e.value)) for e in accumulator.Scalars(tag))
    csv_files = sorted({p for folder in search if folder.is_dir() for p in folder.glob("*.csv")})
    for csv_file in csv_files:
        try:
            with open(csv_file, newline="") as handle:
                rows = list(csv.DictReader(handle))
        except (OSError, csv.Error, UnicodeDecodeError):
            continue
        if not rows:
            continue
        step_key = next((k for k in ("epoch", "step", "iteration") if k in rows[0]), None)
        if step_key is None:
            continue
        for key in rows[0]:
            if key == step_key:
                continue
            points = []
            for row in rows:
                try:
                    points.append((float(row[step_key]), float(row[key])))
                except (TypeError, ValueError):
                    continue
            if points:
                series.setdefault(f"{csv_file.stem}/{key}", []).extend(points)
    return {tag: sorted(points) for tag, points in series.items() if points}


def plot_training_curves(run_dir: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path | None:
    """One panel per logged scalar of the run (loss, validation Dice, learning rate...); None without logs."""
    series = read_training_logs(run_dir)
    if not series:
        return None
    tags = sorted(series)
    columns = min(3, len(tags))
    rows = math.ceil(len(tags) / columns)
    figure = Figure(figsize=(4.5 * columns, 3 * rows))
    for index, tag in enumerate(tags, start=1):
        axes = figure.add_subplot(rows, columns, index)
        steps, values = zip(*series[tag])
        axes.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3)
        axes.set_title(tag, fontsize=9)
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, path)


# ----------------------------------------------------------------------------- the report


def write_report(
    rows: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    run_dir: str | os.PathLike[str] | None = None,
    extra_summary: Mapping[str, Any] | None = None,
    task: Task = DEFAULT_TASK,
) -> dict[str, Any]:
    """Write ``metrics.csv``, ``summary.json`` and the plots; return the summary.

    Args:
        rows: per-patient metric dicts, each with a ``case_id``.
        out_dir: the evaluation output folder.
        run_dir: the model's run folder; its logs give the training curves when present.
        extra_summary: more keys for ``summary.json`` (model, data list, settings).
        task: whose structures the plots and the table show.
    """
    out = Path(out_dir)
    frame = metrics_frame(rows)
    write_metrics_csv(frame, out / METRICS_FILE)
    summary = {**summarise(frame), **dict(extra_summary or {})}
    plots = {}
    if len(frame):
        plots["dice_distribution"] = str(plot_dice_distribution(frame, out / PLOTS_DIR / "dice_distribution.png", task).relative_to(out))
        plots["dice_per_case"] = str(plot_dice_per_case(frame, out / PLOTS_DIR / "dice_per_case.png", task=task).relative_to(out))
        if task.metrics != "volume":
            plots["dice_histogram"] = str(plot_dice_histogram(frame, out / PLOTS_DIR / "dice_histogram.png", task).relative_to(out))
    if run_dir is not None:
        curves = plot_training_curves(run_dir, out / PLOTS_DIR / "training_curves.png")
        if curves is not None:
            plots["training_curves"] = str(curves.relative_to(out))
    summary["plots"] = plots
    write_json(out / SUMMARY_FILE, summary)
    write_text(out / "summary.txt", summary_table(frame, tuple(task.structures), task.metrics) + "\n")
    return summary
