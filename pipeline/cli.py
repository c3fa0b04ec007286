"""The ``brats-pipeline`` command line: a thin click group over the typed stage functions."""

from __future__ import annotations

import functools
import importlib
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pipeline.errors import PipelineError

__all__ = ["main"]

_PATH = click.Path(path_type=Path)
_EXISTING = click.Path(exists=True, path_type=Path)


class _Constant:
    """A constant of the module that defines it, imported when first needed, so ``--help`` stays fast.

    Usable as a click ``default`` (called to get the value; ``--help`` shows ``str()`` of it).

    Args:
        module: the module that defines the constant, e.g. ``pipeline.networks``.
        name: the constant's name in it, e.g. ``MODES``.
    """

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self) -> Any:
        return getattr(importlib.import_module(self.module), self.name)

    def __str__(self) -> str:
        return str(self())


class _ChoiceOf(click.Choice):
    """A :class:`click.Choice` among the values of a :class:`_Constant` (a sequence, or a dict's keys).

    Args:
        constant: where the choices are defined.
    """

    def __init__(self, constant: _Constant) -> None:
        self._constant = constant
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self._constant())


_SIZES = _ChoiceOf(_Constant("pipeline.synth.grid", "GRIDS"))


class _TaskOption(click.Option):
    """``--task``: its help lists the built-in tasks (:data:`pipeline.tasks.TASKS`), imported only when help is shown."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        from pipeline.tasks import TASKS

        base = self.help
        self.help = f"{base} Built-in: {', '.join(TASKS)}."
        try:
            return super().get_help_record(ctx)
        finally:
            self.help = base


def _channel_list(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    """``flair,t2`` -> ``("flair", "t2")``."""
    return tuple(part.strip() for part in value.split(",") if part.strip()) if value else None

class _ShardType(click.ParamType):
    """``K/N`` -> :class:`pipeline.sharding.Shard` (a bad value: click's one-line usage error, exit status 2)."""

    name = "K/N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from pipeline.sharding import Shard

        if isinstance(value, Shard):
            return value
        try:
            return Shard.parse(str(value))
        except PipelineError as err:
            self.fail(err.problem, param, ctx)


def _shard_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--shard",
        type=_ShardType(),
        default=None,
        help=f"Only shard K of N (1-based: 1/4 ... 4/4) of the cases: sorted by id, every N-th from the K-th; {what}",
    )


_MODELS = click.option(
    "--model",
    "model_dirs",
    required=True,
    multiple=True,
    type=_EXISTING,
    help="Run folder (inference.json + models/model.pt) or bundle folder (configs/inference.yaml + models/); "
    "repeat for an ensemble (e.g. every fold of a train --folds all run): probabilities averaged.",
)

_UNCERTAINTY = click.option(
    "--uncertainty",
    is_flag=True,
    help="Also write float32 uncertainty maps in [0, 1] (<case>_uncertainty.nii.gz: entropy; <case>_disagreement.nii.gz: "
    "disagreement of the TTA passes / ensemble members) and per-case uncertainty scores.",
)


def _reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a :class:`PipelineError`, or an operating-system error on a file (disk full, permission,
    a file where a folder should be), into one line on stderr and exit status 1 (a traceback with --debug)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (PipelineError, OSError) as err:
            if click.get_current_context().find_root().obj.get("debug"):
                traceback.print_exc()
            if isinstance(err, OSError):
                err = PipelineError(err.filename or "input/output", err.strerror or str(err))
            click.echo(f"error: {err}", err=True)
            sys.exit(1)

    return wrapper


class _EchoWarnings(logging.Handler):
    """Print the pipeline's warnings (``warning: <path>: <reason>``) on stderr, whatever logging the host process set up."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:  # logging must never break a command
            self.handleError(record)


def _show_warnings() -> None:
    logger = logging.getLogger("pipeline")
    if not any(isinstance(handler, _EchoWarnings) for handler in logger.handlers):
        handler = _EchoWarnings(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show the full traceback when a command fails.")
@click.version_option(package_name="brats-pipeline")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Brain-tumour segmentation of multi-modal MRI (BraTS) with MONAI.

    Typical order: synth (or your own release) -> datalist -> preprocess -> train -> evaluate / predict.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    _show_warnings()


@main.command()
@click.option("--out", default=Path("data/synthetic"), show_default=True, type=_PATH, help="Folder for the cohort (created if needed).")
@click.option("--cases", default=24, show_default=True, type=click.IntRange(min=1, max=100_000), help="Number of cases.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Cohort seed: the same seed gives identical files.")
@click.option(
    "--size",
    default="small",
    show_default=True,
    type=_SIZES,
    help="full: 240x240x155 at 1 mm (like BraTS); small: 96x96x62 at 2.5 mm; tiny: 48x48x32 at 5 mm.",
)
@click.option(
    "--task",
    default="brats-glioma",
    show_default=True,
    type=_ChoiceOf(_Constant("pipeline.synth.layouts", "LAYOUTS")),
    help="Layout and labels of the cohort: brats-glioma and whole-tumour: BraTS 2021; brats2024-post-treatment: "
    "BraTS 2023 naming, a resection cavity (4); brats2024-ped: BraTS-PED naming, 1 ET, 2 NETC, 3 CC, 4 ED; "
    "meningioma-rt: BraTS-MEN-RT naming, T1ce and the GTV only.",
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@_reports_errors
def synth(out: Path, cases: int, seed: int, size: str, task: str, no_progress: bool) -> None:
    """Generate a synthetic BraTS 2021-style cohort (the default data for the demo and tests).

    Writes OUT/BraTS2021_NNNNN/BraTS2021_NNNNN_{t1,t1ce,t2,flair,seg}.nii.gz: MNI152 brains with
    a glioma each (labels 0/1/2/4), int16 images with the BraTS header (L-P-S, 1 mm at full size);
    --task writes another release's layout and labels. Case k depends only on the seed and k;
    finished cases are skipped, so a rerun completes a cohort.
    """
    from pipeline.synth import generate_cohort

    folders = generate_cohort(out, cases=cases, seed=seed, size=size, progress=not no_progress, task=task)
    click.echo(f"{len(folders)} synthetic cases ({size}, seed {seed}, {task}) in {out}")


@main.command()
@click.option("--datalist", required=True, type=_EXISTING, help="Data list JSON (from `brats-pipeline datalist`).")
@click.option("--cache", "cache_dir", required=True, type=_PATH, help="Cache folder to build or complete.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Cases processed in parallel.")
@click.option(
    "--splits",
    multiple=True,
    type=_ChoiceOf(_Constant("pipeline.datalist", "SPLITS")),
    help="Data-list splits to preprocess (repeat the option); default: all of them.",
)
@click.option("--margin", default=_Constant("pipeline.preprocess", "DEFAULT_MARGIN"), show_default=True, type=click.IntRange(min=0), help="Voxels kept around the brain box.")
@click.option("--allow-resection-cavity", is_flag=True, help="Map the BraTS 2024 resection-cavity label 4 to background instead of refusing it.")
@_shard_option("several machines fill one cache, then a run without --shard writes cache.json (and builds any case left).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@_reports_errors
def preprocess(
    datalist: Path,
    cache_dir: Path,
    workers: int,
    splits: tuple[str, ...],
    margin: int,
    allow_resection_cavity: bool,
    shard: Any,
    no_progress: bool,
) -> None:
    """Build the memory-mappable training cache from a data list.

    Each case is reoriented to RAS (no resampling), cropped to the brain, z-scored per channel
    and stored as CACHE/<case>/{image.npy,label.npy,meta.json}, with the data list's task's
    channels and labels. Finished cases are skipped, so an interrupted run resumes.
    With --shard K/N only that shard's cases are built and cache.json is left alone.
    """
    from pipeline.preprocess import preprocess_datalist

    summary = preprocess_datalist(
        datalist,
        cache_dir,
        workers=workers,
        progress=not no_progress,
        splits=splits or None,
        margin=margin,
        allow_resection_cavity=allow_resection_cavity,
        shard=shard,
    )
    click.echo(str(summary))


@main.command()
@click.option("--data-root", required=True, type=_PATH, help="Release folder: BraTS 2017-2021, 2023+, MSD Task01, or a mix.")
@click.option("--out", required=True, type=_PATH, help="Data list JSON to write.")
@click.option("--folds", default=5, show_default=True, type=click.IntRange(min=1), help="Cross-validation folds.")
@click.option("--test-fraction", default=0.2, show_default=True, type=click.FloatRange(0, 1, max_open=True), help="Share of labelled cases held out as the test set.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the patient shuffle.")
@click.option("--skip-bad", is_flag=True, help="Leave bad cases out (listed as warnings) instead of failing.")
@click.option(
    "--map-resection-cavity", "--allow-resection-cavity", is_flag=True, help="Accept BraTS 2024 label 4 (resection cavity), mapped to background."
)
@click.option(
    "--task",
    cls=_TaskOption,
    default=None,
    metavar="NAME|FILE",
    help="What goes in and comes out: a built-in task or a task file (.json/.yaml); stored in the data list. "
    "Default: kaggle-lgg for Kaggle LGG patient folders, image-mask-2d (or image-mask-2d-rgb for RGB images) for 2D "
    "image/mask folders, else brats-glioma. BraTS-PED labels are read only with --task brats2024-ped.",
)
@click.option(
    "--channels",
    callback=_channel_list,
    metavar="flair[,t2...]",
    help="Read only these of the task's channels, in this order (e.g. --task whole-tumour --channels flair).",
)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Processes validating cases in parallel.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@_reports_errors
def datalist(
    data_root: Path,
    out: Path,
    folds: int,
    test_fraction: float,
    seed: int,
    skip_bad: bool,
    map_resection_cavity: bool,
    task: str | None,
    channels: tuple[str, ...] | None,
    workers: int,
    no_progress: bool,
) -> None:
    """Discover and validate every case of a release and write patient-level folds.

    Every file is read and checked first; without --skip-bad any bad case stops the command
    and nothing is written. Each case needs the files of the task's channels, and its labels
    must be the task's classes. Paths in the JSON are relative to the data root. Besides the
    BraTS and MSD layouts, a folder of Kaggle LGG patients (TIFF slices, one case per patient)
    and a folder of 2D images with masks (images/ + masks/, or NAME.png + NAME_mask.png; one
    case per image) are recognised.
    """
    from pipeline.datalist import SPLITS, build_datalist

    payload = build_datalist(
        data_root,
        out,
        folds=folds,
        test_fraction=test_fraction,
        seed=seed,
        skip_bad=skip_bad,
        allow_resection_cavity=map_resection_cavity,
        progress=not no_progress,
        workers=workers,
        task=task,
        channels=channels,
    )
    counts = ", ".join(f"{len(payload[split])} {split}" for split in SPLITS)
    click.echo(f"{out}: {counts} ({payload['release']}, {payload['num_folds']} folds, task {payload['task']['name']})")


@main.command()
@click.option("--datalist", "datalist_path", required=True, type=_EXISTING, help="Data list JSON (brats-pipeline datalist).")
@click.option("--cache", "cache_dir", required=True, type=_EXISTING, help="Its preprocessed cache (brats-pipeline preprocess).")
@click.option("--mode", required=True, type=_ChoiceOf(_Constant("pipeline.networks", "MODES")), help="Slices, slice stacks or 3D patches.")
@click.option("--epochs", required=True, type=click.IntRange(min=1), help="Training epochs.")
@click.option("--out", required=True, type=_PATH, help="Run directory (config, provenance, checkpoints, logs).")
@click.option("--fold", default=0, show_default=True, type=click.IntRange(min=0), help="Cross-validation fold whose cases validate.")
@click.option(
    "--folds",
    type=click.Choice(["all"]),
    default=None,
    help="all: train every fold of the data list, one after the other, into OUT/fold<k>/ (K times one fold's time; "
    "finished folds are skipped, an interrupted one resumes); replaces --fold.",
)
@click.option("--resume", is_flag=True, help="Continue from OUT/models/latest.pt.")
@click.option("--device", default="cpu", show_default=True, type=_ChoiceOf(_Constant("pipeline.training", "DEVICES")), help="Where to train.")
@click.option("--config", "config_files", multiple=True, type=_EXISTING, help="Bundle override file merged after train.yaml (repeatable), e.g. configs/gpu_train.yaml.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Override any bundle key, e.g. --set batch_size=32 (repeatable).")
@click.option(
    "--tracking",
    default=None,
    metavar="mlflow|FILE",
    help="Experiment tracking as `monai.bundle run --tracking`: mlflow (training loss and validation Dice in OUT/mlruns.db) or a MONAI settings file.",
)
@_reports_errors
def train(
    datalist_path: Path,
    cache_dir: Path,
    mode: str,
    epochs: int,
    out: Path,
    fold: int,
    folds: str | None,
    resume: bool,
    device: str,
    config_files: tuple[Path, ...],
    settings: tuple[str, ...],
    tracking: str | None,
) -> None:
    """Train a segmentation network with the bundle's configs/train.yaml.

    The same run as `python -m monai.bundle run training --workflow_name
    pipeline.training.TrainingWorkflow --config_file
    bundles/brats_segmentation/configs/train.yaml`, with these options filled in.
    With --folds all, every fold in turn (OUT/fold0, OUT/fold1, ...), for an ensemble.
    """
    from pipeline.training import ensemble_command, parse_overrides, train as run_training, train_folds

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
    click.echo(f"run directory: {run_dir} (best weights: {run_dir / 'models' / 'model.pt'})")


@main.command()
@_MODELS
@click.option(
    "--input",
    "input_path",
    required=True,
    type=_EXISTING,
    help="Case folder, MSD 4D image, data list JSON or data root; for a 2D task also a Kaggle LGG patient folder or one 2D image.",
)
@click.option("--out", required=True, type=_PATH, help="Folder for the predictions (NIfTI; a 2D task's masks in their own format).")
@click.option("--device", default="cpu", show_default=True, help="Where the network runs: cpu, cuda, cuda:N.")
@click.option("--tta/--no-tta", default=None, help="Mirrored test-time augmentation (default: the model config's setting).")
@click.option(
    "--label-convention",
    default="auto",
    show_default=True,
    type=_ChoiceOf(_Constant("pipeline.api", "OUTPUT_CONVENTIONS")),
    help="Labels written: auto = each case's own (0/1/2/4 for 2017-2021, 0/1/2/3 for 2023+, MSD's for MSD); "
    "or one of the model's task's conventions.",
)
@click.option("--probabilities", is_flag=True, help="Also write probability maps (<case>_probabilities.nii.gz, 8-bit scaled to [0, 1]).")
@_UNCERTAINTY
@click.option("--submission-names", is_flag=True, help="Name files <case_id>.nii.gz as the BraTS portals expect (default <case_id>_seg.nii.gz).")
@_shard_option("writes OUT/shards/K-of-N.json instead of predictions.json; then merge-shards.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@_reports_errors
def predict(
    model_dirs: tuple[Path, ...],
    input_path: Path,
    out: Path,
    device: str,
    tta: bool | None,
    label_convention: str,
    probabilities: bool,
    uncertainty: bool,
    submission_names: bool,
    shard: Any,
    no_progress: bool,
) -> None:
    """Segment cases (with or without ground truth) into NIfTI files for 3D Slicer.

    Each segmentation is uint8 on exactly the input's grid (shape, affine, qform/sform, voxel
    order), with a Slicer colour table (brats_<convention>.ctbl) next to it. A Kaggle LGG
    model writes OUT/<patient>/<patient>_<n>_mask.tif (0/255) and OUT/<patient>_seg.nii.gz; a 2D
    image model OUT/masks/<name>.png (0/255, each image's size).

    Under torchrun (torchrun --nproc-per-node N -m pipeline predict ... --device cuda) each process
    segments its share of the cases on its own GPU (LOCAL_RANK; CPU when --device cpu) and rank 0
    writes predictions.json.
    """
    from pipeline.predict import predict as run_predict

    summary = run_predict(
        list(model_dirs),
        input_path,
        out,
        device=device,
        tta=tta,
        label_convention=label_convention,
        probabilities=probabilities,
        submission_names=submission_names,
        progress=not no_progress,
        uncertainty=uncertainty,
        shard=shard,
    )
    click.echo(str(summary))


@main.command()
@_MODELS
@click.option("--datalist", "datalist_path", required=True, type=_EXISTING, help="Data list JSON with ground truth.")
@click.option("--split", default="test", show_default=True, type=_ChoiceOf(_Constant("pipeline.datalist", "SCORED_SPLITS")), help="Cases to score.")
@click.option("--out", required=True, type=_PATH, help="Evaluation folder: metrics.csv, summary.json, plots/, overlays/, predictions/.")
@click.option("--device", default="cpu", show_default=True, help="Where the network runs: cpu, cuda, cuda:N.")
@click.option("--tta/--no-tta", default=None, help="Mirrored test-time augmentation (default: the model config's setting).")
@click.option("--lesion-wise", is_flag=True, help="Add BraTS 2023 lesion-wise Dice and HD95 (TC, WT, ET).")
@click.option("--no-overlays", is_flag=True, help="Skip the per-case overlay PNGs.")
@_UNCERTAINTY
@_shard_option("writes their predictions and OUT/shards/K-of-N.json (their metrics) instead of the reports; then merge-shards.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@_reports_errors
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
    from pipeline.evaluate import evaluate as run_evaluate

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


@main.command(name="merge-shards")
@click.option("--out", required=True, type=_EXISTING, help="The --out of the predict or evaluate shards (holding shards/K-of-N.json).")
@_reports_errors
def merge_shards(out: Path) -> None:
    """Combine the shards of a predict or evaluate run made with --shard K/N.

    Checks that shards 1..N of one run are all in OUT/shards/ (same model, input or data list
    and split, every case once), then writes what one unsharded run writes: predictions.json
    (predict) or metrics.csv, summary.json and plots/ (evaluate), cases in the run's order.
    """
    from pipeline.sharding import merge_shards as run_merge

    click.echo(f"merged -> {run_merge(out)}")


@main.command(name="tune-postprocessing")
@click.option(
    "--model", "model_dirs", required=True, multiple=True, type=_EXISTING, help="Run folder of one fold (repeat for every fold of the cross-validation)."
)
@click.option("--datalist", "datalist_path", default=None, type=_EXISTING, help="Data list instead of each run's own (its config.json).")
@click.option(
    "--split",
    default=None,
    type=_ChoiceOf(_Constant("pipeline.datalist", "SCORED_SPLITS")),
    help="Cases to choose on instead of each run's fold's validation cases.",
)
@click.option("--device", default="cpu", show_default=True, help="Where the networks run: cpu, cuda, cuda:N.")
@click.option("--tta/--no-tta", default=None, help="Mirrored test-time augmentation (default: each run's setting).")
@click.option("--dry-run", is_flag=True, help="Choose and print the table, write nothing.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@_reports_errors
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
    from pipeline.postprocess_selection import tune_postprocessing as run_tuning

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


@main.command()
@click.option("--out", default=Path("outputs/demo"), show_default=True, type=_PATH, help="Folder for the run, the evaluation and demo.json.")
@click.option("--data", "data_dir", default=Path("data/synthetic"), show_default=True, type=_PATH, help="Synthetic cohort folder (generated or completed).")
@click.option("--datalist", "datalist_path", default=Path("data_lists/synthetic.json"), show_default=True, type=_PATH, help="Its data list (kept when it lists exactly the cohort).")
@click.option("--cache", "cache_dir", default=Path("cache/synthetic"), show_default=True, type=_PATH, help="Preprocessed cache (built or completed).")
@click.option("--cases", default=24, show_default=True, type=click.IntRange(min=4), help="Cases in the synthetic cohort.")
@click.option("--size", default="small", show_default=True, type=_SIZES, help="Synthetic case size.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Cohort and split seed.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1), help="Preprocessing processes (training keeps the bundle's loader settings).")
@click.option("--epochs", default=None, type=click.IntRange(min=1), help="Training epochs (default: configs/demo.yaml's).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Override any bundle key of the training, e.g. --set samples_per_epoch=800.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bars.")
@_reports_errors
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
    from pipeline.training import parse_overrides

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


@main.command(name="export")
@click.option("--model", "model_dir", required=True, type=_EXISTING, help="Run folder (inference.json + models/model.pt) or bundle folder (configs/inference.yaml + models/).")
@click.option("--format", "export_format", default="torchscript", show_default=True, type=_ChoiceOf(_Constant("pipeline.export", "FORMATS")), help="TorchScript (MONAI ckpt_export) or ONNX.")
@click.option("--out", default=None, type=_PATH, help="File to write (default: MODEL/models/model.ts or model.onnx).")
@click.option("--tolerance", default=_Constant("pipeline.export", "DEFAULT_TOLERANCE"), show_default=True, type=click.FloatRange(min=0), help="Largest logit difference from PyTorch accepted.")
@_reports_errors
def export_command(model_dir: Path, export_format: str, out: Path | None, tolerance: float) -> None:
    """Export a trained network to TorchScript or ONNX and check it reproduces PyTorch.

    TorchScript goes through MONAI's ckpt_export (metadata.json and the config embedded);
    ONNX through torch.onnx.export with dynamic batch and spatial sizes (input `image`,
    output `logits`). A bundle folder holding only models/model.ts still loads for predict.
    """
    from pipeline.export import export_model

    click.echo(str(export_model(model_dir, export_format, out=out, tolerance=tolerance)))
