"""Inference: a loaded model (run folder or bundle), the inferers, post-processing, uncertainty, writers, ``predict`` and ``export``.

``pipeline.inference`` was a module; its old attributes (``pipeline.inference.VolumeInferer``, which
run folders written before the subpackages name) still resolve (:mod:`pipeline.legacy_names`).
"""

from pipeline.legacy_names import package_getattr

__getattr__ = package_getattr(__name__)

__all__: list[str] = []
