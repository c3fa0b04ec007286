"""Volumetric per-patient evaluation of a trained model: the ``evaluate`` command and bundle workflow.

For every case of a data-list split the model's prediction is written (as ``predict`` writes it)
under ``OUT/predictions/``, read back, and scored against the ground truth file with
:func:`pipeline.evaluation.metrics.case_metrics` on the original voxel grid with the file's voxel spacing.
:func:`pipeline.evaluation.report.write_report` then writes ``metrics.csv``, ``summary.json`` and the
plots; overlays go to ``OUT/overlays/``; the per-structure mean Dice/HD95 table is printed.
A case of a 2D layout (a model of the ``kaggle-lgg`` or ``image-mask-2d`` task) is scored on the
masks written under ``OUT/predictions/`` (read back, as the files are) against its own mask files,
with the task's metric set (:data:`pipeline.evaluation.metrics.METRIC_SETS`: per-patient volume scores in
voxels for Kaggle LGG, per-image scores for 2D folders), and its overlay is
:func:`pipeline.evaluation.report.contour_overlay_figure` (contours of both on the image).
With ``uncertainty`` the uncertainty maps go next to each prediction and the per-case
uncertainty scores (:func:`pipeline.inference.uncertainty.uncertainty_scores`) into ``metrics.csv``.
Under torchrun each process scores its share of the cases and rank 0 writes the reports; with
``shard`` one shard's part goes to ``OUT/shards/K-of-N.json`` for :func:`merge_evaluation_shards`
(:mod:`pipeline.core.distributed`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from pipeline.core.distributed import (
    Shard,
    gather_to_all,
    is_rank_zero,
    local_device,
    process_group,
    rank_shard,
    shard_conventions,
    shard_devices,
    shard_file,
    shard_positions,
    write_shard,
)
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.geometry import to_cache_grid
from pipeline.core.io import load_nifti, load_volume, read_image_2d
from pipeline.datasets.case_checks import (
    check_finite,
    check_labels,
    check_same_grid,
    read_planar,
)
from pipeline.datasets.datalist import load_datalist
from pipeline.datasets.records import PLANAR_LAYOUTS, CaseRecord
from pipeline.evaluation.metrics import case_metrics
from pipeline.evaluation.report import (
    OVERLAYS_DIR,
    metrics_frame,
    summary_table,
    write_report,
)
from pipeline.inference.model import CasePrediction, SegmentationModel, load_model
from pipeline.inference.predict import (
    check_outputs_spare_inputs,
    model_settings,
    write_case_prediction,
    write_case_uncertainty,
    write_colour_tables,
)
from pipeline.inference.writers import (
    case_mask_names,
    planar_reference,
    read_planar_masks,
)
from pipeline.tasks.labels import written_convention
from pipeline.tasks.task import DEFAULT_TASK, Task, task_from_dict
from pipeline.visualize.overlays import (
    shown_channels,
    write_contour_overlay,
    write_overlay,
)

__all__ = ["EvaluationResult", "evaluate", "merge_evaluation_shards", "predict_labelled_case", "read_internal_labels"]


PREDICTIONS_DIR = "predictions"

#: How HD95 is computed, recorded in every summary.
HD95_DEFINITION = (
    "BraTS 2023 evaluation (DeepMind surface-distance compute_robust_hausdorff(..., 95), spacing=voxel size in mm): "
    "the maximum of the two directed 95th percentiles of surface-element distances, weighted by surface-element area; "
    "one structure empty -> 373.13, both empty -> 0"
)


#: HD95 of the ``volume-voxels`` metric set (Kaggle LGG: no spacing stored).
HD95_VOXELS_DEFINITION = (
    "BraTS 2023 surface-element HD95 (DeepMind surface-distance compute_robust_hausdorff(..., 95)) with unit spacing, "
    "in voxels (the files store no spacing): the maximum of the two directed area-weighted 95th percentiles; "
    "one side empty -> the diagonal of the case's grid in voxels, both empty -> 0"
)


@dataclass
class EvaluationResult:
    """What :func:`evaluate` produced."""

    out_dir: Path
    metrics: pd.DataFrame
    summary: dict[str, Any]
    table: str


def read_internal_labels(path: str | os.PathLike[str], convention_name: str, allow_resection_cavity: bool = False, task: Task = DEFAULT_TASK):
    """A segmentation file's voxels, checked (:mod:`pipeline.datasets.case_checks`) and mapped to the task's internal labels (uint8), and its image (header)."""
    image, voxels = load_volume(path)
    if voxels.ndim != 3:
        raise InputError(path, f"expected a 3D segmentation, got shape {voxels.shape}")
    check_finite(path, voxels, "segmentation")
    convention = written_convention(task, convention_name)
    if task.classes == DEFAULT_TASK.classes:
        check_labels(path, pd.unique(voxels.ravel()), convention_name, allow_resection_cavity)
    try:
        return convention.to_internal(voxels, allow_optional=allow_resection_cavity), image
    except ValueError as err:
        raise InputError(path, str(err)) from None


def predict_labelled_case(
    model: SegmentationModel, record: CaseRecord, uncertainty: bool = False
) -> tuple[CasePrediction, np.ndarray, nib.Nifti1Image]:
    """Predict a labelled case from its images only, as ``predict`` does, and read its ground truth.

    The ground truth is read and checked first (internal labels on the images' grid), so a bad
    one stops before anything is predicted. ``uncertainty`` adds the uncertainty maps to the prediction.

    Returns:
        The prediction, the ground truth's internal labels and the ground-truth image (header).
    """
    if record.label is None:
        raise ConfigError(record.images[0], f"case {record.case_id} has no ground truth")
    if record.layout in PLANAR_LAYOUTS:
        planar, problems = read_planar(record, model.task)
        if planar is None or planar.label is None:
            raise InputError(*(problems[0].split(": ", 1) if problems else (record.label, "no mask read")))
        truth = written_convention(model.task, record.label_convention).to_internal(planar.label)
        prediction = model.predict_case(replace(record, label=None), uncertainty=uncertainty)
        return prediction, truth, planar_reference(prediction.meta)
    truth, truth_image = read_internal_labels(record.label, record.label_convention, model.allow_resection_cavity, model.task)
    images = load_nifti(record.images[0])
    check_same_grid(record.label, truth.shape, truth_image.affine, record.images[0], images.shape[:3], images.affine)
    return model.predict_case(replace(record, label=None), uncertainty=uncertainty), truth, truth_image


def _shown_planar_image(record: CaseRecord, meta: dict, task: Task) -> np.ndarray:
    """The channel a 2D-layout case's overlay shows (FLAIR for Kaggle LGG), read from its files as stored: ``(rows, columns, slices)``."""
    channel = task.channels.index(shown_channels(task)[0])
    component = record.channel_indices[channel] if record.channel_indices is not None else None
    slices = [read_image_2d(s["image"]) for s in meta["original"]["slices"]]
    return np.stack([voxels[..., component] if component is not None else voxels for voxels in slices], axis=2)


def evaluate(
    model: SegmentationModel | str | os.PathLike[str] | list[str | os.PathLike[str]],
    datalist: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    split: str = "test",
    device: str = "cpu",
    tta: bool | None = None,
    lesion_wise: bool = False,
    overlays: bool = True,
    progress: bool = True,
    echo: bool = True,
    uncertainty: bool = False,
    shard: Shard | str | None = None,
) -> EvaluationResult:
    """Predict and score every case of one split of a data list.

    Args:
        model: a loaded model, a run or bundle folder, or a list of folders (an ensemble).
        datalist: the data list JSON.
        out_dir: the evaluation output folder.
        split: ``test``, ``validation``, ``training`` or ``all`` (every labelled case).
        device: where the network runs (when ``model`` is a folder).
        tta: override the model's test-time augmentation (when ``model`` is a folder).
        lesion_wise: add the BraTS 2023 lesion-wise Dice and HD95 of the task's lesion structures (BraTS: TC, WT, ET).
        overlays: write an overlay PNG per case.
        progress: show a progress bar.
        echo: print the summary table at the end.
        uncertainty: write the uncertainty maps next to the predictions and add the per-case
            uncertainty scores to ``metrics.csv``.
        shard: score only shard K of N of the split's cases (``"K/N"``, 1-based; :mod:`pipeline.core.distributed`):
            their predictions and overlays, and ``shards/K-of-N.json`` (their metrics) instead of the
            reports, which ``merge-shards`` writes from every shard's file. Under torchrun each rank
            takes its own shard and rank 0 writes the reports.

    Raises:
        ConfigError: for an unknown or empty split.
    """
    started = time.perf_counter()
    out = Path(out_dir)
    wanted = Shard.parse(shard) if isinstance(shard, str) else shard
    loaded = load_datalist(datalist)
    if split == "unlabelled":
        raise ConfigError(datalist, "the unlabelled cases have no ground truth to evaluate against; use predict")
    records = loaded.cases(split)
    if not records:
        raise ConfigError(datalist, f"split {split!r} has no cases")
    if not isinstance(model, SegmentationModel):
        model = load_model(model, device=local_device(device), tta=tta)
    elif tta is not None:
        model.inferer.tta = bool(tta)

    predictions = out / PREDICTIONS_DIR
    check_outputs_spare_inputs(records, predictions, uncertainty=uncertainty)
    extra = {
        "datalist": str(Path(datalist).resolve()),
        "datalist_sha256": loaded.sha256,
        "split": split,
        "model": model_settings(model),
        "hd95_definition": HD95_DEFINITION if model.task.metrics == "volume" else HD95_VOXELS_DEFINITION if model.task.metrics == "volume-voxels" else None,
        "metric_set": model.task.metrics,
        "lesion_wise": lesion_wise,
        "uncertainty": uncertainty,
    }
    with process_group(wanted) as mine:
        items: list[tuple[int, dict[str, Any]]] = []
        conventions: set[str] = set()
        positions = shard_positions([record.case_id for record in records], mine)
        for position in tqdm(positions, desc=f"evaluate {split}", unit="case", disable=not progress or not is_rank_zero()):
            record = records[position]
            prediction, truth, truth_image = predict_labelled_case(model, record, uncertainty=uncertainty)
            seg_path, _, convention = write_case_prediction(prediction, predictions, task=model.task)
            write_case_uncertainty(prediction, predictions)
            planar = record.layout in PLANAR_LAYOUTS
            if seg_path.name.endswith((".nii", ".nii.gz")):
                conventions.add(convention)
            # Score what was written: the exported files, read back, against the ground-truth files.
            if planar:
                masks = read_planar_masks([predictions / name for name in case_mask_names(prediction.meta)])
                predicted = written_convention(model.task, convention).to_internal(masks)
            else:
                predicted, _ = read_internal_labels(seg_path, convention, task=model.task)
            spacing = tuple(float(z) for z in truth_image.header.get_zooms()[:3])
            scores = prediction.uncertainty.scores if prediction.uncertainty is not None else {}
            metrics = case_metrics(predicted, truth, spacing, lesion_wise=lesion_wise, task=model.task)
            items.append((position, {"case_id": record.case_id, **metrics, **scores}))
            if overlays and planar:
                image = _shown_planar_image(prediction.record, prediction.meta, model.task)
                dice = ", ".join(f"Dice {name} {metrics[f'dice_{name}']:.3f}" for name in model.task.structures)
                write_contour_overlay(out / OVERLAYS_DIR / f"{record.case_id}.png", image, predicted, truth, title=f"{record.case_id}: {dice}")
            elif overlays:
                write_overlay(
                    out / OVERLAYS_DIR / f"{record.case_id}.png",
                    prediction.cache_image,
                    prediction.cache_labels,
                    to_cache_grid(truth, prediction.meta),
                    prediction.meta["spacing"],
                    title=record.case_id,
                    task=model.task,
                )
        if mine is not None and rank_shard() is None:  # --shard: this part of the run; merge-shards writes the reports
            write_shard(
                out, mine, "evaluate", len(records), items, **{**extra, "model": {**extra["model"], "device": None}},
                task=model.task.to_dict(), run_dir=str(model.source) if model.source else None,
                shard_device=extra["model"]["device"], shard_conventions=sorted(conventions), shard_seconds=round(time.perf_counter() - started, 2),
            )
            rows = [row for _, row in items]
            table = summary_table(metrics_frame(rows), tuple(model.task.structures), model.task.metrics)
            if echo:
                print(table)
                print(f"shard {mine} -> {shard_file(out, mine)}; when every shard is done: brats-pipeline merge-shards --out {out}")
            return EvaluationResult(out_dir=out, metrics=metrics_frame(rows), summary={}, table=table)
        gathered = gather_to_all((items, sorted(conventions)))
        rows = [row for _, row in sorted((item for part, _ in gathered for item in part), key=lambda item: item[0])]
        table = summary_table(metrics_frame(rows), tuple(model.task.structures), model.task.metrics)
        summary: dict[str, Any] = {}
        if is_rank_zero():
            write_colour_tables(predictions, {name for _, names in gathered for name in names}, model.task)
            extra["seconds"] = round(time.perf_counter() - started, 2)
            summary = write_report(rows, out, run_dir=model.source, extra_summary=extra, task=model.task)
            if echo:
                print(table)
                print(f"reports -> {out}")
    return EvaluationResult(out_dir=out, metrics=metrics_frame(rows), summary=summary, table=table)


def merge_evaluation_shards(out_dir: str | os.PathLike[str], contexts: list[dict[str, Any]], rows: list[dict[str, Any]], echo: bool = True) -> EvaluationResult:
    """The reports (and the colour tables of ``predictions/``) of a ``--shard`` evaluation from its shards' parts (:func:`pipeline.core.distributed.read_shards`), as one run writes them."""
    out = Path(out_dir)
    first = contexts[0]
    task = task_from_dict(first["task"])
    write_colour_tables(out / PREDICTIONS_DIR, shard_conventions(contexts), task)
    extra = {key: value for key, value in first.items() if key not in {"task", "run_dir"} and not key.startswith("shard_")}
    extra["model"] = {**extra["model"], "device": shard_devices(contexts)}
    extra["seconds"] = round(sum(context["shard_seconds"] for context in contexts), 2)
    extra["shards"] = len(contexts)
    summary = write_report(rows, out, run_dir=first["run_dir"], extra_summary=extra, task=task)
    table = summary_table(metrics_frame(rows), tuple(task.structures), task.metrics)
    if echo:
        print(table)
        print(f"reports of {len(contexts)} shards -> {out}")
    return EvaluationResult(out_dir=out, metrics=metrics_frame(rows), summary=summary, table=table)
