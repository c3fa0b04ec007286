"""What goes in and comes out: a task's channels, classes, label conventions per release, scored structures and colours.

The task API (:mod:`pipeline.tasks.task`) is re-exported here, so ``pipeline.tasks.model_task`` and the
other names of the former ``pipeline.tasks`` module resolve as before. Release label conventions are
in :mod:`pipeline.tasks.conventions` and :mod:`pipeline.tasks.labels`, channel names in
:mod:`pipeline.tasks.modalities`.
"""

from pipeline.tasks import task as _task
from pipeline.tasks.labels import written_convention
from pipeline.tasks.task import *  # noqa: F403 (the task API, as the former pipeline.tasks module held it)

__all__ = [*_task.__all__, "written_convention"]
