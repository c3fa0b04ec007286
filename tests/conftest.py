"""Shared fixtures: the real BraTS cases (when present), tiny written cases, and a tiny synthetic cohort, cache and data list."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from case_writers import CaseWriter

REAL_BRATS_DIR = Path(os.environ.get("BRATS_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real_brats"))
KAGGLE_LGG_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "lgg_kaggle_3m"
PNG_PAIRS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "png_pairs"
#: MONAI's bundle metadata schema, kept offline in the shared folder (tests never download it).
BUNDLE_SCHEMA = Path(__file__).resolve().parents[2] / "shared" / "reference" / "meta_schema_20240725.json"


@pytest.fixture(autouse=True)
def _drop_log_handlers_of_closed_streams():
    """Remove logging handlers left writing to a stream that is closed after the test.

    A training run applies the bundle's logging.conf, binding a handler to ``sys.stdout``; under
    click's ``CliRunner`` that is the runner's buffer, closed when ``invoke`` returns. A later run
    in the same process would log through it and print "Logging error" into its own output. (One
    command per process, as users run it, never meets this.)
    """
    _drop_closed_stream_handlers()  # left by fixtures set up for this test
    yield
    _drop_closed_stream_handlers()


def _drop_closed_stream_handlers() -> None:
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in list(getattr(logger, "handlers", ())):
            if getattr(getattr(handler, "stream", None), "closed", False):
                logger.removeHandler(handler)


@pytest.fixture(scope="session")
def real_brats_dir() -> Path:
    """The folder of real BraTS cases next to the checkout; tests using it skip when it is absent."""
    if not (REAL_BRATS_DIR / "BraTS2021_00006").is_dir():
        pytest.skip(f"real BraTS cases not found at {REAL_BRATS_DIR}")
    return REAL_BRATS_DIR


@pytest.fixture(scope="session")
def kaggle_lgg_dir() -> Path:
    """The ten real Kaggle LGG patients next to the checkout; tests using it skip when they are absent."""
    if not (KAGGLE_LGG_DIR / "TCGA_CS_4943_20000902").is_dir():
        pytest.skip(f"real Kaggle LGG patients not found at {KAGGLE_LGG_DIR}")
    return KAGGLE_LGG_DIR


@pytest.fixture(scope="session")
def png_pairs_dir() -> Path:
    """The sixty real PNG image/mask pairs next to the checkout; tests using it skip when they are absent."""
    if not (PNG_PAIRS_DIR / "images").is_dir():
        pytest.skip(f"real PNG image/mask pairs not found at {PNG_PAIRS_DIR}")
    return PNG_PAIRS_DIR


@pytest.fixture(scope="session")
def bundle_schema() -> Path:
    """MONAI's bundle metadata schema next to the checkout; tests using it skip when it is absent."""
    if not BUNDLE_SCHEMA.is_file():
        pytest.skip(f"schema not found at {BUNDLE_SCHEMA} (the tests never download it)")
    return BUNDLE_SCHEMA


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


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight tiny synthetic cases in BraTS 2021 layout (shared by the whole session: treat as read-only)."""
    from pipeline.synth import generate_cohort

    root = tmp_path_factory.mktemp("cohort") / "synthetic"
    generate_cohort(root, cases=8, seed=0, size="tiny", progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_datalist(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data list over :func:`tiny_cohort`: 2 folds, 2 test cases."""
    from pipeline.datasets.datalist import build_datalist

    out = tmp_path_factory.mktemp("lists") / "tiny.json"
    build_datalist(tiny_cohort, out, folds=2, test_fraction=0.25, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_cache(tiny_datalist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The preprocessed cache of :func:`tiny_datalist`."""
    from pipeline.preprocessing.prepare import preprocess_datalist

    cache = tmp_path_factory.mktemp("cache") / "tiny"
    preprocess_datalist(tiny_datalist, cache, workers=1, progress=False)
    return cache


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run folder (untrained oracle weights) per test module; modules may define their own."""
    from prediction_cases import write_run_dir

    return write_run_dir(tmp_path_factory.mktemp("run") / "run")


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BraTS case stored in L-P-S voxel order, per test module."""
    from case_writers import write_case

    return write_case(tmp_path_factory.mktemp("cases"), layout="lps")
