"""Brain-tumour segmentation of multi-modal MRI (BraTS) with MONAI."""

__version__ = "0.1.0"

from pipeline import legacy_names

legacy_names.install()  # run folders written before the stage subpackages name modules such as pipeline.api

__all__ = ["__version__", "load_model", "segment"]

#: Public functions re-exported lazily, so ``import pipeline`` stays light (no torch, no MONAI).
_LAZY_EXPORTS = {"load_model": "pipeline.inference.model", "segment": "pipeline.inference.model"}


def __getattr__(name: str):
    """``pipeline.load_model`` / ``pipeline.segment`` (from :mod:`pipeline.inference.model`), imported on first use."""
    if name in _LAZY_EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
