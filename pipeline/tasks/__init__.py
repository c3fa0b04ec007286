"""What goes in and comes out: a task's channels, classes, label conventions per release, scored structures and colours.

The task API (:mod:`pipeline.tasks.task`) is re-exported here, so ``pipeline.tasks.model_task`` and the
other names of the former ``pipeline.tasks`` module resolve as before. Release label conventions are
in :mod:`pipeline.tasks.conventions` and :mod:`pipeline.tasks.labels`, channel names in
:mod:`pipeline.tasks.modalities`.
"""

from pipeline.tasks.labels import written_convention
from pipeline.tasks.task import (
    BRATS_GLIOMA,
    DEFAULT_TASK,
    IMAGE_MASK_2D,
    IMAGE_MASK_2D_RGB,
    KAGGLE_LGG,
    MENINGIOMA_RT,
    METRIC_SETS,
    PLANAR_FITS,
    POSTPROCESSING_STEPS,
    TARGETS,
    TASKS,
    WHOLE_TUMOUR,
    Task,
    TaskSpec,
    get_task,
    load_task,
    model_task,
    resolve_task,
    task_from_dict,
)

__all__ = [
    "BRATS_GLIOMA",
    "DEFAULT_TASK",
    "IMAGE_MASK_2D",
    "IMAGE_MASK_2D_RGB",
    "KAGGLE_LGG",
    "MENINGIOMA_RT",
    "METRIC_SETS",
    "PLANAR_FITS",
    "POSTPROCESSING_STEPS",
    "TARGETS",
    "TASKS",
    "WHOLE_TUMOUR",
    "Task",
    "TaskSpec",
    "get_task",
    "load_task",
    "model_task",
    "resolve_task",
    "task_from_dict",
    "written_convention",
]
