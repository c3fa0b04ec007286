"""Peak memory of training against cohort size, on caches of the benchmark cohort's cases.

The measurement is ``training_throughput.peak_memory``: one short epoch of the real training run
(:func:`pipeline.training.workflow.train`, 2.5D, the bundle's loader and worker count) in a fresh process,
reporting the peak resident set size of the training process and of its largest DataLoader
worker. Resident memory includes the pages of memory-mapped cache files a process has touched
(shared with the page cache, released when a map is closed).

The caches here are the cohort's own cases under many ids: :func:`benchmarks.cohort.linked_cache`
hard-links each id's arrays to one of the cohort's cases (a separate folder, ``meta.json`` and
memory map per id, as a loader sees distinct cases), with a data list over them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from benchmarks.cohort import BenchmarkCohort, linked_cache
from pipeline.core.io import write_json


def linked_datalist(cohort: BenchmarkCohort, cache: Path, case_ids: list[str], folds: int = 5) -> Path:
    """A data list over a linked cache: each id points at the NIfTI files of the case it links to."""
    sources = cohort.records
    entries = []
    for index, case_id in enumerate(case_ids):
        entry = sources[index % len(sources)].to_entry(cohort.data_root)
        entries.append({**entry, "case_id": case_id, "fold": index % folds})
    path = cache.with_suffix(".json")
    write_json(
        path,
        {
            "name": cache.name,
            "label_convention": "brats2017",
            "data_root": str(cohort.data_root.resolve()),
            "num_folds": folds,
            "training": [e for e in entries if e["fold"] != 0],
            "validation": [e for e in entries if e["fold"] == 0],
            "test": [],
        },
    )
    return path


def measure_memory(cohort: BenchmarkCohort, counts: tuple[int, ...] = (10, 200), samples: int = 160) -> dict[str, Any]:
    """Peak RSS of one short training epoch (``samples`` slices) over caches of ``counts`` case ids."""
    from benchmarks.training_throughput import peak_memory

    runs = []
    for count in counts:
        cache, ids = linked_cache(cohort, count)
        datalist = linked_datalist(cohort, cache, ids)
        out = cohort.root / f"memory-run-{count}"
        shutil.rmtree(out, ignore_errors=True)
        try:
            main_mib, worker_mib = peak_memory(datalist, cache, "2.5d", out, samples)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        runs.append(
            {
                "cases": count,
                "distinct_cases": min(count, len(cohort.records)),
                "training_cases": sum(1 for index in range(count) if index % 5 != 0),
                "samples": samples,
                "main_peak_rss_mib": main_mib,
                "worker_peak_rss_mib": worker_mib,
            }
        )
    return {
        "runs": runs,
        "note": f"case ids beyond the cohort's {len(cohort.records)} cases are hard links to its cached arrays (own folder, meta.json and memory map per id)",
    }
