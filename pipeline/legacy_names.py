"""The module names of the flat layout (before the stage subpackages), kept resolving for what was written with them.

Run folders and bundles written before the move name the classes and functions they build by
their old dotted paths (``inference.json``: ``pipeline.api.SegmentationModel``,
``pipeline.inference.VolumeInferer``, ``pipeline.postprocess.PostProcessing``; ``config.json``:
``pipeline.data.build_train_dataset``, ``pipeline.training.start_run``, ...), and so may user code.
:func:`install` (called by ``pipeline/__init__.py``) adds an import hook that answers each old
module name with a module whose attributes are read from the new module(s), with a
``DeprecationWarning`` naming them; ``pipeline.inference`` and ``pipeline.training``, now
packages, answer their old attributes through :func:`package_getattr`.

Scheduled for removal in version 1.0; the bundle's configs use the new names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["LEGACY_MODULES", "PACKAGE_ATTRIBUTES", "install", "package_getattr"]

#: Old module -> the new module(s) holding what it held (two where a module was split).
LEGACY_MODULES: dict[str, tuple[str, ...]] = {
    "pipeline.api": ("pipeline.inference.model",),
    "pipeline.cache": ("pipeline.preprocessing.cache",),
    "pipeline.checkpoints": ("pipeline.core.checkpoints",),
    "pipeline.data": ("pipeline.training.loaders",),
    "pipeline.datalist": ("pipeline.datasets.datalist",),
    "pipeline.datasets.validation": ("pipeline.datasets.case_checks",),
    "pipeline.device_augmentation": ("pipeline.training.device_augmentation",),
    "pipeline.errors": ("pipeline.core.errors",),
    "pipeline.evaluate": ("pipeline.evaluation.evaluate",),
    "pipeline.export": ("pipeline.inference.export",),
    "pipeline.geometry": ("pipeline.core.geometry",),
    "pipeline.handlers": ("pipeline.training.handlers",),
    "pipeline.inference_config": ("pipeline.inference.config",),
    "pipeline.io": ("pipeline.core.io",),
    "pipeline.labels": ("pipeline.tasks.labels",),
    "pipeline.losses": ("pipeline.training.losses",),
    "pipeline.metrics": ("pipeline.evaluation.metrics",),
    "pipeline.modalities": ("pipeline.tasks.modalities",),
    "pipeline.postprocess": ("pipeline.inference.postprocess",),
    "pipeline.postprocess_selection": ("pipeline.evaluation.postprocess_tuning",),
    "pipeline.predict": ("pipeline.inference.predict",),
    "pipeline.preprocess": ("pipeline.preprocessing.prepare",),
    "pipeline.report": ("pipeline.evaluation.report", "pipeline.visualize.overlays"),
    "pipeline.sharding": ("pipeline.core.distributed", "pipeline.evaluation.shard_merge"),
    "pipeline.training_validation": ("pipeline.training.validation_dice",),
    "pipeline.uncertainty": ("pipeline.inference.uncertainty",),
    "pipeline.writers": ("pipeline.inference.writers",),
}

#: Old modules that are packages now -> the module holding their old attributes.
PACKAGE_ATTRIBUTES: dict[str, str] = {
    "pipeline.inference": "pipeline.inference.inferers",
    "pipeline.training": "pipeline.training.workflow",
}


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is now {new}; the old name will be removed in version 1.0", DeprecationWarning, stacklevel=3)


def _forwarding_getattr(old: str, targets: tuple[str, ...]) -> Callable[[str], Any]:
    def __getattr__(name: str) -> Any:
        for target in targets:
            module = importlib.import_module(target)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {old!r} (now {', '.join(targets)}) has no attribute {name!r}")

    return __getattr__


class _LegacyModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an old module name with a module forwarding attribute reads to the new module(s)."""

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(fullname, self) if fullname in LEGACY_MODULES else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        targets = LEGACY_MODULES[module.__name__]
        _deprecated(module.__name__, " and ".join(targets))
        module.__getattr__ = _forwarding_getattr(module.__name__, targets)  # type: ignore[attr-defined]
        module.__doc__ = f"Old name of {', '.join(targets)} (removed in version 1.0)."


def install() -> None:
    """Add the old-name import hook (once)."""
    if not any(isinstance(finder, _LegacyModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_LegacyModuleFinder())


def package_getattr(package: str) -> Callable[[str], Any]:
    """The module ``__getattr__`` of a package that was a module: its old attributes, read from :data:`PACKAGE_ATTRIBUTES`."""
    target = PACKAGE_ATTRIBUTES[package]

    def __getattr__(name: str) -> Any:
        module = importlib.import_module(target)
        if name.startswith("__") or not hasattr(module, name):
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        _deprecated(f"{package}.{name}", f"{target}.{name}")
        return getattr(module, name)

    return __getattr__
