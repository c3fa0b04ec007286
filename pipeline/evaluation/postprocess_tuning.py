"""Post-processing chosen by cross-validation, as nnU-Net does: the ``tune-postprocessing`` command.

After the folds of a cross-validation are trained, each run predicts its own validation cases with
post-processing off; the out-of-fold predictions of all folds are pooled and
:func:`select_postprocessing` decides, greedily and one step at a time, which
:class:`pipeline.inference.postprocess.PostProcessing` settings to keep:

1. ``keep_largest`` WT: only the largest whole-tumour component (yes/no);
2. ``min_component_voxels`` WT: whole-tumour components below a size removed;
3. ``fill_core_holes``: voxels the predicted core encloses labelled NEC (none, 3d, slices);
4. ``min_et_voxels``: a total ET below a threshold relabelled as NEC;
5. ``min_component_voxels`` TC, then ET.

Each step tries its candidates on top of the settings kept so far and keeps the best one only if
it raises the mean Dice, over the cases, of the regions the step can change (a WT step: WT, TC and
ET, since a removed WT component takes its core with it; a TC step: TC and ET; an ET step: ET).
A tie keeps the simpler setting. Dice follows the BraTS rule (both empty: 1), as
:mod:`pipeline.evaluation.metrics` scores. :func:`tune_postprocessing` writes the choice into every run
folder's ``inference.json`` (:func:`pipeline.inference.config.write_run_postprocessing`), so that
``predict``, ``evaluate`` and :func:`pipeline.inference.model.load_model` of those runs use it.

The steps are those of the BraTS glioma labels (WT, TC, ET, NEC): runs of another task are refused.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.errors import ConfigError
from pipeline.datasets.datalist import load_datalist
from pipeline.datasets.records import CaseRecord
from pipeline.evaluation.evaluate import predict_labelled_case
from pipeline.inference.config import (
    RUN_CONFIG,
    RUN_INFERENCE_CONFIG,
    model_config,
    run_training_setting,
    write_run_postprocessing,
)
from pipeline.inference.model import load_model
from pipeline.inference.postprocess import CORE_HOLE_MODES, PostProcessing
from pipeline.tasks.labels import labels_to_regions
from pipeline.tasks.task import DEFAULT_TASK

__all__ = [
    "COMPONENT_SIZES",
    "ET_THRESHOLDS",
    "PostProcessingChoice",
    "TuningResult",
    "foreground_crop",
    "region_dice",
    "select_postprocessing",
    "tune_postprocessing",
    "validation_cases",
]

#: Candidate minimum component sizes (voxels) of WT, TC and ET; 0 keeps every component.
COMPONENT_SIZES: tuple[int, ...] = (0, 20, 100, 500, 2000)

#: Candidate thresholds (voxels) below which a predicted ET becomes NEC; 0 is off.
ET_THRESHOLDS: tuple[int, ...] = (0, 50, 100, 200, 500, 1000)

#: Channel order of :func:`pipeline.tasks.labels.labels_to_regions` (and of :func:`region_dice`).
_REGIONS: tuple[str, ...] = ("TC", "WT", "ET")

#: A candidate must beat the current mean Dice by more than this to be kept (ties keep the simpler setting).
_TOLERANCE = 1e-9


def foreground_crop(predicted: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both label maps cut to the box around the foreground of either (exact for components and Dice).

    Outside that box both maps are background, so connected components and Dice do not change.
    Two empty maps become single background voxels.
    """
    predicted, truth = np.asarray(predicted, dtype=np.uint8), np.asarray(truth, dtype=np.uint8)
    if predicted.shape != truth.shape:
        raise ValueError(f"prediction shape {predicted.shape} differs from ground truth shape {truth.shape}")
    foreground = (predicted > 0) | (truth > 0)
    if not foreground.any():
        return np.zeros((1,) * predicted.ndim, np.uint8), np.zeros((1,) * truth.ndim, np.uint8)
    box = []
    for axis in range(foreground.ndim):
        hits = np.flatnonzero(foreground.any(axis=tuple(a for a in range(foreground.ndim) if a != axis)))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return predicted[tuple(box)].copy(), truth[tuple(box)].copy()


def region_dice(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Dice of TC, WT and ET (in that order) of two internal label maps; both empty scores 1 (BraTS).

    The Dice :mod:`pipeline.evaluation.metrics` reports (MONAI's ``compute_dice(ignore_empty=False)``), counted
    with NumPy: the search scores every candidate on every case.
    """
    pred, true = labels_to_regions(predicted).astype(bool), labels_to_regions(truth).astype(bool)
    scores = np.ones(len(_REGIONS))
    for index in range(len(_REGIONS)):
        total = np.count_nonzero(pred[index]) + np.count_nonzero(true[index])
        if total:
            scores[index] = 2.0 * np.count_nonzero(pred[index] & true[index]) / total
    return scores


@dataclass(frozen=True)
class _Step:
    """One greedy decision: a setting, its candidate values and the regions that judge it."""

    name: str
    values: tuple[Any, ...]
    judged_on: tuple[str, ...]
    apply: Callable[[PostProcessing, Any], PostProcessing]


def _keep_largest(region: str) -> Callable[[PostProcessing, Any], PostProcessing]:
    def apply(post: PostProcessing, keep: bool) -> PostProcessing:
        others = tuple(name for name in post.keep_largest if name != region)
        return replace(post, keep_largest=(*others, region) if keep else others)

    return apply


def _min_component(region: str) -> Callable[[PostProcessing, Any], PostProcessing]:
    def apply(post: PostProcessing, voxels: int) -> PostProcessing:
        return replace(post, min_component_voxels={**post.min_component_voxels, region: int(voxels)})

    return apply


def _steps(component_sizes: Sequence[int], et_thresholds: Sequence[int]) -> tuple[_Step, ...]:
    sizes, thresholds = tuple(sorted({0, *map(int, component_sizes)})), tuple(sorted({0, *map(int, et_thresholds)}))
    return (
        _Step("keep_largest WT", (False, True), ("TC", "WT", "ET"), _keep_largest("WT")),
        _Step("min_component_voxels WT", sizes, ("TC", "WT", "ET"), _min_component("WT")),
        _Step("fill_core_holes", CORE_HOLE_MODES, ("TC", "WT"), lambda post, mode: replace(post, fill_core_holes=mode)),
        _Step("min_et_voxels", thresholds, ("ET",), lambda post, voxels: replace(post, min_et_voxels=int(voxels))),
        _Step("min_component_voxels TC", sizes, ("TC", "ET"), _min_component("TC")),
        _Step("min_component_voxels ET", sizes, ("ET",), _min_component("ET")),
    )


@dataclass(frozen=True)
class PostProcessingChoice:
    """What :func:`select_postprocessing` chose, and why.

    Attributes:
        postprocessing: the chosen settings.
        table: one row per candidate tried: ``step``, ``value``, ``judged_on``, ``score`` (mean Dice
            of the judged regions), ``dice_TC``, ``dice_WT``, ``dice_ET`` (means over the cases)
            and ``kept``; the first row is no post-processing at all.
        before: mean Dice per region without post-processing.
        after: mean Dice per region with the chosen post-processing.
        cases: the number of cases it was chosen on.
    """

    postprocessing: PostProcessing
    table: pd.DataFrame
    before: dict[str, float]
    after: dict[str, float]
    cases: int

    def describe(self) -> str:
        """The choice and its Dice gain per region, in two lines."""
        post = self.postprocessing
        sizes = {name: size for name, size in post.min_component_voxels.items() if size}
        settings = (
            f"keep_largest {list(post.keep_largest)}, min_component_voxels {sizes or 0}, fill_core_holes {post.fill_core_holes}, min_et_voxels {post.min_et_voxels}"
            if not post.is_identity
            else "none (no step raised the mean Dice)"
        )
        gains = ", ".join(f"{name} {self.before[name]:.4f} -> {self.after[name]:.4f} ({self.after[name] - self.before[name]:+.4f})" for name in _REGIONS)
        return f"chosen post-processing: {settings}\nmean Dice over {self.cases} out-of-fold cases: {gains}"


def select_postprocessing(
    cases: Sequence[tuple[np.ndarray, np.ndarray]],
    component_sizes: Sequence[int] = COMPONENT_SIZES,
    et_thresholds: Sequence[int] = ET_THRESHOLDS,
    connectivity: int = 26,
) -> PostProcessingChoice:
    """Choose post-processing on out-of-fold predictions, greedily (see the module docstring).

    Args:
        cases: per case, the predicted internal labels *without* post-processing and the
            ground-truth internal labels (same shape; voxel sizes as inference sees them).
        component_sizes: candidate minimum component sizes (voxels); 0 is always tried.
        et_thresholds: candidate tiny-ET-to-NEC thresholds (voxels); 0 is always tried.
        connectivity: cc3d connectivity of the components (6, 18 or 26).

    Returns:
        The chosen :class:`PostProcessing` (identity when nothing helps), with the table of
        every candidate's mean Dice.

    Raises:
        ValueError: no cases, or a prediction and its ground truth of different shapes.

    Example:
        >>> truth = np.zeros((12, 12, 12), np.uint8); truth[2:6, 2:6, 2:6] = 2
        >>> predicted = truth.copy(); predicted[10, 10, 10] = 2     # a far-away speck
        >>> select_postprocessing([(predicted, truth)]).postprocessing.keep_largest
        ('WT',)
    """
    if not cases:
        raise ValueError("no cases to choose the post-processing on")
    pairs = [foreground_crop(predicted, truth) for predicted, truth in cases]

    def mean_dice(post: PostProcessing) -> np.ndarray:
        return np.mean([region_dice(post(predicted), truth) for predicted, truth in pairs], axis=0)

    def row(step: str, value: Any, judged_on: tuple[str, ...], dice: np.ndarray) -> dict[str, Any]:
        return {
            "step": step,
            "value": value,
            "judged_on": "+".join(judged_on),
            "score": _score(dice, judged_on),
            **{f"dice_{name}": float(dice[i]) for i, name in enumerate(_REGIONS)},
            "kept": False,
        }

    current = PostProcessing(connectivity=connectivity)
    current_dice = before = mean_dice(current)
    rows = [{**row("none", "-", _REGIONS, before), "kept": True}]
    for step in _steps(component_sizes, et_thresholds):
        baseline = _score(current_dice, step.judged_on)
        best: tuple[float, int, PostProcessing, np.ndarray] | None = None
        for value in step.values:
            candidate = step.apply(current, value)
            dice = current_dice if candidate == current else mean_dice(candidate)
            rows.append(row(step.name, value, step.judged_on, dice))
            if best is None or rows[-1]["score"] > best[0] + _TOLERANCE:  # ties keep the earlier, simpler value
                best = (rows[-1]["score"], len(rows) - 1, candidate, dice)
        assert best is not None
        if best[0] > baseline + _TOLERANCE:
            current, current_dice = best[2], best[3]
            rows[best[1]]["kept"] = True
    return PostProcessingChoice(
        postprocessing=current,
        table=pd.DataFrame(rows),
        before={name: float(before[i]) for i, name in enumerate(_REGIONS)},
        after={name: float(current_dice[i]) for i, name in enumerate(_REGIONS)},
        cases=len(pairs),
    )


def _score(dice: np.ndarray, judged_on: Sequence[str]) -> float:
    return float(np.mean([dice[_REGIONS.index(name)] for name in judged_on]))


def validation_cases(
    run_dir: str | os.PathLike[str],
    datalist: str | os.PathLike[str] | None = None,
    split: str | None = None,
) -> tuple[Path, list[CaseRecord]]:
    """The cases a run folder predicts out of fold: its fold's validation cases, from its ``config.json``.

    Args:
        run_dir: the run folder.
        datalist: a data list instead of the run's own.
        split: a data-list split instead of the run's fold's validation cases.

    Returns:
        The data list and its case records.

    Raises:
        ConfigError: naming the file when the run has no training config to take the data list or
            fold from, or when there is no case to predict.
    """

    path = Path(datalist) if datalist is not None else Path(str(run_training_setting(run_dir, "datalist")))
    if not path.is_file():
        raise ConfigError(path, f"data list of {run_dir} not found")
    listing = load_datalist(path)
    if split is not None:
        if split == "unlabelled":
            raise ConfigError(path, "the unlabelled cases have no ground truth to choose post-processing on")
        records = listing.cases(split)
        if not records:
            raise ConfigError(path, f"split {split!r} has no cases")
        return path, records
    fold = run_training_setting(run_dir, "fold")
    if fold is None:
        raise ConfigError(path, f"run {run_dir} trained on every case (no validation fold); give --split")
    records = listing.fold_split(int(fold))[1]
    if not records:
        raise ConfigError(path, f"fold {fold} of run {run_dir} has no validation cases to choose post-processing on; give --split")
    return path, records


@dataclass(frozen=True)
class TuningResult:
    """What :func:`tune_postprocessing` did.

    Attributes:
        choice: the chosen post-processing and the candidate table.
        case_ids: the pooled out-of-fold cases, per run folder.
        written: the ``inference.json`` files rewritten (none for a dry run).
    """

    choice: PostProcessingChoice
    case_ids: dict[str, list[str]]
    written: list[Path]


def tune_postprocessing(
    run_dirs: Sequence[str | os.PathLike[str]],
    datalist: str | os.PathLike[str] | None = None,
    split: str | None = None,
    device: str = "cpu",
    tta: bool | None = None,
    dry_run: bool = False,
    progress: bool = True,
    echo: Callable[[str], Any] | None = print,
) -> TuningResult:
    """Choose the post-processing of a cross-validation on its out-of-fold predictions and write it into each run.

    Every run folder predicts its validation cases (:func:`validation_cases`) with post-processing
    off, through :func:`pipeline.inference.model.load_model` and
    :func:`pipeline.evaluation.evaluate.predict_labelled_case` (the prediction of ``predict`` and
    ``evaluate``); :func:`select_postprocessing` chooses on the pooled cases.

    Args:
        run_dirs: the run folders (the folds of one cross-validation).
        datalist: a data list instead of each run's own.
        split: a data-list split instead of each run's fold's validation cases.
        device: where the networks run.
        tta: override the runs' test-time augmentation.
        dry_run: choose and report, write nothing.
        progress: show a progress bar.
        echo: where the candidate table and the choice are printed (``None``: nowhere).

    Raises:
        ConfigError: a folder that is not a run folder, a run without validation cases, or a case
            that two runs both predict; all checked before anything is predicted. A run of a
            task other than BraTS glioma's labels.
    """
    from tqdm.auto import tqdm

    if not run_dirs:
        raise ConfigError("--model", "give at least one run folder")
    started = time.perf_counter()
    plan: list[tuple[Path, Path, list[CaseRecord]]] = []
    owner: dict[str, Path] = {}
    for run_dir in map(Path, run_dirs):
        model_config(run_dir)  # a readable run or bundle folder...
        if not any((run_dir / name).is_file() for name in (RUN_INFERENCE_CONFIG, RUN_CONFIG)):  # ...and a run folder
            raise ConfigError(run_dir, f"not a run folder (no {RUN_INFERENCE_CONFIG} or {RUN_CONFIG}): the choice is written into a run's {RUN_INFERENCE_CONFIG}")
        listing, records = validation_cases(run_dir, datalist, split)
        for record in records:
            if record.case_id in owner:
                raise ConfigError(run_dir, f"case {record.case_id} is also predicted by {owner[record.case_id]}; give the folds of one cross-validation")
            owner[record.case_id] = run_dir
        plan.append((run_dir, listing, records))

    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for run_dir, _, records in plan:
        model = load_model(run_dir, device=device, tta=tta, postprocessing=PostProcessing())
        if (model.task.classes, model.task.regions) != (DEFAULT_TASK.classes, DEFAULT_TASK.regions):
            raise ConfigError(run_dir, f"tune-postprocessing chooses among BraTS glioma steps (WT, TC, ET, NEC); task {model.task.name} is not supported")
        for record in tqdm(records, desc=f"predict {run_dir.name}", unit="case", disable=not progress):
            prediction, truth, _ = predict_labelled_case(model, record)
            pairs.append(foreground_crop(prediction.labels, truth))
    choice = select_postprocessing(pairs)
    case_ids = {str(run_dir): [record.case_id for record in records] for run_dir, _, records in plan}

    written: list[Path] = []
    if not dry_run:
        chosen = {"_target_": f"{PostProcessing.__module__}.{PostProcessing.__name__}", **choice.postprocessing.to_config()}
        record = {
            "chosen_on": case_ids,
            "datalists": sorted({str(listing.resolve()) for _, listing, _ in plan}),
            "mean_dice_before": choice.before,
            "mean_dice_after": choice.after,
            "candidates": choice.table.to_dict(orient="records"),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        written = [write_run_postprocessing(run_dir, chosen, record) for run_dir, _, _ in plan]
    if echo is not None:
        echo(choice.table.to_string(index=False, float_format=lambda value: f"{value:.4f}"))
        echo(choice.describe())
        for path in written:
            echo(f"written: {path}")
        if dry_run:
            echo("dry run: nothing written")
        echo(f"{time.perf_counter() - started:.1f} s")
    return TuningResult(choice=choice, case_ids=case_ids, written=written)
