"""The command line: option choices and defaults come from the constants that define them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

from pipeline.inference.model import OUTPUT_CONVENTIONS
from pipeline.cli.main import main
from pipeline.datasets.datalist import SCORED_SPLITS, SPLITS
from pipeline.inference.export import DEFAULT_TOLERANCE, FORMATS
from pipeline.tasks.labels import CONVENTIONS
from pipeline.networks import MODES
from pipeline.preprocessing.prepare import DEFAULT_MARGIN
from pipeline.synth.grid import GRIDS
from pipeline.synth.layouts import LAYOUTS
from pipeline.training.workflow import DEVICES

REPO = Path(__file__).resolve().parents[2]


def _option(command: str, name: str) -> click.Option:
    (option,) = [param for param in main.commands[command].params if param.name == name]
    return option


@pytest.mark.parametrize(
    ("command", "name", "constant"),
    [
        ("synth", "size", tuple(GRIDS)),
        ("synth", "task", tuple(LAYOUTS)),
        ("demo", "size", tuple(GRIDS)),
        ("preprocess", "splits", SPLITS),
        ("train", "mode", MODES),
        ("train", "device", DEVICES),
        ("predict", "label_convention", OUTPUT_CONVENTIONS),
        ("evaluate", "split", SCORED_SPLITS),
        ("export", "export_format", FORMATS),
    ],
)
def test_choices_are_the_constants_that_define_them(command: str, name: str, constant: tuple[str, ...]) -> None:
    assert tuple(_option(command, name).type.choices) == tuple(constant)


def test_output_conventions_are_auto_and_every_label_convention() -> None:
    from pipeline.tasks.task import TASKS

    assert OUTPUT_CONVENTIONS[: len(CONVENTIONS) + 1] == ("auto", *CONVENTIONS)  # the glioma conventions first, as before
    assert {name for task in TASKS.values() for name in task.conventions} <= set(OUTPUT_CONVENTIONS)


@pytest.mark.parametrize(("command", "name", "value"), [("preprocess", "margin", DEFAULT_MARGIN), ("export", "tolerance", DEFAULT_TOLERANCE)])
def test_defaults_are_the_constants_and_shown_in_help(command: str, name: str, value: float) -> None:
    from click.testing import CliRunner

    context = click.Context(main.commands[command])
    assert _option(command, name).get_default(context) == value
    result = CliRunner().invoke(main, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert f"[default: {value};" in result.output


def test_an_unknown_choice_is_a_usage_error_listing_the_constant() -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["synth", "--size", "huge"])
    assert result.exit_code == 2
    assert all(size in result.output for size in GRIDS)


@pytest.mark.slow
def test_the_command_group_loads_without_torch() -> None:
    """``brats-pipeline --help`` stays fast: the constants' modules load only when a command needs them."""
    code = "import sys, pipeline.cli.main; print(sorted(m for m in ('torch', 'monai', 'SimpleITK') if m in sys.modules))"
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]"
