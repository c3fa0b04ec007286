"""The ``brats-pipeline`` command line: a thin click group over the typed stage functions.

Each command lives in the module of its group (:mod:`pipeline.cli.data_commands`,
:mod:`pipeline.cli.training_commands`, :mod:`pipeline.cli.inference_commands`,
:mod:`pipeline.cli.evaluation_commands`; ``demo`` here) and imports its stage when it runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.data_commands import datalist, prepare, preprocess, synth
from pipeline.cli.evaluation_commands import evaluate, tune_postprocessing
from pipeline.cli.inference_commands import export_command, merge_shards, predict
from pipeline.cli.options import PATH, SIZES, reports_errors, show_warnings
from pipeline.cli.training_commands import train

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show the full traceback when a command fails.")
@click.version_option(package_name="brats-pipeline")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Brain-tumour segmentation of multi-modal MRI (BraTS) with MONAI.

    Typical order: synth (or your own release) -> datalist -> preprocess -> train -> evaluate / predict;
    raw scans of a new patient: prepare -> predict.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    show_warnings()


@click.command()
@click.option("--out", default=Path("outputs/demo"), show_default=True, type=PATH, help="Folder for the run, the evaluation and demo.json.")
@click.option("--data-root", "--data", "data_dir", default=Path("data/synthetic"), show_default=True, type=PATH, help="Synthetic cohort folder (generated or completed).")
@click.option("--datalist", "datalist_path", default=Path("data_lists/synthetic.json"), show_default=True, type=PATH, help="Its data list (kept when it lists exactly the cohort).")
@click.option("--cache", "cache_dir", default=Path("cache/synthetic"), show_default=True, type=PATH, help="Preprocessed cache (built or completed).")
@click.option("--cases", default=24, show_default=True, type=click.IntRange(min=4), help="Cases in the synthetic cohort.")
@click.option("--size", default="small", show_default=True, type=SIZES, help="Synthetic case size.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Cohort and split seed.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1), help="Preprocessing processes (training keeps the bundle's loader settings).")
@click.option("--epochs", default=None, type=click.IntRange(min=1), help="Training epochs (default: configs/demo.yaml's).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Override any bundle key of the training, e.g. --set samples_per_epoch=800.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bars.")
@reports_errors
def demo(
    out: Path,
    data_dir: Path,
    datalist_path: Path,
    cache_dir: Path,
    cases: int,
    size: str,
    seed: int,
    workers: int,
    epochs: int | None,
    settings: tuple[str, ...],
    no_progress: bool,
) -> None:
    """Run the whole pipeline on the synthetic cohort on CPU (what `make demo` runs).

    Generates the cohort, writes its data list, preprocesses, trains the CPU configuration
    (configs/train.yaml + configs/demo.yaml), evaluates the held-out test patients and prints
    a summary. Finished stages are reused: a rerun skips or resumes them.
    """
    from pipeline.demo import run_demo
    from pipeline.training.workflow import parse_overrides

    run_demo(
        out_dir=out,
        data_dir=data_dir,
        datalist=datalist_path,
        cache_dir=cache_dir,
        cases=cases,
        size=size,
        seed=seed,
        workers=workers,
        epochs=epochs,
        overrides=parse_overrides(settings),
        progress=not no_progress,
        echo=click.echo,
    )


for _command in (synth, datalist, preprocess, prepare, train, predict, evaluate, merge_shards, tune_postprocessing, demo, export_command):
    main.add_command(_command)
