"""Run ``brats-pipeline`` with a pause at a chosen point, so a test can kill it there with SIGKILL.

Usage: ``python pause_writes.py <brats-pipeline arguments>`` with ``PAUSE_AT`` set to

* ``write:<name part>:<n>``: the n-th atomic write of a file whose name contains ``<name part>``,
  after its temporary file is written and before it is renamed into place;
* ``iteration:<n>``: right after training iteration ``n`` (counted over the whole run).

At the pause the process prints ``PAUSED <detail>`` on stdout and sleeps, waiting to be killed.
The pipeline itself has no such hook: this wrapper patches it from outside, before it runs.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

PAUSE_SECONDS = 600


def _pause(detail: str) -> None:
    print(f"PAUSED {detail}", flush=True)
    time.sleep(PAUSE_SECONDS)


def _pause_at_write(name_part: str, occurrence: int) -> None:
    import pipeline.core.io

    real_atomic_path = pipeline.core.io.atomic_path
    seen = 0

    @contextlib.contextmanager
    def atomic_path(path):
        nonlocal seen
        with real_atomic_path(path) as tmp:
            yield tmp
            if name_part in Path(path).name:
                seen += 1
                if seen == occurrence:
                    _pause(f"{path} written to {tmp}, not renamed")

    pipeline.core.io.atomic_path = atomic_path  # modules importing it later (handlers, report) get this one


def _pause_at_iteration(iteration: int) -> None:
    from pipeline.training.handlers import TrainingProgress

    real_iteration_completed = TrainingProgress.iteration_completed

    def iteration_completed(self, engine):
        real_iteration_completed(self, engine)
        if engine.state.iteration == iteration:
            _pause(f"after iteration {iteration} (epoch {engine.state.epoch})")

    TrainingProgress.iteration_completed = iteration_completed


def main() -> None:
    kind, _, spec = os.environ["PAUSE_AT"].partition(":")
    if kind == "write":
        name_part, _, occurrence = spec.rpartition(":")
        _pause_at_write(name_part, int(occurrence))
    elif kind == "iteration":
        _pause_at_iteration(int(spec))
    else:
        raise SystemExit(f"unknown PAUSE_AT {os.environ['PAUSE_AT']!r}")
    from pipeline.cli.main import main as cli_main

    cli_main(args=sys.argv[1:], prog_name="brats-pipeline")


if __name__ == "__main__":
    main()
