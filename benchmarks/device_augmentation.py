"""Augmentation on the training device (``augment_on: device``) against augmentation in the loader workers (``worker``).

Measured side by side in one run on the benchmark cohort (made by ``pipeline.synth`` +
``pipeline.preprocessing.prepare``, see :mod:`benchmarks.cohort`), in 2D, 2.5D and 3D:

- the loader's samples/s through a ``DataLoader`` with the same worker count for every method:
  the plain memory-mapped read of the same bytes (the limit, :class:`~benchmarks.loader_throughput.PlainMemmapRead`),
  the loader as ``augment_on: device`` uses it (workers read and crop only, float16 samples),
  and the loader as ``augment_on: worker`` uses it (read, crop, augment per sample, float32);
  also the device-augmentation loader with its augmentation run on the batches in this process
  (on the CPU that is what the training process adds to its own work);
- the augmentation's cost per sample: the per-sample worker path (an augmented sample's time
  less a plain sample's, same indices, one process) against
  :class:`pipeline.training.device_augmentation.DeviceAugmentation` on whole batches on ``--device``
  (the cast to float32 included; on CUDA after the batch is on the GPU, synchronised).

Methods are measured in interleaved rounds and the best rate of each is kept (see
:func:`benchmarks.loader_throughput.measure`). ``benchmarks.run`` runs this as its
"device augmentation" section; run alone it prints a markdown table and, with ``--json``,
writes the figures.

Usage:
    python -m benchmarks.device_augmentation [--cases 4] [--seconds 4] [--rounds 2] [--device cpu|cuda] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from benchmarks.cohort import DEFAULT_WORK_DIR, BenchmarkCohort, prepare_cohort
from benchmarks.loader import MANY, PLAIN, _loader
from benchmarks.loader_throughput import PlainMemmapRead, best_of_rounds, measure
from pipeline.training.loaders import build_train_dataset
from pipeline.training.device_augmentation import DeviceAugmentation

READ_CROP = "read + crop (augment_on: device)"
READ_CROP_AUGMENT_HERE = "read + crop, batched augmentation in this process"
WORKER_AUGMENT = "read + crop + augment (augment_on: worker)"
MODES = ("2d", "2.5d", "3d")
TARGET_PLAIN_OVER_READ_CROP = 1.5


class AugmentedBatches:
    """The batches of a loader, each moved to ``device`` and augmented there, as the trainer's ``prepare_batch`` does."""

    def __init__(self, loader: Any, augmentation: DeviceAugmentation, device: torch.device) -> None:
        self.loader, self.augmentation, self.device = loader, augmentation, device

    def __iter__(self) -> _AugmentingIterator:
        return _AugmentingIterator(iter(self.loader), self.augmentation, self.device)


class _AugmentingIterator:
    """One pass of :class:`AugmentedBatches`; ``_workers`` are the DataLoader's, whose CPU time :func:`measure` reads."""

    def __init__(self, batches: Iterator[dict[str, Any]], augmentation: DeviceAugmentation, device: torch.device) -> None:
        self._batches, self.augmentation, self.device = batches, augmentation, device
        self._workers = getattr(batches, "_workers", [])

    def __iter__(self) -> _AugmentingIterator:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        image, label = self.augmentation(next(self._batches), self.device)
        return {"image": image, "label": label}


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def augmentation_cost(dataset_plain: Any, dataset_augmented: Any, batch_size: int, batches: int, device: torch.device) -> dict[str, float]:
    """Milliseconds per sample of the augmentation: per sample in a worker against batched on ``device``."""
    count = batch_size * batches
    indices = [(7919 * i) % len(dataset_plain) for i in range(count)]
    plain_seconds, augmented_seconds = [], []
    for index in indices:  # interleaved, the same samples for both
        start = time.perf_counter()
        dataset_plain[index]
        plain_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        dataset_augmented[index]
        augmented_seconds.append(time.perf_counter() - start)
    per_sample_ms = 1e3 * max(statistics.fmean(augmented_seconds) - statistics.fmean(plain_seconds), 0.0)
    augmentation = DeviceAugmentation(seed=0)
    samples = [dataset_plain[i] for i in indices]
    batch_ms = []
    for number in range(batches + 1):  # the first batch warms up (CUDA kernels, allocations)
        chunk = samples[(number % batches) * batch_size : (number % batches + 1) * batch_size]
        image = torch.stack([s["image"] for s in chunk]).to(device)
        label = torch.stack([s["label"] for s in chunk]).to(device)
        _synchronise(device)
        start = time.perf_counter()
        augmentation.augment(image, label)
        _synchronise(device)
        if number:
            batch_ms.append(1e3 * (time.perf_counter() - start))
    batched_ms = statistics.median(batch_ms) / batch_size
    return {
        "worker_ms_per_sample": per_sample_ms,
        "worker_read_crop_ms_per_sample": 1e3 * statistics.fmean(plain_seconds),
        "batched_ms_per_sample": batched_ms,
        "worker_over_batched": per_sample_ms / batched_ms if batched_ms > 0 else float("nan"),
        "batch_size": batch_size,
        "samples": count,
    }


def measure_device_augmentation(
    cohort: BenchmarkCohort,
    seconds: float,
    device: str = "cpu",
    workers: int = 1,
    batch_size: int = 16,
    context: int = 2,
    patch_size: int = 128,
    rounds: int = 2,
    cost_batches: int = 4,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Loader samples/s of the three methods (and the device-augmentation loader with its augmentation here), and the augmentation's cost per sample.

    Returns:
        ``{"results": [{"method", "mode", "batch_size", "samples_per_s", "cpu_limited_samples_per_s", ...}],
        "ratios": {mode: {"plain_over_read_crop", "plain_over_worker_augment", "plain_over_read_crop_augment_here"}},
        "cost": {mode: augmentation_cost(...)}, "device", "torch_threads"}``.
    """
    torch.set_num_threads(1)  # the CPU training configuration's cpu_threads
    target = torch.device(device)
    cache, ids, patch = cohort.cache_dir, cohort.case_ids, (patch_size,) * 3
    loaders: list[tuple[str, str, int, Any]] = []
    costs: dict[str, dict[str, float]] = {}
    for mode in MODES:
        size = 2 if mode == "3d" else batch_size
        plain = build_train_dataset(cache, ids, mode, context=context, patch_size=patch, augment=False, seed=seed, image_dtype="float16")
        augmented = build_train_dataset(cache, ids, mode, context=context, patch_size=patch, augment=True, seed=seed)
        memmap = PlainMemmapRead(cache, ids, context if mode == "2.5d" else 0, patch if mode == "3d" else None, MANY, seed)
        loaders += [(PLAIN, mode, size, memmap), (READ_CROP, mode, size, plain), (WORKER_AUGMENT, mode, size, augmented)]
        loaders.append((READ_CROP_AUGMENT_HERE, mode, size, plain))
        if progress:
            print(f"  augmentation cost, {mode}", file=sys.stderr, flush=True)
        costs[mode] = augmentation_cost(plain, augmented, size, cost_batches, target)
    runs: list[list[dict[str, float]]] = [[] for _ in loaders]
    for round_number in range(rounds):
        for position, (method, mode, size, source) in enumerate(loaders):
            loader = _loader(source, size, workers, seed)
            if method == READ_CROP_AUGMENT_HERE:
                loader = AugmentedBatches(loader, DeviceAugmentation(seed=seed), target)
            runs[position].append(measure(loader, seconds))
            if progress:
                print(f"  round {round_number + 1}: {mode:5s} {method:52s} {runs[position][-1]['samples_per_s']:9.1f} samples/s", file=sys.stderr, flush=True)
    results = best_of_rounds(loaders, runs)

    def rate(method: str, mode: str) -> float:
        return next(r["samples_per_s"] for r in results if r["method"] == method and r["mode"] == mode)

    ratios = {
        mode: {
            "plain_over_read_crop": rate(PLAIN, mode) / rate(READ_CROP, mode),
            "plain_over_worker_augment": rate(PLAIN, mode) / rate(WORKER_AUGMENT, mode),
            "plain_over_read_crop_augment_here": rate(PLAIN, mode) / rate(READ_CROP_AUGMENT_HERE, mode),
        }
        for mode in MODES
    }
    return {"results": results, "ratios": ratios, "cost": costs, "device": device, "workers": workers, "torch_threads": torch.get_num_threads()}


def markdown_section(section: dict[str, Any]) -> list[str]:
    """The section's two tables as markdown lines."""
    device = section["device"]
    lines = [
        f"Loader, {section['workers']} DataLoader worker(s), random access across the cohort (plain read / this: 1.0 = no overhead; "
        f"target for `augment_on: device` <= {TARGET_PLAIN_OVER_READ_CROP}):",
        "",
        "| mode | method | samples/s | CPU-limited samples/s | plain read / this |",
        "|---|---|---:|---:|---:|",
    ]
    for r in section["results"]:
        plain = next(p["samples_per_s"] for p in section["results"] if p["method"] == PLAIN and p["mode"] == r["mode"])
        lines.append(f"| {r['mode']} | {r['method']} | {r['samples_per_s']:,.1f} | {r['cpu_limited_samples_per_s']:,.1f} | {plain / r['samples_per_s']:.2f} |")
    lines += [
        "",
        f"Augmentation cost per sample (worker: per sample, MONAI transforms, an augmented sample's time less a plain one's; "
        f"batched: `DeviceAugmentation` on whole batches on {device}, {section['torch_threads']} torch thread(s) on the CPU):",
        "",
        "| mode | batch | read + crop (ms/sample) | worker augmentation (ms/sample) | batched on " + device + " (ms/sample) | worker / batched |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode, cost in section["cost"].items():
        lines.append(
            f"| {mode} | {cost['batch_size']} | {cost['worker_read_crop_ms_per_sample']:.2f} | {cost['worker_ms_per_sample']:.2f} | "
            f"{cost['batched_ms_per_sample']:.3f} | {cost['worker_over_batched']:.2f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    from benchmarks.machine import check_device, describe_machine, machine_name
    from pipeline.core.io import write_json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=4, help="full-size synthetic cases (default 4)")
    parser.add_argument("--size", default="full", help="synthetic grid (default full: 240x240x155)")
    parser.add_argument("--seconds", type=float, default=4.0, help="measuring time per loader and round (default 4)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best rate of each method is kept")
    parser.add_argument("--patch-size", type=int, default=128, help="3D patch edge (default 128)")
    parser.add_argument("--device", default="cpu", help="where the batched augmentation runs: cpu (default) or cuda")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="the cohort's folder (made once, reused)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    check_device(args.device)
    machine = describe_machine(args.device)
    load_before = os.getloadavg()[0]
    cohort = prepare_cohort(args.work_dir, args.cases, args.size, workers=min(2, machine["cpu_cores"]), progress=False)
    section = measure_device_augmentation(cohort, args.seconds, args.device, patch_size=args.patch_size, rounds=args.rounds)
    report = {
        "benchmark": "device_augmentation",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "machine_name": machine_name(machine),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "settings": {"cases": args.cases, "size": args.size, "seconds": args.seconds, "rounds": args.rounds, "patch_size": args.patch_size},
        **section,
    }
    m = report["machine"]
    header = (
        f"Augmentation on the device, {args.cases} synthetic {args.size} cases, {m['cpu_model']}, {m['cpu_cores']} cores"
        f"{', GPU ' + m['gpu']['name'] if m.get('gpu') else ''}; torch {m['torch']}, MONAI {m['monai']}; best of {args.rounds} rounds of "
        f"{args.seconds:g} s; load average {report['load_average_1min'][0]} -> {report['load_average_1min'][1]}; {report['date']}."
    )
    print("\n".join([header, "", *markdown_section(section)]))
    if args.json is not None:
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
