"""Run every benchmark side by side on one synthetic cohort; write a JSON of the results and print markdown tables.

    .venv/bin/python -m benchmarks.run [--quick | --smoke] [--device cpu|cuda] [--json PATH]

``make bench`` runs the full profile, ``make bench-quick`` the quick one (under about 10 minutes
on 2 CPU cores once the cohort exists). The results go to
``benchmarks/results/<machine>-<YYYY-MM-DD>.json`` (and the tables to the same name with ``.md``);
``--smoke`` is a seconds-long run on tiny volumes that checks the runner itself (its figures mean
nothing) and writes under the work folder unless ``--json`` says otherwise.

Measured, in this order, on full-size (240x240x155) synthetic cases made with ``pipeline.synth``,
listed with ``pipeline.datasets.datalist`` and preprocessed with ``pipeline.preprocessing.prepare`` (kept in the work
folder and reused between runs):

1. preprocessing: seconds per case against reading its four files (``preprocess_speed.py``);
2. loader: samples/s of the 2D, 2.5D and 3D cache loaders against the per-sample NIfTI way,
   MONAI's 2D-from-3D recipe and a plain memory-mapped read (:mod:`benchmarks.loader`); the
   loader with ``augment_on: device`` (workers read and crop only) against the plain read, and
   the batched augmentation's cost per sample on ``--device`` against the per-sample worker
   path (:mod:`benchmarks.device_augmentation`);
3. training: samples/s of the bundle's step alone and end to end (:mod:`benchmarks.training_step`),
   and peak memory with a small and a large cohort (:mod:`benchmarks.memory`);
4. inference: seconds per case for 2D, 2.5D, 3D with and without TTA (:mod:`benchmarks.case_inference`)
   against the MONAI brats bundle's configuration (:mod:`benchmarks.reference_bundle`);
5. with ``--device cuda``: 2.5D training with and without AMP and ``torch.compile``, GPU memory
   and the share of the GPU's bf16 peak (:mod:`benchmarks.gpu`); inference runs on the GPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from benchmarks.cohort import DEFAULT_WORK_DIR, BenchmarkCohort, prepare_cohort
from benchmarks.machine import check_device, describe_machine, machine_name, write_results
from pipeline.core.errors import PipelineError

RESULTS_DIR = Path(__file__).resolve().parent / "results"
FORMAT_VERSION = 1
INFERENCE_VARIANTS = (("2d", False), ("2d", True), ("2.5d", False), ("2.5d", True), ("3d", False), ("3d", True))


@dataclass(frozen=True)
class Profile:
    """How much of each measurement a run does.

    Attributes:
        name: ``smoke``, ``quick`` or ``full``.
        size: synthetic grid (``full`` = 240x240x155 at 1 mm; ``tiny`` only for smoke runs).
        cases: cohort cases the loader and training draw from.
        memory_cohorts: case ids of the small and the large memory cohort.
        loader_seconds: measuring time per loader (the NIfTI way gets twice this).
        patch_size: 3D patch edge for the loaders.
        train_iterations: training iterations per rate, ``train_warmup`` of them not counted.
        train_warmup: warm-up iterations (worker start, compilation).
        batch_size: training batch (``None``: the bundle's).
        memory_samples: slices in the training epoch of each memory run.
        inference_repeats: timed predictions per variant (median).
        inference_warmup_each: warm up every inference variant (else only the first).
        preprocess_repeats: interleaved repeats of the preprocessing steps.
        reference_roi: the reference bundle's sliding window (``None``: the bundle's 240x240x160).
    """

    name: str
    size: str
    cases: int
    memory_cohorts: tuple[int, int]
    loader_seconds: float
    patch_size: int
    train_iterations: int
    train_warmup: int
    batch_size: int | None
    memory_samples: int
    inference_repeats: int
    inference_warmup_each: bool
    preprocess_repeats: int
    reference_roi: tuple[int, int, int] | None = None


PROFILES: dict[str, Profile] = {
    "full": Profile("full", "full", 20, (10, 200), 10.0, 128, 25, 3, None, 480, 3, True, 3),
    "quick": Profile("quick", "full", 10, (10, 200), 4.0, 128, 10, 2, None, 160, 1, False, 1),
    "smoke": Profile("smoke", "tiny", 3, (3, 12), 0.3, 16, 3, 1, 4, 16, 1, False, 1, (48, 48, 32)),
}


def _section(name: str, progress: bool) -> float:
    if progress:
        print(f"[{datetime.now().strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)
    return time.perf_counter()


def measure_preprocessing(cohort: BenchmarkCohort, repeats: int) -> dict[str, Any]:
    """Seconds per case of reading the four files and of preprocessing, on the cohort's first case."""
    from benchmarks.preprocess_speed import measure

    scratch = cohort.root / "preprocess-speed"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        figures = measure(cohort.records[0], scratch, repeats)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    full = figures["preprocess into the cache"]
    read = figures["read 4 files (SimpleITK)"]
    return {
        "case_id": cohort.records[0].case_id,
        "repeats": repeats,
        "steps": figures,
        "preprocess_over_read_sitk": full["wall"] / read["wall"],
        "preprocess_over_read_nibabel": full["wall"] / figures["read 4 files (nibabel)"]["wall"],
    }


def measure_training_section(cohort: BenchmarkCohort, profile: Profile, device: str) -> dict[str, Any]:
    """The training step alone and end to end (CPU: the bundle's settings; CUDA: with and without AMP and compile)."""
    from benchmarks.training_step import bundle_training_parts, measure_training, resident_batch, training_flops_per_sample

    if device == "cuda":
        from benchmarks.gpu import measure_gpu_training
        from benchmarks.machine import cpu_cores
        from pipeline.training.workflow import GPU_CONFIG

        workers = None if GPU_CONFIG.is_file() else max(1, min(8, cpu_cores() - 2))
        batch = profile.batch_size if profile.batch_size or GPU_CONFIG.is_file() else 64
        return measure_gpu_training(cohort.cache_dir, cohort.case_ids, profile.train_iterations, profile.train_warmup, batch, workers)
    result = measure_training(cohort.cache_dir, cohort.case_ids, "cpu", profile.train_iterations, profile.train_warmup, batch_size=profile.batch_size)
    parts = bundle_training_parts(cohort.cache_dir, cohort.case_ids, "cpu", 1, batch_size=profile.batch_size, num_workers=0)
    return {"training": [result], "training_gflop_per_sample": training_flops_per_sample(parts, resident_batch(parts, "cpu")) / 1e9}


def run_benchmarks(profile: Profile, device: str = "cpu", work_dir: Path = DEFAULT_WORK_DIR, progress: bool = True) -> dict[str, Any]:
    """Every measurement of ``profile`` on ``device``; returns the report (see ``benchmarks/README.md``)."""
    from benchmarks.case_inference import measure_inference
    from benchmarks.device_augmentation import measure_device_augmentation
    from benchmarks.loader import measure_loaders
    from benchmarks.memory import measure_memory
    from benchmarks.reference_bundle import REFERENCE_ROI, time_reference

    check_device(device)
    started = time.perf_counter()
    load_at_start = os.getloadavg()
    machine = describe_machine(device)
    seconds: dict[str, float] = {}

    start = _section(f"cohort: {profile.cases} synthetic {profile.size} cases in {work_dir}", progress)
    cohort = prepare_cohort(work_dir, profile.cases, profile.size, workers=min(2, machine["cpu_cores"]), progress=progress)
    seconds["cohort"] = time.perf_counter() - start
    first_case = cohort.records[0]
    outputs = cohort.root / "outputs"
    shutil.rmtree(outputs, ignore_errors=True)

    start = _section("preprocessing", progress)
    preprocessing = measure_preprocessing(cohort, profile.preprocess_repeats)
    seconds["preprocessing"] = time.perf_counter() - start

    start = _section("loader", progress)
    threads = torch.get_num_threads()
    try:
        loader = measure_loaders(cohort, profile.loader_seconds, patch_size=profile.patch_size, progress=progress)
    finally:
        torch.set_num_threads(threads)
    seconds["loader"] = time.perf_counter() - start

    start = _section("device augmentation", progress)
    try:
        device_augmentation = measure_device_augmentation(cohort, profile.loader_seconds, device, patch_size=profile.patch_size, rounds=1, progress=progress)
    finally:
        torch.set_num_threads(threads)
    seconds["device_augmentation"] = time.perf_counter() - start

    start = _section("training", progress)
    training = measure_training_section(cohort, profile, device)
    seconds["training"] = time.perf_counter() - start

    start = _section(f"memory: {profile.memory_cohorts[0]} vs {profile.memory_cohorts[1]} cases", progress)
    memory = measure_memory(cohort, profile.memory_cohorts, profile.memory_samples)
    seconds["memory"] = time.perf_counter() - start

    start = _section("inference", progress)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    inference = measure_inference(
        first_case.images[0].parent,
        outputs / "pipeline",
        device,
        INFERENCE_VARIANTS,
        profile.inference_repeats,
        profile.inference_warmup_each,
    )
    seconds["inference"] = time.perf_counter() - start

    start = _section("reference: MONAI brats bundle configuration", progress)
    roi = profile.reference_roi or REFERENCE_ROI
    reference = time_reference(first_case.images, outputs / "reference", device, profile.inference_repeats, profile.inference_warmup_each, roi)
    for row in inference:
        row["reference_over_this"] = reference / row["seconds_per_case"]
    seconds["reference"] = time.perf_counter() - start
    inference_section: dict[str, Any] = {
        "case_id": first_case.case_id,
        "weights": "untrained (seeded); the work per case does not depend on the weights",
        "results": inference,
        "reference": {"name": "MONAI model-zoo brats_mri_segmentation inference.json", "roi_size": list(roi), "seconds_per_case": reference},
    }
    if device == "cuda":
        inference_section["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    shutil.rmtree(outputs, ignore_errors=True)
    seconds["total"] = time.perf_counter() - started

    report = {
        "benchmark": "brats-pipeline",
        "format_version": FORMAT_VERSION,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "profile": asdict(profile),
        "device": device,
        "machine": machine,
        "machine_name": machine_name(machine),
        "load_average": {"start": [round(v, 2) for v in load_at_start], "end": [round(v, 2) for v in os.getloadavg()]},
        "cohort": {
            "size": profile.size,
            "cases": len(cohort.records),
            "shape_xyz": list(_grid_shape(profile.size)),
            "made_with": "pipeline.synth.generate_cohort + pipeline.datasets.datalist.build_datalist + pipeline.preprocessing.prepare.preprocess_datalist",
        },
        "preprocessing": preprocessing,
        "loader": loader,
        "device_augmentation": device_augmentation,
        "training": training,
        "memory": memory,
        "inference": inference_section,
        "seconds": seconds,
    }
    report["targets"] = evaluate_targets(report)
    return report


def _grid_shape(size: str) -> tuple[int, ...]:
    from pipeline.synth import get_grid

    return tuple(get_grid(size).shape)


def _target(name: str, goal: str, value: float | None, met: bool | None, note: str = "") -> dict[str, Any]:
    return {"name": name, "target": goal, "value": value, "met": met, "note": note}


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the project's performance goals with the measured value and whether it is met."""
    targets = []
    ratios = report["loader"]["ratios"]["2.5d"]["pipeline.training.loaders"]
    targets.append(_target("2.5D loader (augmented) vs per-sample NIfTI", ">= 100x", ratios["x_nifti"], ratios["x_nifti"] >= 100))
    targets.append(_target("2.5D loader (augmented) vs MONAI 2D-from-3D recipe", ">= 4x", ratios["x_monai_recipe"], ratios["x_monai_recipe"] >= 4))
    targets.append(_target("plain memmap read / 2.5D loader (augmented)", "<= 1.5", ratios["plain_over_ours"], ratios["plain_over_ours"] <= 1.5))
    for mode, device_ratios in report["device_augmentation"]["ratios"].items():
        ratio = device_ratios["plain_over_read_crop"]
        targets.append(_target(f"plain memmap read / {mode.upper()} loader with augment_on: device (read + crop)", "<= 1.5", ratio, ratio <= 1.5))
    training = report["training"]["training"]
    if report["device"] == "cuda":
        amp = max((t for t in training if t["amp"]), key=lambda t: t["end_to_end_samples_per_s"])
        targets.append(_target("2.5D training end to end with AMP (slices/s)", "> 2500 (one H100)", amp["end_to_end_samples_per_s"], amp["end_to_end_samples_per_s"] > 2500))
        targets.append(_target("end to end / model step alone (AMP)", ">= 0.9 (loader never the bottleneck)", amp["end_to_end_over_model_only"], amp["end_to_end_over_model_only"] >= 0.9))
    else:
        ratio = training[0]["end_to_end_over_model_only"]
        targets.append(_target("training end to end / model step alone", ">= 0.9", ratio, ratio >= 0.9))
    small, large = report["memory"]["runs"]
    peak_small = small["main_peak_rss_mib"] + (small["worker_peak_rss_mib"] or 0)
    peak_large = large["main_peak_rss_mib"] + (large["worker_peak_rss_mib"] or 0)
    targets.append(
        _target(
            f"peak RSS, {large['cases']} vs {small['cases']} cases (main + worker)",
            "<= 1.1 (no growth with cohort size)",
            peak_large / peak_small,
            peak_large / peak_small <= 1.1,
        )
    )
    plain_25d = next(r for r in report["inference"]["results"] if r["mode"] == "2.5d" and not r["tta"])
    if report["device"] == "cuda":
        targets.append(_target("2.5D whole-case inference without TTA (s)", "< 1 s (one H100)", plain_25d["seconds_per_case"], plain_25d["seconds_per_case"] < 1))
    else:
        targets.append(_target("2.5D whole-case inference without TTA (s, CPU)", "well under 30 s", plain_25d["seconds_per_case"], plain_25d["seconds_per_case"] < 30))
    for reader in ("sitk", "nibabel"):
        ratio = report["preprocessing"][f"preprocess_over_read_{reader}"]
        name = "SimpleITK, the reader preprocessing uses" if reader == "sitk" else "nibabel"
        targets.append(_target(f"preprocessing / reading the four files ({name})", "<= about 2", ratio, ratio <= 2.2))
    return targets


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def markdown_report(report: dict[str, Any]) -> str:
    """The report as markdown tables."""
    m = report["machine"]
    gpu = f", GPU {m['gpu']['name']} ({m['gpu']['memory_gib']} GiB)" if m.get("gpu") else ""
    lines = [
        f"## Benchmarks: {report['machine_name']} ({report['profile']['name']} profile, {report['date'][:10]})",
        "",
        f"{m['cpu_model']}, {m['cpu_cores']} cores, {m['memory_gib']} GiB{gpu}; torch {m['torch']}, MONAI {m['monai']}; "
        f"device {report['device']}; {report['cohort']['cases']} synthetic cases of {'x'.join(map(str, report['cohort']['shape_xyz']))}; "
        f"run took {report['seconds']['total'] / 60:.1f} min; load average (1 min) {report['load_average']['start'][0]} at the start, "
        f"{report['load_average']['end'][0]} at the end.",
        "",
        "### Loader (one DataLoader worker, random access across the cohort)",
        "",
        "| mode | method | samples/s | CPU-limited samples/s | x per-sample NIfTI | x MONAI recipe | plain read / this |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    results = report["loader"]["results"]
    ratios = report["loader"]["ratios"]
    for r in results:
        ratio = ratios.get(r["mode"], {}).get(r["method"])
        cells = [_fmt(ratio["x_nifti"]), _fmt(ratio["x_monai_recipe"], 2), _fmt(ratio["plain_over_ours"], 2)] if ratio else ["", "", ""]
        lines.append(f"| {r['mode']} | {r['method']} | {_fmt(r['samples_per_s'])} | {_fmt(r.get('cpu_limited_samples_per_s'))} | " + " | ".join(cells) + " |")
    from benchmarks.device_augmentation import markdown_section

    lines += ["", "### Augmentation on the device (`augment_on: device`) against the loader workers (`worker`)", "", *markdown_section(report["device_augmentation"])]
    lines += ["", "### Training step (bundle configuration, 2.5D)", "", "| device | AMP | compile | batch | loader workers | torch threads | model step alone (samples/s) | end to end (samples/s) | end to end / alone |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for t in report["training"]["training"]:
        lines.append(
            f"| {t['device']} | {'yes' if t['amp'] else 'no'} | {'yes' if t['compile'] else 'no'} | {t['batch_size']} | {t['num_workers']} | {t['torch_threads']} | "
            f"{_fmt(t['model_only_samples_per_s'])} | {_fmt(t['end_to_end_samples_per_s'])} | {_fmt(t['end_to_end_over_model_only'], 2)} |"
        )
    gflop = report["training"]["training_gflop_per_sample"]
    lines += ["", f"Training step: {gflop:.2f} GFLOP per slice (forward + backward, convolutions and matrix products)."]
    if report["device"] == "cuda":
        lines += ["", "| AMP | compile | GPU memory (GiB) | TFLOP/s end to end | share of bf16 peak |", "|---|---|---:|---:|---:|"]
        for t in report["training"]["training"]:
            share = t["end_to_end_fraction_of_peak_bf16"]
            lines.append(
                f"| {'yes' if t['amp'] else 'no'} | {'yes' if t['compile'] else 'no'} | {_fmt(t['max_memory_allocated_gib'], 2)} | "
                f"{_fmt(t['end_to_end_tflops'], 2)} | {'n/a' if share is None else f'{100 * share:.1f}%'} |"
            )
    lines += [
        "",
        "### Peak memory of a training epoch against cohort size (2.5D, pipeline.training.workflow.train)",
        "",
        "| cases (distinct) | slices | training process peak RSS (MiB) | largest loader worker peak RSS (MiB) |",
        "|---:|---:|---:|---:|",
    ]
    for run in report["memory"]["runs"]:
        lines.append(f"| {run['cases']} ({run['distinct_cases']}) | {run['samples']} | {_fmt(run['main_peak_rss_mib'], 0)} | {_fmt(run['worker_peak_rss_mib'], 0)} |")
    inference = report["inference"]
    lines += [
        "",
        f"### Whole-case inference (240x240x155 NIfTI in, NIfTI out; {inference['weights'].split(';')[0]} weights)",
        "",
        "| mode | TTA passes | network | seconds per case | MONAI bundle reference / this |",
        "|---|---:|---|---:|---:|",
    ]
    for r in inference["results"]:
        lines.append(f"| {r['mode']} | {r['tta_passes']} | {r['network']} | {_fmt(r['seconds_per_case'], 2)} | {_fmt(r['reference_over_this'], 2)} |")
    ref = inference["reference"]
    lines.append(f"| MONAI brats bundle (SegResNet, roi {'x'.join(map(str, ref['roi_size']))}) | 1 | SegResNet | {_fmt(ref['seconds_per_case'], 2)} | 1.00 |")
    if "max_memory_allocated_gib" in inference:
        lines += ["", f"GPU memory during inference: {inference['max_memory_allocated_gib']:.2f} GiB at most."]
    p = report["preprocessing"]
    lines += ["", f"### Preprocessing (case {p['case_id']}, median of {p['repeats']})", "", "| step | wall s | CPU s |", "|---|---:|---:|"]
    for step, figures in p["steps"].items():
        lines.append(f"| {step} | {figures['wall']:.2f} | {figures['cpu']:.2f} |")
    lines += [
        "",
        f"Preprocessing / reading: {p['preprocess_over_read_sitk']:.2f}x the SimpleITK read, {p['preprocess_over_read_nibabel']:.2f}x the nibabel read.",
        "",
        "### Targets",
        "",
        "| target | goal | measured | met |",
        "|---|---|---:|---|",
    ]
    for t in report["targets"]:
        lines.append(f"| {t['name']} | {t['target']} | {_fmt(t['value'], 2)} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def default_json_path(report: dict[str, Any], work_dir: Path) -> Path:
    """``results/<machine>-<date>.json``; smoke runs go to the work folder."""
    name = f"{report['machine_name']}-{report['date'][:10]}.json"
    if report["profile"]["name"] == "smoke":
        return work_dir / f"smoke-{name}"
    return RESULTS_DIR / name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument("--quick", action="store_const", const="quick", dest="profile", help="fewer cases and iterations (under ~10 min on 2 cores)")
    profile.add_argument("--smoke", action="store_const", const="smoke", dest="profile", help="seconds, tiny volumes: checks the runner, not the speed")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where training and inference run (default cpu)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here (default benchmarks/results/<machine>-<date>.json)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="where the synthetic cohort and its cache are kept (default benchmarks/.work)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or section lines")
    args = parser.parse_args(argv)
    try:
        report = run_benchmarks(PROFILES[args.profile or "full"], args.device, args.work_dir, progress=not args.no_progress)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    write_results(report, args.json or default_json_path(report, args.work_dir), markdown_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
