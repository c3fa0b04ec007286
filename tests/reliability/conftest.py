"""Fixtures of the reliability tests: a tiny cohort to damage, its data list and cache, a tiny trained model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cli_runs import cli, train_args

CASES = 4


@pytest.fixture(scope="session")
def pristine_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four tiny synthetic BraTS 2021 cases (read-only: tests damage copies of it)."""
    from pipeline.synth import generate_cohort

    root = tmp_path_factory.mktemp("reliability") / "pristine"
    generate_cohort(root, cases=CASES, seed=0, size="tiny", progress=False)
    return root


@pytest.fixture
def cohort(pristine_cohort: Path, tmp_path: Path) -> Path:
    """A private copy of the pristine cohort, free to damage."""
    return Path(shutil.copytree(pristine_cohort, tmp_path / "data"))


@pytest.fixture
def cohort_datalist(cohort: Path, tmp_path: Path) -> Path:
    """The data list of :func:`cohort` (2 folds, 1 test case), built before any damage."""
    from pipeline.datasets.datalist import build_datalist

    out = tmp_path / "lists" / "cohort.json"
    build_datalist(cohort, out, folds=2, test_fraction=0.25, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def pristine_datalist(pristine_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.datasets.datalist import build_datalist

    out = tmp_path_factory.mktemp("reliability_lists") / "pristine.json"
    build_datalist(pristine_cohort, out, folds=2, test_fraction=0.25, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def pristine_cache(pristine_datalist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.preprocessing.prepare import preprocess_datalist

    cache = tmp_path_factory.mktemp("reliability_cache") / "cache"
    preprocess_datalist(pristine_datalist, cache, workers=1, progress=False)
    return cache


@pytest.fixture(scope="session")
def trained_run(pristine_datalist: Path, pristine_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory of one tiny 2D epoch over the pristine cohort (read-only)."""
    out = tmp_path_factory.mktemp("reliability_run") / "run"
    result = cli(*train_args(pristine_datalist, pristine_cache, out))
    assert result.exit_code == 0, result.output
    return out
