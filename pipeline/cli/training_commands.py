"""The ``train`` command: one fold or every fold, with the bundle's training configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pipeline.cli.options import (
    EXISTING,
    PATH,
    ChoiceOf,
    Constant,
    FoldType,
    TrainingDefault,
    reports_errors,
)

__all__ = ["train"]


@click.command()
@click.option("--datalist", "datalist_path", required=True, type=EXISTING, help="Data list JSON (brats-pipeline datalist).")
@click.option("--cache", "cache_dir", required=True, type=EXISTING, help="Its preprocessed cache (brats-pipeline preprocess).")
@click.option("--mode", default=TrainingDefault("mode"), show_default=True, type=ChoiceOf(Constant("pipeline.networks", "MODES")), help="Slices, slice stacks or 3D patches.")
@click.option("--epochs", default=TrainingDefault("epochs"), show_default=True, type=click.IntRange(min=1), help="Training epochs.")
@click.option("--out", required=True, type=PATH, help="Run directory (config, provenance, checkpoints, logs).")
@click.option(
    "--fold",
    default=0,
    show_default=True,
    type=FoldType(),
    help="Cross-validation fold whose cases validate; none: no case validates and every non-test case trains "
    "(a final model; keep_weights last or ema).",
)
@click.option(
    "--folds",
    type=click.Choice(["all"]),
    default=None,
    help="all: train every fold of the data list, one after the other, into OUT/fold<k>/ (K times one fold's time; "
    "finished folds are skipped, an interrupted one resumes); replaces --fold.",
)
@click.option("--resume", is_flag=True, help="Continue from OUT/models/latest.pt.")
@click.option("--device", default="cpu", show_default=True, type=ChoiceOf(Constant("pipeline.training.workflow", "DEVICES")), help="Where to train.")
@click.option("--config", "config_files", multiple=True, type=EXISTING, help="Bundle override file merged after train.yaml (repeatable), e.g. configs/gpu_train.yaml.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Override any bundle key, e.g. --set batch_size=32 (repeatable).")
@click.option(
    "--tracking",
    default=None,
    metavar="mlflow|FILE",
    help="Experiment tracking as `monai.bundle run --tracking`: mlflow (training loss and validation Dice in OUT/mlruns.db) or a MONAI settings file.",
)
@reports_errors
def train(
    datalist_path: Path,
    cache_dir: Path,
    mode: str | None,
    epochs: int | None,
    out: Path,
    fold: int | None,
    folds: str | None,
    resume: bool,
    device: str,
    config_files: tuple[Path, ...],
    settings: tuple[str, ...],
    tracking: str | None,
) -> None:
    """Train a segmentation network with the bundle's configs/train.yaml.

    The same run as `python -m monai.bundle run training --workflow_name
    pipeline.training.workflow.TrainingWorkflow --config_file
    bundles/brats_segmentation/configs/train.yaml`, with these options filled in.
    With --folds all, every fold in turn (OUT/fold0, OUT/fold1, ...), for an ensemble.
    """
    from pipeline.training.workflow import (
        ensemble_command,
        parse_overrides,
        train_folds,
    )
    from pipeline.training.workflow import train as run_training

    options: dict[str, Any] = dict(
        datalist=datalist_path,
        cache_dir=cache_dir,
        out=out,
        mode=mode,
        epochs=epochs,
        resume=resume,
        device=device,
        config_files=config_files,
        overrides=parse_overrides(settings),
        tracking=tracking,
    )
    if folds == "all":
        run_dirs = train_folds(**options)
        click.echo(f"{len(run_dirs)} folds trained in {out}; predict with their ensemble:")
        click.echo(ensemble_command(run_dirs))
        return
    run_dir = run_training(fold=fold, **options)
    click.echo(f"run directory: {run_dir} (weights: {run_dir / 'models' / 'model.pt'})")
