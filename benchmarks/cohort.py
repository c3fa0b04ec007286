"""The synthetic cohort every benchmark measures on: generated, listed and preprocessed once, then reused.

Layout under the work folder (``benchmarks/.work`` by default, ignored by git)::

    <size>-seed<seed>/synthetic/BraTS2021_NNNNN/...nii.gz   pipeline.synth (BraTS 2021 layout and header)
    <size>-seed<seed>/datalist.json                          pipeline.datasets.datalist
    <size>-seed<seed>/cache/<case_id>/...                     pipeline.preprocessing.prepare
    <size>-seed<seed>/linked-<N>/<id>/...                     a cache of N ids sharing the cohort's arrays

Generation and preprocessing skip finished cases, so a later run with as many or fewer cases
costs nothing, and one with more only adds the missing cases.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.datasets.datalist import SPLITS, load_datalist
from pipeline.datasets.records import CaseRecord
from pipeline.core.io import write_json

DEFAULT_WORK_DIR = Path(__file__).resolve().parent / ".work"


@dataclass(frozen=True)
class BenchmarkCohort:
    """A synthetic cohort on disk: its NIfTI cases, data list and cache.

    Attributes:
        root: the cohort's folder.
        data_root: the NIfTI cases (BraTS 2021 layout).
        datalist: the data list over ``data_root``.
        cache_dir: the preprocessed cache.
        records: the cases measured (the first ``cases`` by id).
        size: the synthetic grid (``full`` is 240x240x155 at 1 mm).
    """

    root: Path
    data_root: Path
    datalist: Path
    cache_dir: Path
    records: tuple[CaseRecord, ...]
    size: str

    @property
    def case_ids(self) -> list[str]:
        return [r.case_id for r in self.records]

    def nifti_records(self) -> list[dict[str, Any]]:
        """The cases as MONAI-style ``{"image": [4 paths], "label": path}`` dicts, for the NIfTI baselines."""
        return [{"image": [str(p) for p in r.images], "label": str(r.label)} for r in self.records]


def prepare_cohort(work_dir: Path, cases: int, size: str = "full", seed: int = 0, workers: int = 2, progress: bool = True) -> BenchmarkCohort:
    """Generate, list and preprocess ``cases`` synthetic cases under ``work_dir`` (reusing what is there)."""
    from pipeline.preprocessing.prepare import preprocess_datalist
    from pipeline.datasets.datalist import build_datalist
    from pipeline.synth import generate_cohort

    root = Path(work_dir).resolve() / f"{size}-seed{seed}"
    data_root = root / "synthetic"
    folders = generate_cohort(data_root, cases=cases, seed=seed, size=size, progress=progress)
    datalist = root / "datalist.json"
    present = sorted(p.name for p in data_root.iterdir() if p.is_dir())
    if not datalist.is_file() or sorted(r.case_id for r in _all_records(datalist)) != present:
        build_datalist(data_root, datalist, folds=2, test_fraction=0.0, seed=seed, progress=progress)
    cache = root / "cache"
    preprocess_datalist(datalist, cache, workers=workers, progress=progress)
    wanted = {f.name for f in folders}
    records = tuple(sorted((r for r in _all_records(datalist) if r.case_id in wanted), key=lambda r: r.case_id))
    return BenchmarkCohort(root, data_root, datalist, cache, records, size)


def _all_records(datalist: Path) -> list[CaseRecord]:
    listing = load_datalist(datalist)
    return [record for split in SPLITS for record in listing.records[split]]


def linked_cache(cohort: BenchmarkCohort, count: int) -> tuple[Path, list[str]]:
    """A cache of ``count`` case ids whose arrays are hard links to the cohort's cases, in turn.

    For memory measurements that need many cases but not many distinct ones: each id is its own
    folder with its own ``meta.json`` (its own memory map when read), so a loader treats it as a
    separate case. Hard links fall back to copies across file systems.

    Returns:
        The cache folder and its case ids.
    """
    out = cohort.root / f"linked-{count}"
    ids = [f"Linked_{index:05d}" for index in range(count)]
    for index, case_id in enumerate(ids):
        folder = out / case_id
        if (folder / "meta.json").is_file():
            continue
        source = cohort.cache_dir / cohort.case_ids[index % len(cohort.case_ids)]
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("image.npy", "label.npy"):
            target = folder / name
            target.unlink(missing_ok=True)
            try:
                os.link(source / name, target)
            except OSError:  # another file system
                shutil.copyfile(source / name, target)
        meta = json.loads((source / "meta.json").read_text())
        meta["case_id"] = case_id
        write_json(folder / "meta.json", meta)  # written last: its presence marks the folder done
    return out, ids
