"""Fixtures of tiny NIfTI cases in every release layout, written by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import pytest
from case_writers import CaseWriter


@pytest.fixture
def cases() -> CaseWriter:
    """Writer of tiny cases in every release layout."""
    return CaseWriter()


@pytest.fixture
def legacy_root(tmp_path: Path, cases: CaseWriter) -> Path:
    """Ten labelled BraTS 2021 cases and one unlabelled one."""
    root = tmp_path / "BraTS2021_Training_Data"
    for number in range(10):
        cases.legacy(root, f"BraTS2021_{number * 3:05d}", seed=number)
    cases.legacy(root, "BraTS2021_00100", labels=None)
    return root
