"""Running the command line from the reliability tests: in this process, or as a subprocess that can be killed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from click.testing import CliRunner, Result

from pipeline.cli import main

REPO = Path(__file__).resolve().parents[2]

#: ``--set`` overrides of a tiny, deterministic CPU training run (2 iterations of 4 slices per epoch).
TINY_TRAINING: tuple[str, ...] = (
    "channels=[4, 8, 16]",
    "strides=[2, 2]",
    "num_res_units=0",
    "samples_per_epoch=8",
    "batch_size=4",
    "num_workers=0",
    "progress=false",
    "sw_batch_size=8",
    "deterministic=true",
)


def cli(*args: str | os.PathLike[str]) -> Result:
    """Run ``brats-pipeline ARGS`` in this process (stdout and stderr together in ``.output``)."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def train_args(datalist: Path, cache: Path, out: Path, epochs: int = 1, settings: Sequence[str] = TINY_TRAINING) -> list[str]:
    args = ["train", "--datalist", str(datalist), "--cache", str(cache), "--mode", "2d", "--epochs", str(epochs), "--out", str(out)]
    for setting in settings:
        args += ["--set", setting]
    return args


def subprocess_env() -> dict[str, str]:
    """Environment of CLI subprocesses: one thread each, no colour or progress noise."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}


def run_cli_subprocess(args: Sequence[str], timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``python -m pipeline ARGS`` to completion, single-threaded."""
    command = [sys.executable, "-m", "pipeline", *map(str, args)]
    return subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
