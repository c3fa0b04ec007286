"""Running the command line from the reliability tests: in this process, or as a subprocess that can be killed."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from click.testing import CliRunner, Result

from pipeline.cli.main import main
from tiny_training import TINY_DETERMINISTIC

REPO = Path(__file__).resolve().parents[2]

#: ``--set`` overrides of a tiny, deterministic CPU training run (2 iterations of 4 slices per epoch).
TINY_TRAINING: tuple[str, ...] = TINY_DETERMINISTIC


def cli(*args: str | os.PathLike[str]) -> Result:
    """Run ``brats-pipeline ARGS`` in this process (stdout and stderr together in ``.output``)."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def train_args(datalist: Path, cache: Path, out: Path, epochs: int = 1, settings: Sequence[str] = TINY_TRAINING) -> list[str]:
    args = ["train", "--datalist", str(datalist), "--cache", str(cache), "--mode", "2d", "--epochs", str(epochs), "--out", str(out)]
    for setting in settings:
        args += ["--set", setting]
    return args


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch on one thread in this process, as the CLI subprocesses do (``OMP_NUM_THREADS=1``), for bit-identical results."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def subprocess_env() -> dict[str, str]:
    """Environment of CLI subprocesses: one thread each, no colour or progress noise."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}


PAUSE_WRAPPER = Path(__file__).resolve().parent / "pause_writes.py"


def kill_when_paused(args: Sequence[str], pause_at: str, timeout: float = 240) -> str:
    """Run ``brats-pipeline ARGS`` until it pauses at ``pause_at`` (see ``pause_writes.py``), then SIGKILL it.

    Returns what it printed. Fails if it ends, or does not pause within ``timeout`` seconds.
    """
    import queue
    import signal
    import threading
    import time

    command = [sys.executable, str(PAUSE_WRAPPER), *map(str, args)]
    process = subprocess.Popen(
        command, cwd=REPO, env={**subprocess_env(), "PAUSE_AT": pause_at}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    printed: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no pause at {pause_at} within {timeout} s:\n{''.join(printed)[-3000:]}") from None
            if line is None:
                raise AssertionError(f"ended (status {process.wait()}) before pausing at {pause_at}:\n{''.join(printed)[-3000:]}")
            printed.append(line)
            if line.startswith("PAUSED "):
                os.kill(process.pid, signal.SIGKILL)
                break
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, process.returncode
    return "".join(printed)
