"""What the commands share: path and choice types, constants read on first use, the shard, model and uncertainty options, error reporting."""

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
import yaml

from pipeline.core.distributed import Shard
from pipeline.core.errors import PipelineError
from pipeline.core.paths import BUNDLE_DIR

__all__ = ["ChoiceOf", "Constant", "EXISTING", "EchoWarnings", "FoldType", "MODELS", "PATH", "SIZES", "ShardType", "TrainingDefault", "TaskOption", "UNCERTAINTY", "channel_list", "reports_errors", "shard_option", "show_warnings"]

PATH = click.Path(path_type=Path)
EXISTING = click.Path(exists=True, path_type=Path)


class Constant:
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


class TrainingDefault:
    """A ``train`` option left to the training configuration: ``None`` reaches the stage, which reads the merged configs.

    ``--help`` shows ``train.yaml``'s value (read with PyYAML, so help stays fast).

    Args:
        key: the bundle key, e.g. ``epochs``.
    """

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self) -> None:
        return None

    def __str__(self) -> str:
        value = yaml.safe_load((BUNDLE_DIR / "configs" / "train.yaml").read_text()).get(self.key)
        return f"{value}, train.yaml's (or a --config file's, or --set {self.key}=...)"


class ChoiceOf(click.Choice):
    """A :class:`click.Choice` among the values of a :class:`Constant` (a sequence, or a dict's keys).

    Args:
        constant: where the choices are defined.
    """

    def __init__(self, constant: Constant) -> None:
        self._constant = constant
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self._constant())


SIZES = ChoiceOf(Constant("pipeline.synth.grid", "GRIDS"))


class TaskOption(click.Option):
    """``--task``: its help lists the built-in tasks (:data:`pipeline.tasks.task.TASKS`), imported only when help is shown."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        from pipeline.tasks.task import TASKS

        base = self.help
        self.help = f"{base} Built-in: {', '.join(TASKS)}."
        try:
            return super().get_help_record(ctx)
        finally:
            self.help = base


def channel_list(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    """``flair,t2`` -> ``("flair", "t2")``."""
    return tuple(part.strip() for part in value.split(",") if part.strip()) if value else None

class ShardType(click.ParamType):
    """``K/N`` -> :class:`pipeline.core.distributed.Shard` (a bad value: click's one-line usage error, exit status 2)."""

    name = "K/N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, Shard):
            return value
        try:
            return Shard.parse(str(value))
        except PipelineError as err:
            self.fail(err.problem, param, ctx)


class FoldType(click.ParamType):
    """A fold number (``0``, ``1``, ...) or ``none`` -> ``None``: no fold validates (a bad value: click's one-line usage error)."""

    name = "K|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or isinstance(value, int) and value >= 0:
            return value
        text = str(value).strip().lower()
        if text == "none":
            return None
        if text.isdigit():
            return int(text)
        self.fail(f"{value!r} is neither a fold number (0, 1, ...) nor none", param, ctx)


def shard_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--shard",
        type=ShardType(),
        default=None,
        help=f"Only shard K of N (1-based: 1/4 ... 4/4) of the cases: sorted by id, every N-th from the K-th; {what}",
    )


MODELS = click.option(
    "--model",
    "model_dirs",
    required=True,
    multiple=True,
    type=EXISTING,
    help="Run folder (inference.json + models/model.pt) or bundle folder (configs/inference.yaml + models/); "
    "repeat for an ensemble (e.g. every fold of a train --folds all run): probabilities averaged.",
)

UNCERTAINTY = click.option(
    "--uncertainty",
    is_flag=True,
    help="Also write float32 uncertainty maps in [0, 1] (<case>_uncertainty.nii.gz: entropy; <case>_disagreement.nii.gz: "
    "disagreement of the TTA passes / ensemble members) and per-case uncertainty scores.",
)


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
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


class EchoWarnings(logging.Handler):
    """Print the pipeline's warnings (``warning: <path>: <reason>``) on stderr, whatever logging the host process set up."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:  # logging must never break a command
            self.handleError(record)


def show_warnings() -> None:
    logger = logging.getLogger("pipeline")
    if not any(isinstance(handler, EchoWarnings) for handler in logger.handlers):
        handler = EchoWarnings(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
