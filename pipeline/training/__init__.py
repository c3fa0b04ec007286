"""Training: the bundle workflow, loaders and samplers, augmentation on workers or the device, losses, handlers, validation Dice.

``pipeline.training`` was a module; its old attributes (``pipeline.training.start_run``, which
run folders written before the subpackages name) still resolve (:mod:`pipeline.legacy_names`).
"""

from pipeline.legacy_names import package_getattr

__getattr__ = package_getattr(__name__)

__all__: list[str] = []
