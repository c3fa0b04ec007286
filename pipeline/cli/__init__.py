"""The ``brats-pipeline`` command line: one module per command group over the typed stage functions (:mod:`pipeline.cli.main`)."""

from pipeline.cli.main import main

__all__ = ["main"]
