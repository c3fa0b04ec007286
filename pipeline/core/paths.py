"""Where the project's own files are: the checkout and the bundle shipped in it."""

from __future__ import annotations

from pathlib import Path

__all__ = ["BUNDLE_DIR", "REPO_ROOT"]

#: The checkout (the folder holding ``pipeline/`` and ``bundles/``).
REPO_ROOT = Path(__file__).resolve().parents[2]
#: The MONAI bundle: ``configs/`` (train, inference, evaluate and their variants), ``models/``, ``docs/``.
BUNDLE_DIR = REPO_ROOT / "bundles" / "brats_segmentation"
