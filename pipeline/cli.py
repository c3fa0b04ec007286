"""The ``brats-pipeline`` command line: a thin click group over the typed stage functions."""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pipeline.errors import PipelineError

_PATH = click.Path(path_type=Path)
_EXISTING = click.Path(exists=True, path_type=Path)


def _reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a :class:`PipelineError` into one line on stderr and exit status 1 (a traceback with --debug)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except PipelineError as err:
            if click.get_current_context().find_root().obj.get("debug"):
                traceback.print_exc()
            click.echo(f"error: {err}", err=True)
            sys.exit(1)

    return wrapper


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
