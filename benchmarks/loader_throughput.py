"""Training-loader throughput: the cache loaders against the usual ways of feeding BraTS slices.

Builds a small synthetic cohort of full-size cases (240x240x155 NIfTI, int16, gzip) and their
cache entries (brain-cropped, z-scored, float16, slice-major ``(Z, C, X, Y)``) in a temporary
folder, then measures samples/s through a ``torch.utils.data.DataLoader`` with the same worker
count for every method, each drawing slices at random across the whole cohort:

- ``pipeline.training.loaders`` 2D, 2.5D and 3D loaders, with and without augmentation;
- the limit: a plain read of the same bytes from the memory-mapped cache (no transform);
- the per-sample NIfTI way of 2D repositories (open each modality with nibabel, z-score, slice);
- MONAI's 2D-from-3D recipe (``LoadImaged`` volumes, ``GridPatchDataset`` + ``PatchIterd``,
  ``ShuffleBuffer``), which shuffles only within its buffer.

Methods are measured in interleaved rounds and the best rate of each is kept, so that load from
other processes on a shared machine distorts the comparison less. Prints a markdown table with
ratios, both wall-clock and CPU-limited (see :func:`measure`); ``--json PATH`` also writes the
figures (every round too). Files are in the page
cache when measured (they were just written), as on a training machine after the first epoch.

Usage:
    python benchmarks/loader_throughput.py [--cases 4] [--workers 1] [--seconds 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.training.loaders import build_train_dataset, build_train_sampler
from pipeline.tasks.modalities import MODALITIES

FULL_SHAPE = (240, 240, 155)  # (X, Y, Z) of a BraTS volume
BRAIN_RADII = (70, 85, 65)  # ellipsoid half-axes in voxels: a cropped brain of about 140x170x130
BRATS_LABELS = {1: 1, 2: 2, 4: 3}  # BraTS 2017-2021 label -> internal label


# ----------------------------------------------------------------------------- the cohort


def _synthetic_case(rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """Four int16 modalities and a BraTS-labelled seg on the full (X, Y, Z) grid."""
    grid = np.ogrid[tuple(slice(0, n) for n in FULL_SHAPE)]
    centre = [n / 2 for n in FULL_SHAPE]
    radius = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, BRAIN_RADII))
    brain = radius <= 1.0
    tumour_centre = [c + rng.integers(-20, 21) for c in centre]
    tumour = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, tumour_centre, (22, 25, 18)))
    seg = np.zeros(FULL_SHAPE, np.uint8)
    seg[(tumour <= 1.0) & brain] = 2
    seg[(tumour <= 0.45) & brain] = 4
    seg[(tumour <= 0.15) & brain] = 1
    channels = []
    for index in range(len(MODALITIES)):
        base = 400 + 100 * index + 200 * np.cos(3 * radius + index)
        volume = base + 150 * (seg > 0) + rng.normal(0, 20, FULL_SHAPE).astype(np.float32)
        channels.append(np.where(brain, np.clip(volume, 1, None), 0).astype(np.int16))
    return channels, seg


def _write_cache_case(folder: Path, channels: list[np.ndarray], seg: np.ndarray) -> None:
    """The cache entry of one case, in the cache format (brain box crop, z-score, float16, (Z, C, X, Y))."""
    brain = channels[0] != 0
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(brain))
    image = np.stack([c[box].transpose(2, 0, 1) for c in channels], axis=1).astype(np.float32)
    inside = image != 0
    for index in range(image.shape[1]):
        values = image[:, index][inside[:, index]]
        image[:, index] = np.where(inside[:, index], (image[:, index] - values.mean()) / values.std(), 0)
    label = np.zeros(seg[box].shape, np.uint8)
    for brats, internal in BRATS_LABELS.items():
        label[seg[box] == brats] = internal
    label = np.ascontiguousarray(label.transpose(2, 0, 1))
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "image.npy", image.astype(np.float16))
    np.save(folder / "label.npy", label)
    meta = {
        "case_id": folder.name,
        "shape": list(image.shape),
        "spacing": [1.0, 1.0, 1.0],
        "foreground_per_slice": np.count_nonzero(label, axis=(1, 2)).tolist(),
        "has_label": True,
        "complete": True,
    }
    (folder / "meta.json").write_text(json.dumps(meta))


def build_cohort(root: Path, cases: int, seed: int = 0) -> tuple[list[dict[str, Any]], Path, list[str]]:
    """Write ``cases`` synthetic cases as NIfTI and as cache entries; return NIfTI records, cache folder, ids."""
    rng = np.random.default_rng(seed)
    records, ids = [], []
    cache = root / "cache"
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    for number in range(cases):
        case_id = f"BraTS2021_{number:05d}"
        channels, seg = _synthetic_case(rng)
        folder = root / "nifti" / case_id
        folder.mkdir(parents=True, exist_ok=True)
        images = []
        for name, volume in zip(MODALITIES, channels):
            path = folder / f"{case_id}_{name}.nii.gz"
            nib.save(nib.Nifti1Image(volume, affine), path)
            images.append(str(path))
        seg_path = folder / f"{case_id}_seg.nii.gz"
        nib.save(nib.Nifti1Image(seg, affine), seg_path)
        records.append({"image": images, "label": str(seg_path)})
        _write_cache_case(cache / case_id, channels, seg)
        ids.append(case_id)
    return records, cache, ids


# ----------------------------------------------------------------------------- the baselines


class PlainMemmapRead(Dataset):
    """The limit: read a random slice stack (2.5D, 2D) or patch (3D) from the memory map, nothing else."""

    def __init__(self, cache: Path, ids: list[str], context: int, patch: tuple[int, int, int] | None, length: int, seed: int) -> None:
        self.cache, self.ids, self.context, self.patch = cache, ids, context, patch
        self.depths = [json.loads((cache / i / "meta.json").read_text())["shape"][0] for i in ids]
        self.rng = np.random.default_rng(seed)
        self.length = length
        self._open: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        case = int(self.rng.integers(len(self.ids)))
        case_id = self.ids[case]
        if case_id not in self._open:
            folder = self.cache / case_id
            self._open[case_id] = (np.load(folder / "image.npy", mmap_mode="r"), np.load(folder / "label.npy", mmap_mode="r"))
        image, label = self._open[case_id]
        if self.patch is None:
            z = int(self.rng.integers(self.context, self.depths[case] - self.context))
            return {
                "image": torch.from_numpy(np.array(image[z - self.context : z + self.context + 1])),
                "label": torch.from_numpy(np.array(label[z])),
            }
        px, py, pz = self.patch
        z0, x0, y0 = (int(self.rng.integers(0, max(n - p, 0) + 1)) for n, p in zip(image.shape[:1] + image.shape[2:], (pz, px, py)))
        return {
            "image": torch.from_numpy(np.array(image[z0 : z0 + pz, :, x0 : x0 + px, y0 : y0 + py])),
            "label": torch.from_numpy(np.array(label[z0 : z0 + pz, x0 : x0 + px, y0 : y0 + py])),
        }


class NiftiPerSample(Dataset):
    """The 2D-repository way: open every modality's .nii.gz for each sample, z-score the brain, take one slice."""

    def __init__(self, records: list[dict[str, Any]], length: int, seed: int) -> None:
        self.records = records
        self.depths = [nib.load(r["image"][0]).shape[2] for r in records]  # slices per case, from the header
        self.rng = np.random.default_rng(seed)
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        case = int(self.rng.integers(len(self.records)))
        record = self.records[case]
        z = int(self.rng.integers(self.depths[case]))
        channels = []
        for path in record["image"]:
            volume = nib.load(path).get_fdata(dtype=np.float32)
            brain = volume > 0
            volume = np.where(brain, (volume - volume[brain].mean()) / volume[brain].std(), 0)
            channels.append(volume[:, :, z])
        seg = np.asarray(nib.load(record["label"]).dataobj[:, :, z])
        return {"image": torch.from_numpy(np.stack(channels).astype(np.float32)), "label": torch.from_numpy(seg[None].astype(np.uint8))}


def monai_recipe(records: list[dict[str, Any]], seed: int) -> Iterable:
    """MONAI's 2D-from-3D recipe: whole volumes through LoadImaged, every slice by PatchIterd, a ShuffleBuffer."""
    from monai.data import Dataset as MonaiDataset
    from monai.data import GridPatchDataset, PatchIterd, ShuffleBuffer
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, NormalizeIntensityd, SqueezeDimd

    keys = ("image", "label")
    rng = np.random.default_rng(seed)
    order = [records[i] for _ in range(50) for i in rng.permutation(len(records))]
    volumes = MonaiDataset(
        order,
        transform=Compose(
            [
                LoadImaged(keys=keys, image_only=True),
                EnsureChannelFirstd(keys=keys),
                NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
            ]
        ),
    )
    patches = GridPatchDataset(
        data=volumes,
        patch_iter=PatchIterd(keys=keys, patch_size=(None, None, 1), start_pos=(0, 0, 0)),
        transform=SqueezeDimd(keys=keys, dim=-1),
        with_coordinates=False,
    )
    return ShuffleBuffer(patches, buffer_size=30, seed=seed)


# ----------------------------------------------------------------------------- measuring


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(loader: Iterable, seconds: float, warmup_batches: int = 1) -> dict[str, float]:
    """Wall-clock samples/s of ``loader`` after ``warmup_batches``, over at least ``seconds``, with CPU use.

    Besides the wall rate, the CPU seconds of the main process and of the DataLoader workers
    give ``cpu_limited_samples_per_s``: the rate if each process had a core to itself
    (``samples / max(main CPU, worker CPU / workers)``), which load from other processes on a
    shared machine barely changes.
    """
    iterator = iter(loader)
    for _ in range(warmup_batches):
        next(iterator)
    workers = [w.pid for w in getattr(iterator, "_workers", [])]
    main_start, workers_start = time.process_time(), sum(_cpu_seconds(pid) for pid in workers)
    samples, start = 0, time.perf_counter()
    for batch in iterator:
        samples += len(batch["image"])
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and samples > 0:
            break
    else:
        elapsed = time.perf_counter() - start
    main_cpu = time.process_time() - main_start
    worker_cpu = sum(_cpu_seconds(pid) for pid in workers) - workers_start
    del iterator
    busiest = max(main_cpu, worker_cpu / max(len(workers), 1), 1e-9)
    return {
        "samples_per_s": samples / elapsed,
        "cpu_limited_samples_per_s": samples / busiest,
        "samples": samples,
        "seconds": elapsed,
        "main_cpu_s": main_cpu,
        "worker_cpu_s": worker_cpu,
    }


def best_of_rounds(loaders: list[tuple[str, str, int, Any]], rounds: list[list[dict[str, float]]]) -> list[dict[str, Any]]:
    """One result per ``(method, mode, batch_size, source)`` loader: its best rate over the interleaved rounds, and every round."""
    return [
        {
            "method": method,
            "mode": mode,
            "batch_size": batch_size,
            "samples_per_s": max(r["samples_per_s"] for r in runs),
            "cpu_limited_samples_per_s": max(r["cpu_limited_samples_per_s"] for r in runs),
            "rounds": runs,
        }
        for (method, mode, batch_size, _), runs in zip(loaders, rounds)
    ]


def throughput(loader: Iterable, seconds: float, warmup_batches: int = 1) -> tuple[float, int, float]:
    """Wall-clock ``(samples/s, samples, seconds)`` of ``loader``; see :func:`measure`."""
    result = measure(loader, seconds, warmup_batches)
    return result["samples_per_s"], int(result["samples"]), result["seconds"]


def _loader(source: Any, batch_size: int, workers: int, seed: int) -> DataLoader:
    """The same DataLoader settings for every method; the pipeline's datasets bring their sampler."""
    if hasattr(source, "foreground_per_item"):
        sampler = build_train_sampler(source, num_samples=1_000_000, seed=seed)
        return DataLoader(source, batch_size=batch_size, sampler=sampler, num_workers=workers)
    return DataLoader(source, batch_size=batch_size, num_workers=workers)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the cohort, measure every method, return the results."""
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        records, cache, ids = build_cohort(root, args.cases, args.seed)
        print(f"cohort: {args.cases} cases of {FULL_SHAPE} written in {time.perf_counter() - started:.0f} s", flush=True)
        patch = (args.patch_size,) * 3
        loaders: list[tuple[str, str, int, Any]] = []  # (method, mode, batch size, dataset or iterable)
        many = 1_000_000
        loaders.append(("per-sample NIfTI (nibabel)", "2d", 2, NiftiPerSample(records, many, args.seed)))
        loaders.append(("MONAI GridPatchDataset+PatchIterd+ShuffleBuffer", "2d", args.batch_size, monai_recipe(records, args.seed)))
        loaders.append(("plain memmap read", "2d", args.batch_size, PlainMemmapRead(cache, ids, 0, None, many, args.seed)))
        loaders.append(("plain memmap read", "2.5d", args.batch_size, PlainMemmapRead(cache, ids, args.context, None, many, args.seed)))
        loaders.append(("plain memmap read", "3d", 2, PlainMemmapRead(cache, ids, 0, patch, many, args.seed)))
        variants = [(mode, augment, "float32") for mode in ("2d", "2.5d", "3d") for augment in (False, True)]
        variants += [("2.5d", False, "float16"), ("2.5d", True, "float16")]
        for mode, augment, dtype in variants:
            dataset = build_train_dataset(
                cache, ids, mode, context=args.context, patch_size=patch, augment=augment, seed=args.seed, image_dtype=dtype
            )
            name = f"pipeline.training.loaders ({'augmented' if augment else 'no augmentation'}{', float16 samples' if dtype == 'float16' else ''})"
            loaders.append((name, mode, 2 if mode == "3d" else args.batch_size, dataset))
        rounds: list[list[dict[str, float]]] = [[] for _ in loaders]
        for round_number in range(args.rounds):
            # rounds interleave the methods, so a burst of load on a shared machine hits all of them alike
            for position, (method, mode, batch_size, source) in enumerate(loaders):
                seconds = args.seconds * (2 if "NIfTI" in method else 1)
                result = measure(_loader(source, batch_size, args.workers, args.seed), seconds)
                rounds[position].append(result)
                print(
                    f"  round {round_number + 1}: {mode:5s} {method:50s} {result['samples_per_s']:9.1f} samples/s "
                    f"(CPU-limited {result['cpu_limited_samples_per_s']:9.1f})",
                    flush=True,
                )
        results = best_of_rounds(loaders, rounds)
    return {
        "benchmark": "loader_throughput",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "torch": torch.__version__,
            "monai": __import__("monai").__version__,
        },
        "settings": {
            "cases": args.cases,
            "volume_shape_xyz": list(FULL_SHAPE),
            "workers": args.workers,
            "batch_size": args.batch_size,
            "context": args.context,
            "patch_size": list(patch),
            "seconds": args.seconds,
            "rounds": args.rounds,
            "seed": args.seed,
        },
        "results": results,
    }


def _rate(results: list[dict[str, Any]], method: str, mode: str, key: str = "samples_per_s") -> float:
    return next(r[key] for r in results if r["method"] == method and r["mode"] == mode)


NIFTI = ("per-sample NIfTI (nibabel)", "2d")
RECIPE = ("MONAI GridPatchDataset+PatchIterd+ShuffleBuffer", "2d")
TARGETS = {"x_nifti": 100.0, "x_monai_recipe": 4.0, "plain_over_ours": 1.5}


def _ratios(results: list[dict[str, Any]], r: dict[str, Any], key: str) -> dict[str, float]:
    plain = _rate(results, "plain memmap read", r["mode"], key)
    return {
        "x_nifti": r[key] / _rate(results, *NIFTI, key),
        "x_monai_recipe": r[key] / _rate(results, *RECIPE, key),
        "plain_over_ours": plain / r[key],
    }


def markdown(report: dict[str, Any]) -> str:
    """The results as a markdown table with ratios to the baselines (wall clock / CPU-limited), and the targets."""
    results = report["results"]
    settings, machine = report["settings"], report["machine"]
    lines = [
        f"Loader throughput, {settings['cases']} synthetic cases of 240x240x155, {settings['workers']} DataLoader "
        f"worker(s), batch {settings['batch_size']} (3D and NIfTI: 2), {machine['cpu_count']} CPU cores, best of "
        f"{settings['rounds']} interleaved rounds of {settings['seconds']:g} s, load average "
        f"{machine['load_average_1min'][0]:g} -> {machine['load_average_1min'][1]:g}, torch {machine['torch']}, "
        f"MONAI {machine['monai']}, {report['date']}.",
        "Each cell: wall clock / CPU-limited (the rate if every process had a core to itself).",
        "",
        "| mode | method | samples/s | x per-sample NIfTI | x MONAI recipe | plain memmap read / this |",
        "|---|---|---:|---:|---:|---:|",
    ]
    report["ratios"] = []
    for r in results:
        wall, cpu = _ratios(results, r, "samples_per_s"), _ratios(results, r, "cpu_limited_samples_per_s")
        report["ratios"].append({"method": r["method"], "mode": r["mode"], "wall": wall, "cpu_limited": cpu})
        lines.append(
            f"| {r['mode']} | {r['method']} | {r['samples_per_s']:.1f} / {r['cpu_limited_samples_per_s']:.1f} | "
            f"{wall['x_nifti']:.0f} / {cpu['x_nifti']:.0f} | {wall['x_monai_recipe']:.2f} / {cpu['x_monai_recipe']:.2f} | "
            f"{wall['plain_over_ours']:.2f} / {cpu['plain_over_ours']:.2f} |"
        )
    lines += ["", "Targets for the 2.5D loader (>= 100x NIfTI, >= 4x MONAI recipe, plain read / loader <= 1.5):", ""]
    for entry in report["ratios"]:
        if entry["mode"] != "2.5d" or not entry["method"].startswith("pipeline.training.loaders"):
            continue
        verdicts = []
        for basis in ("wall", "cpu_limited"):
            ratios = entry[basis]
            met = ratios["x_nifti"] >= TARGETS["x_nifti"] and ratios["x_monai_recipe"] >= TARGETS["x_monai_recipe"]
            met = met and ratios["plain_over_ours"] <= TARGETS["plain_over_ours"]
            entry[f"{basis}_targets_met"] = bool(met)
            verdicts.append(f"{basis.replace('_', '-')}: {'met' if met else 'missed'}")
        lines.append(f"- {entry['method']}: " + ", ".join(verdicts))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=4, help="synthetic full-size cases (default 4)")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers for every method (default 1)")
    parser.add_argument("--batch-size", type=int, default=16, help="slices per batch (3D and NIfTI: 2)")
    parser.add_argument("--context", type=int, default=2, help="2.5D neighbours per side (default 2)")
    parser.add_argument("--patch-size", type=int, default=128, help="3D patch edge (default 128)")
    parser.add_argument("--seconds", type=float, default=4.0, help="measuring time per method (NIfTI: twice this)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best rate of each method is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the temporary cohort (default: system temp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    report = run(args)
    table = markdown(report)
    print()
    print(table)
    if args.json is not None:
        from pipeline.core.io import write_json

        write_json(args.json, report)


if __name__ == "__main__":
    main()
