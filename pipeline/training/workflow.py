"""The training run: the bundle's ``configs/train.yaml`` executed by MONAI's ``ConfigWorkflow``, plus the pieces it imports.

The bundle config is the one definition of a training run. :func:`train` (behind
``brats-pipeline train`` and ``make train``) only fills in paths and overrides and runs the same
workflow that ``python -m monai.bundle run training --workflow_name pipeline.training.workflow.TrainingWorkflow
--config_file ...`` runs (:class:`TrainingWorkflow`: MONAI's ``ConfigWorkflow`` that hands
:func:`start_run` its parser). The helpers below
are what the config calls: fold case selection, optimiser and schedule builders, and
:func:`start_run`, which lays out the run directory::

    RUN_DIR/config.json        the merged raw bundle config, overrides applied (reloadable with ConfigParser)
    RUN_DIR/inference.json     the bundle's inference.yaml with this run's network keys and checkpoint
                               (pipeline.inference.config): the run folder loads as a bundle folder does
    RUN_DIR/provenance.json    package versions, git commit, data list sha256, command line, seed
    RUN_DIR/models/model.pt    the kept weights (plain state_dict; keep_weights: last, ema or best)
    RUN_DIR/models/latest.pt   full training state, for --resume
    RUN_DIR/logs/train.log     the log
    RUN_DIR/tensorboard/       TensorBoard events (losses, learning rate, Dice, samples/s, overlays)

The checkpoints' names, loading and the resume decision live in :mod:`pipeline.core.checkpoints`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import platform
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from pipeline.core.checkpoints import (
    DEFAULT_EMA_DECAY,
    DEFAULT_KEPT_WEIGHTS,
    KEPT,
    LATEST,
    check_ema_decay,
    check_kept_weights,
    decide_resume,
    ema_state,
    finished_epochs,
    load_training_state,
)
from pipeline.core.distributed import is_rank_zero, world_size
from pipeline.core.errors import ConfigError, PipelineError
from pipeline.core.errors import unwrap_pipeline_errors as _pipeline_errors_unwrapped
from pipeline.core.io import write_json
from pipeline.core.paths import BUNDLE_DIR, REPO_ROOT
from pipeline.datasets.datalist import datalist_task, load_datalist
from pipeline.inference.config import write_run_inference_config
from pipeline.networks import check_mode
from pipeline.preprocessing.cache import IncompleteEntryError, read_meta
from pipeline.training.loaders import check_class_ratios
from pipeline.tasks.task import TaskSpec, model_task, resolve_task
from pipeline.transforms.regions import LabelsToRegionsd

__all__ = [
    "DEVICES",
    "GPU_CONFIG",
    "MULTI_GPU_CONFIG",
    "TRAIN_CONFIG",
    "WORKFLOW_NAME",
    "TrainingWorkflow",  # noqa: F822 (defined on first use by __getattr__: importing monai.bundle costs seconds)
    "apply_output_mode",
    "build_lr_scheduler",
    "build_optimizer",
    "check_without_validation",
    "ensemble_command",
    "fold_case_ids",
    "fold_run_dir",
    "is_finished_run",
    "lr_step_transform",
    "parse_overrides",
    "provenance",
    "run_task",
    "seed_everything",
    "set_run_task",
    "start_run",
    "train",
    "train_folds",
    "world_size",
]


logger = logging.getLogger(__name__)

#: The bundle shipped with the repository.
TRAIN_CONFIG = BUNDLE_DIR / "configs" / "train.yaml"
MULTI_GPU_CONFIG = BUNDLE_DIR / "configs" / "multi_gpu_train.yaml"
GPU_CONFIG = BUNDLE_DIR / "configs" / "gpu_train.yaml"
LOGGING_CONFIG = BUNDLE_DIR / "configs" / "logging.conf"

#: Where a run can train (``--device``).
DEVICES: tuple[str, ...] = ("cpu", "cuda")

_VERSIONED_PACKAGES = ("brats-pipeline", "torch", "monai", "pytorch-ignite", "numpy", "nibabel", "SimpleITK", "tensorboard", "mlflow")


def fold_case_ids(datalist: str | Path, fold: int | None, cache_dir: str | Path) -> tuple[list[str], list[str]]:
    """Training and validation case ids of cross-validation fold ``fold``, each checked to be in the cache.

    ``fold=None`` trains on every non-test case and validates on none (a final model, as nnU-Net's
    ``fold all``): the validation list is empty.

    Raises:
        ConfigError: the fold does not exist, has no training or validation cases, or a case
            was not preprocessed into ``cache_dir``.
        InputError: a case's cache entry is of another format (an old or foreign cache).
    """

    listing = load_datalist(datalist)
    training, validation = listing.fold_split(None if fold is None else int(fold))
    if not training or (fold is not None and not validation):
        raise ConfigError(listing.path, f"fold {fold} has {len(training)} training and {len(validation)} validation cases; both must be non-empty")
    cache = Path(cache_dir)
    for record in training + validation:
        try:
            read_meta(cache, record.case_id, task=listing.task)
        except IncompleteEntryError:
            raise ConfigError(cache, f"case {record.case_id} of {listing.path.name} is not in the cache (run preprocess with this data list)") from None
    return [r.case_id for r in training], [r.case_id for r in validation]


def apply_output_mode(dataset: Any, output_mode: str | None = None, task: TaskSpec = None) -> Any:
    """Append the label-to-regions conversion (the task's regions; BraTS: TC, WT, ET) to a training dataset's transforms in ``regions`` mode (``None``: the task's target)."""
    task = model_task(task, output_mode)
    if task.target == "regions":
        from monai.transforms import Compose

        dataset.transform = Compose([dataset.transform, LabelsToRegionsd(keys="label", task=task)])
    return dataset


def run_task(parser: Any) -> dict[str, Any]:
    """A training config's task mapping: the data list's when ``task`` is null, else the named task's."""

    if parser.get("task") is None:
        return datalist_task(parser.get_parsed_content("datalist"))
    return resolve_task(parser.get_parsed_content("task", instantiate=False)).to_dict()


def set_run_task(parser: Any) -> dict[str, Any]:
    """Set a training config's ``task`` to its :func:`run_task` mapping: every component reads ``@task``, and the run's ``config.json`` and ``inference.json`` store it."""
    mapping = run_task(parser)
    parser["task"] = mapping
    return mapping


def build_optimizer(name: str, parameters: Any, learning_rate: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """``adam`` or ``adamw`` over ``parameters``."""
    choices = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if name not in choices:
        raise ConfigError("optimizer_name", f"unknown optimizer {name!r}; choose one of {', '.join(choices)}")
    return choices[name](parameters, lr=float(learning_rate), weight_decay=float(weight_decay))


def build_lr_scheduler(
    name: str, optimizer: torch.optim.Optimizer, epochs: int, iterations_per_epoch: int, warmup_epochs: float = 1.0, patience: int = 5
) -> Any:
    """``warmup_cosine`` (MONAI ``WarmupCosineSchedule``, stepped per iteration) or ``plateau`` (``ReduceLROnPlateau`` on the validation Dice, per epoch)."""
    if name == "warmup_cosine":
        from monai.optimizers import WarmupCosineSchedule

        total = max(int(epochs) * int(iterations_per_epoch), 1)
        return WarmupCosineSchedule(optimizer, warmup_steps=min(int(warmup_epochs * iterations_per_epoch), total - 1), t_total=total)
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=int(patience))
    raise ConfigError("lr_schedule", f"unknown schedule {name!r}; choose warmup_cosine or plateau")


def lr_step_transform(name: str, evaluator: Any, key_metric: str = "val_mean_dice") -> Any:
    """What ``LrScheduleHandler`` passes to ``step()``: nothing, or the latest validation Dice for ``plateau``."""
    if name == "plateau":
        return lambda engine: evaluator.state.metrics.get(key_metric, 0.0)
    return lambda engine: ()


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; with ``deterministic`` also make cuDNN and torch algorithms deterministic (MONAI ``set_determinism``)."""
    from monai.utils import set_determinism

    if deterministic:
        set_determinism(seed=int(seed))
        return
    set_determinism(seed=None)  # undo a previous deterministic run in this process
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(int(seed))
    torch.backends.cudnn.benchmark = torch.cuda.is_available()


#: The parser of the TrainingWorkflow being initialised: start_run reads the run's config from it.
_INITIALISING: contextvars.ContextVar[Any] = contextvars.ContextVar("initialising_training_workflow", default=None)


#: What ``python -m monai.bundle run training`` is given as ``--workflow_name``.
WORKFLOW_NAME = "pipeline.training.workflow.TrainingWorkflow"


def __getattr__(name: str) -> Any:
    # monai.bundle takes seconds to import; the workflow class is built when first asked for (PEP 562)
    if name == "TrainingWorkflow":
        return _training_workflow_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _training_workflow_class() -> type:
    from monai.bundle import ConfigWorkflow

    class TrainingWorkflow(ConfigWorkflow):
        """MONAI's ``ConfigWorkflow`` that lends its parser to :func:`start_run` while it initialises.

        First it sets the run's task (:func:`set_run_task`): the data list's, unless the config names one.

        ``monai.bundle`` gives a config's expressions no handle on the parser that runs them, and
        :func:`start_run` needs it: to check the run before writing, and to write the merged raw
        config (``config.json``) and the run's inference config. ``brats-pipeline train`` runs this
        workflow; ``python -m monai.bundle run training`` runs it with ``--workflow_name``
        :data:`WORKFLOW_NAME`.
        """

        def initialize(self) -> Any:
            set_run_task(self.parser)
            token = _INITIALISING.set(self.parser)
            try:
                return super().initialize()
            finally:
                _INITIALISING.reset(token)

    TrainingWorkflow.__module__ = __name__
    return TrainingWorkflow


def _git_commit() -> str | None:
    root = REPO_ROOT
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+uncommitted" if dirty else "")


def provenance(datalist: str | Path, seed: int) -> dict[str, Any]:
    """Package versions, git commit, data list sha256, command line, seed, host and start time."""

    versions = {}
    for package in _VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    listing = load_datalist(datalist)
    return {
        "versions": {"python": platform.python_version(), **versions},
        "git_commit": _git_commit(),
        "datalist": str(Path(datalist).resolve()),
        "datalist_sha256": listing.sha256,
        "command_line": [sys.executable, *sys.argv],
        "seed": int(seed),
        "host": socket.gethostname(),
        "cuda": torch.version.cuda,
        "world_size": world_size(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def start_run(output_dir: str | Path, datalist: str | Path, seed: int) -> Path:
    """Create the run directory and (rank 0) write ``config.json``, ``inference.json``, ``provenance.json`` and the log file handler.

    Called from the bundle's ``initialize`` section, so every entry point lays out the run the same way.
    """
    run_dir = Path(output_dir)
    if not is_rank_zero():
        return run_dir
    parser = _INITIALISING.get()
    if parser is None:
        raise ConfigError(
            "monai.bundle run training",
            f"the run's config.json and inference.json need the training workflow: add --workflow_name {WORKFLOW_NAME}",
        )
    check_before_writing(parser)  # `monai.bundle run` reaches this without train()'s checks
    for sub in ("models", "logs", "tensorboard"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", json.loads(json.dumps(parser.get(), default=str)))
    write_run_inference_config(parser, run_dir)
    write_json(run_dir / "provenance.json", provenance(datalist, seed))
    log_path = (run_dir / "logs" / "train.log").resolve()
    root = logging.getLogger()
    if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == log_path for h in root.handlers):
        handler = logging.FileHandler(log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
    return run_dir


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` strings (``--set``) to bundle overrides; values are read as YAML (numbers, lists, booleans)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--set", f"expected key=value, got {pair!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            overrides[key.strip()] = value
    return overrides


def train(
    datalist: str | Path,
    cache_dir: str | Path,
    out: str | Path,
    mode: str | None = None,
    epochs: int | None = None,
    fold: int | None = 0,
    resume: bool = False,
    device: str = "cpu",
    config_files: Sequence[str | Path] = (),
    overrides: Mapping[str, Any] | None = None,
    tracking: str | None = None,
) -> Path:
    """Train with the bundle's ``train.yaml`` (plus ``config_files``, merged in order) and return the run directory.

    Args:
        datalist: the data list JSON.
        cache_dir: its preprocessed cache.
        out: the run directory (created).
        mode: ``2d``, ``2.5d`` or ``3d``; ``None``: the configuration's (``overrides``, else ``config_files``, else ``train.yaml``).
        epochs: training epochs; ``None``: the configuration's, likewise.
        fold: the cross-validation fold whose cases validate; ``None``: none validates, every non-test case trains.
        resume: continue from ``out/models/latest.pt``.
        device: ``cpu`` or ``cuda``.
        config_files: override YAML/JSON files merged after ``train.yaml`` (e.g. ``configs/gpu_train.yaml``).
        overrides: any bundle keys (``#``-separated ids), applied last.
        tracking: experiment tracking as ``monai.bundle run --tracking`` takes it: ``mlflow``
            (:func:`tracking_settings`) or a MONAI tracking-settings file.

    Raises:
        ConfigError: a missing file, an unknown mode or device, or a checkpoint that does not
            match the network.
    """
    mode = configured(mode, "mode", config_files, overrides)
    epochs = configured(epochs, "epochs", config_files, overrides)
    check_mode(mode)
    if device not in DEVICES:
        raise ConfigError("--device", f"choose {' or '.join(DEVICES)}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device", "cuda was asked for but PyTorch sees no GPU")
    if int(epochs) < 1:
        raise ConfigError("--epochs", f"must be >= 1, got {epochs}")
    for path, what in ((Path(datalist), "data list"), (Path(cache_dir), "cache folder")):
        if not path.exists():
            raise ConfigError(path, f"{what} not found")
    files = training_config_files(mode, config_files)
    for path in files:
        if not path.is_file():
            raise ConfigError(path, "config file not found")
    settings: dict[str, Any] = {
        "datalist": str(Path(datalist).resolve()),
        "dataset_dir": str(Path(cache_dir).resolve()),
        "output_dir": str(Path(out).resolve()),
        "mode": mode,
        "epochs": int(epochs),
        "fold": None if fold is None else int(fold),
        "resume": bool(resume),
        "device": f"$torch.device('{device}')",
    }
    settings.update(dict(overrides or {}))
    workflow = _training_workflow_class()(
        config_file=[str(p) for p in files],
        meta_file=str(BUNDLE_DIR / "configs" / "metadata.json") if (BUNDLE_DIR / "configs" / "metadata.json").is_file() else None,
        logging_file=str(LOGGING_CONFIG),
        workflow_type="train",
        run_id="training",
        tracking=tracking_settings(tracking, out),
        **settings,
    )
    with _pipeline_errors_unwrapped():
        set_run_task(workflow.parser)  # the checks see the task the run will have
        if check_before_writing(workflow.parser, rerun_resumes=True) and not resume:
            workflow.parser["resume"] = True
            logger.info("%s holds an unfinished run of this same configuration: resuming it", out)
    try:
        with _pipeline_errors_unwrapped(), _pipeline_error_tracebacks_hidden():
            workflow.initialize()
            workflow.run()
    finally:
        workflow.finalize()
    return Path(out)


def configured(value: Any, key: str, config_files: Sequence[str | Path] = (), overrides: Mapping[str, Any] | None = None) -> Any:
    """``value``, or when it is ``None`` the training configuration's ``key``: from ``overrides``, else the last of ``config_files`` that sets it, else ``train.yaml``."""
    if value is not None:
        return value
    if overrides and key in overrides:
        return overrides[key]
    from monai.bundle import (
        ConfigParser,  # seconds to import (see _training_workflow_class)
    )

    merged = ConfigParser.load_config_files([str(path) for path in (TRAIN_CONFIG, *config_files) if Path(path).is_file()])
    return merged.get(key)


def fold_run_dir(out: str | Path, fold: int) -> Path:
    """``OUT/fold<k>``: where :func:`train_folds` trains fold ``k``."""
    return Path(out) / f"fold{int(fold)}"


def is_finished_run(run_dir: str | Path, epochs: int) -> bool:
    """Whether ``run_dir`` holds kept weights and a checkpoint of at least ``epochs`` epochs."""

    models = Path(run_dir) / "models"
    return (models / KEPT).is_file() and finished_epochs(models) >= int(epochs)


def train_folds(datalist: str | Path, out: str | Path, epochs: int | None = None, **options: Any) -> list[Path]:
    """Train every fold of the data list, one after the other, into ``OUT/fold<k>/``; return the run folders.

    It takes K times one fold's time. A fold whose run folder already holds a finished run
    (:func:`is_finished_run`) is skipped; an interrupted one resumes as :func:`train` resumes it.
    The folds' run folders together make an ensemble (``predict --model OUT/fold0 --model OUT/fold1 ...``).

    Args:
        datalist: the data list JSON (its ``num_folds`` folds are trained).
        out: the parent folder of the fold runs.
        epochs: training epochs per fold.
        options: the other arguments of :func:`train` (``cache_dir``, ``mode``, ``device``, ...), except ``fold``.
    """
    epochs = configured(epochs, "epochs", options.get("config_files", ()), options.get("overrides"))
    if not Path(datalist).exists():
        raise ConfigError(datalist, "data list not found")
    run_dirs = []
    num_folds = max(load_datalist(datalist).num_folds, 1)
    for fold in range(num_folds):
        run_dir = fold_run_dir(out, fold)
        if is_finished_run(run_dir, epochs):
            logger.info("%s: fold %d of %d already trained, skipped", run_dir, fold, num_folds)
        else:
            logger.info("training fold %d of %d into %s", fold, num_folds, run_dir)
            train(datalist=datalist, out=run_dir, epochs=epochs, fold=fold, **options)
        run_dirs.append(run_dir)
    return run_dirs


def ensemble_command(run_dirs: Sequence[str | Path]) -> str:
    """The ``predict`` command line that segments with the ensemble of ``run_dirs``."""
    models = " ".join(f"--model {run_dir}" for run_dir in run_dirs)
    return f"brats-pipeline predict {models} --input INPUT --out PREDICTIONS [--uncertainty]"


@contextlib.contextmanager
def _pipeline_error_tracebacks_hidden() -> Iterator[None]:
    """Log a :class:`PipelineError` without its traceback while the workflow runs.

    MONAI's StatsHandler logs every engine exception with its traceback on its own logger; for
    bad input the command line already reports one clear line (and the traceback under --debug).
    A log-record factory reaches every logger, whatever handlers MONAI and ignite attach.
    """
    previous = logging.getLogRecordFactory()

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if record.exc_info and isinstance(record.exc_info[1], PipelineError):
            record.exc_info = None
        return record

    logging.setLogRecordFactory(make_record)
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


def training_config_files(mode: str, config_files: Sequence[str | Path] = ()) -> list[Path]:
    """``train.yaml`` then ``config_files``; in 3D each file's 3D variant (``<name>_3d.yaml`` beside it, when present) right after it.

    Example:
        ``training_config_files("3d", [GPU_CONFIG])``: train.yaml, train_3d.yaml, gpu_train.yaml, gpu_train_3d.yaml.
    """
    files: list[Path] = []
    for path in (TRAIN_CONFIG, *(Path(f) for f in config_files)):
        files.append(path)
        variant = path.with_name(f"{path.stem}_3d{path.suffix}")
        if mode == "3d" and variant.is_file() and variant not in [Path(f) for f in config_files]:
            files.append(variant)
    return files


def tracking_settings(tracking: str | None, out: str | Path) -> str | dict[str, Any] | None:
    """What ``ConfigWorkflow(tracking=...)`` gets for ``brats-pipeline train --tracking``.

    ``mlflow`` is MONAI's MLflow settings (``MLFlowHandler`` on the trainer and the validator,
    a SQLite store ``RUN_DIR/mlruns.db``, experiment ``monai_experiment``; override with
    ``--set tracking_uri=...``, ``--set experiment_name=...``) with one change: MONAI writes
    the executed config into the run directory when the workflow is built, before the run's
    checks; here the run's own ``config.json`` is the logged artifact instead. Any other
    value is a MONAI tracking-settings file.
    """
    if tracking is None:
        return None
    if tracking != "mlflow":
        if not Path(tracking).is_file():
            raise ConfigError("--tracking", f"choose mlflow or a tracking-settings file, got {tracking!r}")
        return str(tracking)
    import copy

    from monai.bundle.utils import DEFAULT_MLFLOW_SETTINGS

    settings = copy.deepcopy(DEFAULT_MLFLOW_SETTINGS)
    settings["configs"]["save_execute_config"] = False
    settings["configs"]["trainer"]["artifacts"] = str(Path(out).resolve() / "config.json")
    return settings


def is_interrupted_run(parser: Any) -> bool:
    """Whether the run directory holds a checkpoint of exactly this configuration (the same command run again).

    Rerunning an interrupted ``brats-pipeline train`` then resumes it; a run directory of any other
    configuration is still refused unless ``--resume`` is given.
    """

    saved_config = Path(parser.get_parsed_content("output_dir")) / "config.json"
    latest = Path(parser.get_parsed_content("ckpt_dir")) / LATEST
    if not (latest.is_file() and saved_config.is_file()):
        return False
    try:
        previous = json.loads(saved_config.read_text())
    except (OSError, ValueError):
        return False
    current = json.loads(json.dumps(parser.get(), default=str))
    if isinstance(current, dict):
        current["task"] = run_task(parser)  # the saved config holds the task the run started with
    for config in (previous, current):
        if isinstance(config, dict):
            config.pop("resume", None)
    return previous == current


def check_without_validation(keep_weights: str, lr_schedule: str) -> None:
    """Refuse the settings that need a validation score when no case validates (``fold: null``): ``keep_weights: best`` and the ``plateau`` schedule."""
    if keep_weights == "best":
        raise ConfigError("keep_weights", "best needs validation cases to choose by; with no validation fold (fold: null) keep last or ema")
    if lr_schedule == "plateau":
        raise ConfigError("lr_schedule", "plateau steps on the validation Dice; with no validation fold (fold: null) use warmup_cosine")


def check_before_writing(parser: Any, rerun_resumes: bool = False) -> bool:
    """Every check that can refuse a training run, done before anything is written into its run directory; returns whether it resumes.

    The run directory must be creatable; the data list, fold and cache are checked
    (``fold_cases``); whether the run resumes is :func:`pipeline.core.checkpoints.decide_resume`'s
    decision (a run directory that already holds a checkpoint is refused unless resuming); when
    resuming, ``latest.pt`` must load (weights only) into the configured network. A refused run
    leaves the run directory as it was.

    Args:
        parser: the run's ``ConfigParser`` (overrides applied).
        rerun_resumes: a run directory holding a checkpoint of exactly this configuration
            (:func:`is_interrupted_run`) resumes without ``resume`` being set.
    """

    keep = check_kept_weights(parser.get_parsed_content("keep_weights", default=DEFAULT_KEPT_WEIGHTS))
    check_ema_decay(parser.get_parsed_content("ema_decay", default=DEFAULT_EMA_DECAY))
    parser.get_parsed_content("augment_on_device", default=False)  # an unknown augment_on stops here
    if parser.get("task") is not None:  # the loss as the run builds it: class_weights that do not fit its outputs stop here
        parser.get_parsed_content("loss")
        check_class_ratios(parser.get_parsed_content("class_ratios", default=None), parser.get_parsed_content("task"), parser.get_parsed_content("mode"))
    run_dir = Path(parser.get_parsed_content("output_dir"))
    existing = next(folder for folder in (run_dir, *run_dir.absolute().parents) if folder.exists())
    if not existing.is_dir():
        raise ConfigError(run_dir, f"cannot create the run directory: {existing} is a file")
    if not parser.get_parsed_content("fold_cases")[1]:
        check_without_validation(keep, parser.get_parsed_content("lr_schedule"))
    ckpt_dir = Path(parser.get_parsed_content("ckpt_dir"))
    resume = decide_resume(ckpt_dir, bool(parser.get_parsed_content("resume")), rerun_resumes and is_interrupted_run(parser))
    if resume:
        state = load_training_state(ckpt_dir / LATEST, parser.get_parsed_content("network_def"))
        if keep == "ema":
            ema_state(state, ckpt_dir / LATEST)
    return resume
