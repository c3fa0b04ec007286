"""The ``brats-pipeline`` command line: one module per command group over the typed stage functions (:mod:`pipeline.cli.main`).

Each command imports its stage module inside the command: importing the stages (torch, MONAI) takes
seconds that ``--help`` and every other command would otherwise pay (measured on 2 busy cores:
``import pipeline.cli`` 5 s, with every stage 89 s).
"""

from pipeline.cli.main import main

__all__ = ["main"]
