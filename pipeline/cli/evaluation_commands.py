"""The ``evaluate`` and ``tune-postprocessing`` commands: a trained model scored against the ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pipeline.cli.options import (
    EXISTING,
    MODELS,
    PATH,
    UNCERTAINTY,
    ChoiceOf,
    Constant,
    reports_errors,
    shard_option,
)

__all__ = ["evaluate", "tune_postprocessing"]


@click.command()
@MODELS
@click.option("--datalist", "datalist_path", required=True, type=EXISTING, help="Data list JSON with ground truth.")
@click.option("--split", default="test", show_default=True, type=ChoiceOf(Constant("pipeline.datasets.datalist", "SCORED_SPLITS")), help="Cases to score.")
@click.option("--out", required=True, type=PATH, help="Evaluation folder: metrics.csv, summary.json, plots/, overlays/, predictions/.")
@click.option("--device", default="cpu", show_default=True, help="Where the network runs: cpu, cuda, cuda:N.")
@click.option("--tta/--no-tta", default=None, help="Mirrored test-time augmentation (default: the model config's setting).")
@click.option("--lesion-wise", is_flag=True, help="Add BraTS 2023 lesion-wise Dice and HD95 (TC, WT, ET).")
@click.option("--no-overlays", is_flag=True, help="Skip the per-case overlay PNGs.")
@UNCERTAINTY
@shard_option("writes their predictions and OUT/shards/K-of-N.json (their metrics) instead of the reports; then merge-shards.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@reports_errors
def evaluate(
    model_dirs: tuple[Path, ...],
    datalist_path: Path,
    split: str,
    out: Path,
    device: str,
    tta: bool | None,
    lesion_wise: bool,
    no_overlays: bool,
    uncertainty: bool,
    shard: Any,
    no_progress: bool,
) -> None:
    """Score a model per patient (Dice, HD95, sensitivity, specificity, precision, IoU, volumes).

    Predictions are written as predict writes them and scored on the original grid; HD95 is
    the BraTS 2023 evaluation's (surface elements weighted by area, max of the two directed 95th
    percentiles, in mm). The task decides the metric set:
    Kaggle LGG scores each patient's volume in voxels, 2D image folders each image (Dice, IoU,
    pixel accuracy, sensitivity, specificity, precision).

    Under torchrun each process scores its share of the cases (its own GPU with --device cuda) and
    rank 0 gathers the per-case metrics and writes the reports, the same files as one process.
    """
    from pipeline.evaluation.evaluate import evaluate as run_evaluate

    run_evaluate(
        list(model_dirs),
        datalist_path,
        out,
        split=split,
        device=device,
        tta=tta,
        lesion_wise=lesion_wise,
        overlays=not no_overlays,
        progress=not no_progress,
        uncertainty=uncertainty,
        shard=shard,
    )


@click.command(name="tune-postprocessing")
@click.option(
    "--model", "model_dirs", required=True, multiple=True, type=EXISTING, help="Run folder of one fold (repeat for every fold of the cross-validation)."
)
@click.option("--datalist", "datalist_path", default=None, type=EXISTING, help="Data list instead of each run's own (its config.json).")
@click.option(
    "--split",
    default=None,
    type=ChoiceOf(Constant("pipeline.datasets.datalist", "SCORED_SPLITS")),
    help="Cases to choose on instead of each run's fold's validation cases.",
)
@click.option("--device", default="cpu", show_default=True, help="Where the networks run: cpu, cuda, cuda:N.")
@click.option("--tta/--no-tta", default=None, help="Mirrored test-time augmentation (default: each run's setting).")
@click.option("--dry-run", is_flag=True, help="Choose and print the table, write nothing.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@reports_errors
def tune_postprocessing(
    model_dirs: tuple[Path, ...],
    datalist_path: Path | None,
    split: str | None,
    device: str,
    tta: bool | None,
    dry_run: bool,
    no_progress: bool,
) -> None:
    """Choose post-processing on the folds' out-of-fold predictions, as nnU-Net does; run after training the folds.

    Each run predicts its own validation cases without post-processing; on all of them pooled,
    keep-largest WT, minimum WT/TC/ET component sizes and the tiny-ET-to-NEC threshold are
    decided one at a time, each kept only if it raises the mean Dice. The candidate table and the
    choice are printed, and the choice becomes the `postprocessing` of every run's inference.json
    (the previous one kept in it), which predict, evaluate and load_model then use.
    """
    from pipeline.evaluation.postprocess_tuning import tune_postprocessing as run_tuning

    run_tuning(
        model_dirs,
        datalist=datalist_path,
        split=split,
        device=device,
        tta=tta,
        dry_run=dry_run,
        progress=not no_progress,
        echo=click.echo,
    )
