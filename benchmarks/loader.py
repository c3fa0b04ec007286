"""Loader throughput on the benchmark cohort: the cache loaders against the usual ways of feeding slices and the memmap limit.

The methods and the measuring loop are those of ``benchmarks/loader_throughput.py`` (per-sample
NIfTI, MONAI's ``GridPatchDataset`` + ``PatchIterd`` + ``ShuffleBuffer`` recipe, the plain
memory-mapped read, :func:`pipeline.training.loaders.build_train_dataset`); this module runs them on the
runner's cohort (made by ``pipeline.synth`` + ``pipeline.preprocessing.prepare``) and derives the ratios.

The cohort's cases are cropped to their own brains, so plain reads of whole slices differ in size
from case to case; their batches are left as lists (stacking them would need padding, which is a
transform), which makes the plain read, if anything, a stricter limit than a stacked batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from benchmarks.cohort import BenchmarkCohort
from benchmarks.loader_throughput import NiftiPerSample, PlainMemmapRead, measure, monai_recipe
from pipeline.training.loaders import build_train_dataset, build_train_sampler

NIFTI = "per-sample NIfTI (nibabel)"
MONAI_RECIPE = "MONAI GridPatchDataset+PatchIterd+ShuffleBuffer"
PLAIN = "plain memmap read"
OURS = "pipeline.training.loaders"  # as training uses it: augmented, float32 samples
OURS_PLAIN = "pipeline.training.loaders (no augmentation)"
OURS_HALF = "pipeline.training.loaders (float16 samples)"
OURS_PLAIN_HALF = "pipeline.training.loaders (no augmentation, float16 samples)"
MANY = 1_000_000  # draws per pass: more than any measurement consumes


def _as_lists(samples: list[dict[str, torch.Tensor]]) -> dict[str, list[torch.Tensor]]:
    """Batch samples of different sizes without copying them into one tensor."""
    return {key: [s[key] for s in samples] for key in samples[0]}


def _loader(source: Dataset, batch_size: int, workers: int, seed: int) -> DataLoader:
    if hasattr(source, "foreground_per_item"):  # the pipeline's datasets come with their sampler
        return DataLoader(source, batch_size=batch_size, sampler=build_train_sampler(source, num_samples=MANY, seed=seed), num_workers=workers)
    if isinstance(source, PlainMemmapRead):
        return DataLoader(source, batch_size=batch_size, num_workers=workers, collate_fn=_as_lists)
    return DataLoader(source, batch_size=batch_size, num_workers=workers)


def measure_loaders(
    cohort: BenchmarkCohort,
    seconds: float,
    workers: int = 1,
    batch_size: int = 16,
    context: int = 2,
    patch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Samples/s of every method, each drawing at random across the whole cohort with ``workers`` DataLoader workers.

    ``pipeline.training.loaders`` is the loader as training uses it (augmented, float32 samples); the other
    ``pipeline.training.loaders`` rows leave out the augmentation or keep the cache's float16 in the samples.

    Returns:
        ``{"results": [{"method", "mode", "batch_size", "samples_per_s", "cpu_limited_samples_per_s",
        "samples", "seconds", "main_cpu_s", "worker_cpu_s"}, ...], "ratios":
        {mode: {method: {...}}}}``: for each of our loaders its rate over the per-sample NIfTI
        way and over MONAI's recipe (both 2D slices; a 2.5D stack is one training sample as a 2D
        slice is), and the plain read's rate over ours (the limit; 1.0 means no overhead).
    """
    torch.set_num_threads(1)
    records, cache, ids = cohort.nifti_records(), cohort.cache_dir, cohort.case_ids
    patch = (patch_size,) * 3
    loaders: list[tuple[str, str, int, Any]] = [
        (NIFTI, "2d", 2, NiftiPerSample(records, MANY, seed)),
        (MONAI_RECIPE, "2d", batch_size, monai_recipe(records, seed)),
        (PLAIN, "2d", batch_size, PlainMemmapRead(cache, ids, 0, None, MANY, seed)),
        (PLAIN, "2.5d", batch_size, PlainMemmapRead(cache, ids, context, None, MANY, seed)),
        (PLAIN, "3d", 2, PlainMemmapRead(cache, ids, 0, patch, MANY, seed)),
    ]
    variants = [(mode, augment, "float32") for mode in ("2d", "2.5d", "3d") for augment in (True, False)]
    variants += [("2.5d", True, "float16"), ("2.5d", False, "float16")]
    names = {(True, "float32"): OURS, (False, "float32"): OURS_PLAIN, (True, "float16"): OURS_HALF, (False, "float16"): OURS_PLAIN_HALF}
    for mode, augment, dtype in variants:
        dataset = build_train_dataset(cache, ids, mode, context=context, patch_size=patch, augment=augment, seed=seed, image_dtype=dtype)
        loaders.append((names[augment, dtype], mode, 2 if mode == "3d" else batch_size, dataset))
    results = []
    for method, mode, size, source in tqdm(loaders, desc="loader", unit="method", disable=not progress):
        figures = measure(_loader(source, size, workers, seed), seconds * (2 if method == NIFTI else 1))
        results.append({"method": method, "mode": mode, "batch_size": size, **figures})
    return {"results": results, "ratios": loader_ratios(results)}


def _rate(results: list[dict[str, Any]], method: str, mode: str) -> float:
    return next(r["samples_per_s"] for r in results if r["method"] == method and r["mode"] == mode)


def loader_ratios(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """For each mode and each of our loaders: ``x_nifti``, ``x_monai_recipe`` and ``plain_over_ours``."""
    nifti, recipe = _rate(results, NIFTI, "2d"), _rate(results, MONAI_RECIPE, "2d")
    ratios: dict[str, dict[str, dict[str, float]]] = {}
    for r in results:
        if not r["method"].startswith(OURS):
            continue
        plain = _rate(results, PLAIN, r["mode"])
        ratios.setdefault(r["mode"], {})[r["method"]] = {
            "x_nifti": r["samples_per_s"] / nifti,
            "x_monai_recipe": r["samples_per_s"] / recipe,
            "plain_over_ours": plain / r["samples_per_s"],
        }
    return ratios
