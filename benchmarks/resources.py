"""What each shipped configuration needs: peak host RAM, GPU memory, time per epoch and per case.

    .venv/bin/python -m benchmarks.resources [--quick] [--device cpu|cuda] [--json PATH] [--work-dir DIR]

For every configuration of the bundle (:data:`CONFIGURATIONS`: the CPU training configurations,
the demo, 2D, 3D, the GPU training configurations, the inference configurations and an ensemble
of fold models) on full-size (240x240x155) synthetic cases of :mod:`benchmarks.cohort`:

- training, measured where the configuration runs on ``--device``: the end-to-end step rate of
  the bundle's step and loader (:func:`benchmarks.training_step.measure_training`), extrapolated
  to the configuration's ``samples_per_epoch`` (validation not included), and the peak RSS of
  one short epoch of ``pipeline.training.workflow.train`` in a fresh process, training process and its
  largest loader worker (:func:`benchmarks.training_throughput.peak_memory`);
- inference, measured likewise: the peak RSS and the wall seconds of ``pipeline.inference.predict.predict``
  on one raw case in a fresh process (bundle model with seeded untrained weights: the work per
  case does not depend on them; the second call is timed, the first pays one-time costs);
- GPU memory: ``torch.cuda.max_memory_allocated`` on ``--device cuda``; elsewhere an estimate
  (:func:`gpu_memory_estimate`): weights, gradients and optimiser state from the parameter count,
  plus the bytes of every layer's output measured with forward hooks for one sample of the
  configuration's input shape, times its batch (training: times :data:`BACKWARD_FACTOR` for the
  gradients of those outputs and workspace; inference: every output counted as live at once, an
  upper bound). GPU time is not estimated: it is measured with ``--device cuda`` or left blank;
- growth: training RSS against cohort size (cases hard-linked under many ids,
  :func:`benchmarks.memory.measure_memory`), training and inference against image size (the
  ``small`` 96x96x62 synthetic grid against ``full``), inference time against cases per call.

Writes ``benchmarks/results/resources-<machine>-<date>.json`` and ``.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from benchmarks.cohort import DEFAULT_WORK_DIR, BenchmarkCohort, linked_cache, prepare_cohort
from benchmarks.machine import check_device, describe_machine, machine_name, write_results
from pipeline.core.errors import PipelineError

REPO = Path(__file__).resolve().parents[1]
CONFIGS_DIR = REPO / "bundles" / "brats_segmentation" / "configs"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
FORMAT_VERSION = 1
#: Training activation memory over the forward outputs: the saved outputs and, during backward, their gradients and workspace.
BACKWARD_FACTOR = 2.0
#: Optimiser state tensors per parameter (Adam and AdamW: first and second moments).
OPTIMIZER_STATES = {"adam": 2, "adamw": 2, "sgd": 1}


@dataclass(frozen=True)
class Configuration:
    """One shipped configuration: a row of the table.

    Attributes:
        name: the row's label (the config files as a user names them).
        stage: ``training`` or ``inference``.
        mode: ``2d``, ``2.5d`` or ``3d``.
        files: override files in ``configs/`` merged after ``train.yaml`` / ``inference.yaml``
            (training in 3D also merges each file's ``_3d`` variant, as the CLI does).
        device: where the configuration is meant to run (``cpu`` or ``cuda``).
        members: ensemble members (inference; the folds of ``train --folds all``).
        size: the synthetic grid it is measured on: ``full`` (240x240x155), or ``small`` for the
            demo, whose cohort is small cases.
    """

    name: str
    stage: str
    mode: str
    files: tuple[str, ...]
    device: str
    members: int = 1
    size: str = "full"

    def config_paths(self) -> tuple[Path, ...]:
        return tuple(CONFIGS_DIR / name for name in self.files)


CONFIGURATIONS: tuple[Configuration, ...] = (
    Configuration("train.yaml (2.5D, CPU default)", "training", "2.5d", (), "cpu"),
    Configuration("demo.yaml (make demo, small synthetic cases)", "training", "2.5d", ("demo.yaml",), "cpu", size="small"),
    Configuration("train.yaml --mode 2d", "training", "2d", (), "cpu"),
    Configuration("train_3d.yaml (--mode 3d)", "training", "3d", (), "cpu"),
    Configuration("gpu_train.yaml (2.5D)", "training", "2.5d", ("gpu_train.yaml",), "cuda"),
    Configuration("gpu_train_3d.yaml (3D)", "training", "3d", ("gpu_train.yaml",), "cuda"),
    Configuration("inference.yaml (2.5D)", "inference", "2.5d", (), "cpu"),
    Configuration("inference.yaml, mode 2d", "inference", "2d", (), "cpu"),
    Configuration("inference.yaml, mode 3d", "inference", "3d", (), "cpu"),
    Configuration("inference.yaml, ensemble of 5 folds", "inference", "2.5d", (), "cpu", members=5),
    Configuration("gpu_inference.yaml (2.5D)", "inference", "2.5d", ("gpu_inference.yaml",), "cuda"),
    Configuration("gpu_inference_3d.yaml (3D)", "inference", "3d", ("gpu_inference.yaml", "gpu_inference_3d.yaml"), "cuda"),
)


@dataclass(frozen=True)
class Profile:
    """How much a run measures.

    Attributes:
        name: ``quick`` or ``full``.
        cases: distinct full-size cases in the cohort.
        cohort_sizes: case ids of the training-memory runs (hard-linked caches).
        iterations: training iterations per rate, ``warmup`` of them not counted.
        warmup: warm-up iterations.
        memory_batches: batches in the epoch of each training-memory run.
        cases_per_call: cases of the inference-growth run (one call of ``predict`` over a folder).
    """

    name: str
    cases: int
    cohort_sizes: tuple[int, ...]
    iterations: int
    warmup: int
    memory_batches: int
    cases_per_call: int


PROFILES = {
    "full": Profile("full", 4, (10, 50, 200), 10, 2, 10, 4),
    "quick": Profile("quick", 3, (10, 200), 6, 2, 6, 3),
}


# ---- GPU memory estimate ----------------------------------------------------------------------


def parameter_bytes(network: torch.nn.Module) -> int:
    """Bytes of the network's parameters as stored (float32: 4 per parameter)."""
    return sum(p.numel() * p.element_size() for p in network.parameters())


def forward_output_bytes(network: torch.nn.Module, inputs: torch.Tensor) -> int:
    """Bytes of every leaf module's output in one forward pass over ``inputs``, counted with forward hooks."""
    total = 0

    def count(_: torch.nn.Module, __: Any, output: Any) -> None:
        nonlocal total
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        total += sum(t.numel() * t.element_size() for t in outputs if isinstance(t, torch.Tensor))

    leaves = [m for m in network.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    was_training = network.training
    try:
        network.eval()  # running statistics stay untouched; the output sizes are those of training
        with torch.no_grad():
            network(inputs)
    finally:
        network.train(was_training)
        for handle in handles:
            handle.remove()
    return total


def gpu_memory_estimate(
    network: torch.nn.Module,
    sample_shape: Sequence[int],
    batch_size: int,
    training: bool,
    optimizer_states: int = 2,
    backward_factor: float = BACKWARD_FACTOR,
    members: int = 1,
    extra_bytes: int = 0,
) -> dict[str, Any]:
    """GPU memory of one training step or one inference forward pass, estimated on the CPU.

    Activations are measured for one sample (:func:`forward_output_bytes`) and scaled by the batch:
    a convolutional network's layer outputs grow exactly with it. Training holds the weights, their
    gradients and ``optimizer_states`` tensors per parameter, and the activations times
    ``backward_factor``; inference holds ``members`` networks' weights and one batch's activations
    (members run one after the other). Not counted: the CUDA context and the caching allocator's
    slack (a few hundred MiB on current GPUs).

    Args:
        network: the configuration's network (float32).
        sample_shape: one input sample, channels first.
        batch_size: samples per step (inference: slices or windows per forward pass).
        training: a training step rather than inference.
        optimizer_states: optimiser tensors per parameter.
        backward_factor: training activations over the forward outputs.
        members: networks resident on the device (an ensemble).
        extra_bytes: anything else on the device (e.g. a stitched 3D probability volume).

    Returns:
        ``parameter_bytes``, ``state_bytes`` (weights, gradients, optimiser), ``activation_bytes``,
        ``total_bytes`` and ``total_gib``.
    """
    params = parameter_bytes(network)
    per_sample = forward_output_bytes(network, torch.zeros(1, *sample_shape))
    if training:
        state = params * (2 + optimizer_states)
        activations = int(per_sample * batch_size * backward_factor)
    else:
        state = params * members
        activations = per_sample * batch_size
    total = state + activations + extra_bytes
    return {
        "parameter_bytes": params,
        "state_bytes": state,
        "activation_bytes": activations,
        "extra_bytes": extra_bytes,
        "total_bytes": total,
        "total_gib": total / 2**30,
    }


# ---- configuration settings -------------------------------------------------------------------


def training_values(config: Configuration) -> dict[str, Any]:
    """The training knobs of ``config`` (batch, epoch length, epochs, workers, optimiser, AMP)."""
    from monai.bundle import ConfigParser

    from pipeline.training.workflow import training_config_files

    parser = ConfigParser()
    parser.read_config([str(f) for f in training_config_files(config.mode, config.config_paths())])
    parser["mode"] = config.mode
    keys = ("batch_size", "samples_per_epoch", "epochs", "num_workers", "optimizer_name", "amp", "patch_size", "slice_size", "cpu_threads")
    return {key: parser.get_parsed_content(key) for key in keys}


def inference_parser(config: Configuration, device: str = "cpu") -> Any:
    """``inference.yaml`` with ``config``'s override files, mode and device."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS_DIR / "inference.yaml"), *map(str, config.config_paths())])
    parser["mode"], parser["device"], parser["checkpoint"] = config.mode, device, None
    return parser


def sliding_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Windows a sliding-window pass places over ``shape``, with MONAI's scan interval (its helper is private)."""
    count = 1
    for size, window in zip(shape, roi):
        interval = max(int(window * (1 - overlap)), 1)
        count *= 1 if size <= window else math.ceil((size - window) / interval) + 1
    return count


def training_estimate(config: Configuration, cohort: BenchmarkCohort) -> dict[str, Any]:
    """GPU memory estimate of one training step of ``config``, for the cohort's sample shape."""
    from benchmarks.training_step import bundle_training_parts, resident_batch

    values = training_values(config)
    parts = bundle_training_parts(
        cohort.cache_dir, cohort.case_ids, "cpu", 1, config.mode, batch_size=1, num_workers=0, config_files=config.config_paths()
    )
    sample_shape = tuple(resident_batch(parts, "cpu")["image"].shape[1:])
    states = OPTIMIZER_STATES.get(str(values["optimizer_name"]), 2)
    estimate = gpu_memory_estimate(parts["network"], sample_shape, int(values["batch_size"]), training=True, optimizer_states=states)
    return {**estimate, "sample_shape": list(sample_shape), "batch_size": int(values["batch_size"])}


def inference_estimate(config: Configuration, cohort: BenchmarkCohort) -> dict[str, Any]:
    """GPU memory estimate of ``config``'s inference on the cohort's first case (one forward pass of ``sw_batch_size``)."""
    from pipeline.networks import spatial_divisor
    from pipeline.preprocessing.prepare import prepare_case

    parser = inference_parser(config)
    network = parser.get_parsed_content("network_def")
    inferer = parser.get_parsed_content("inferer")
    z, channels, x, y = prepare_case(cohort.records[0]).image.shape
    divisor = spatial_divisor(network)
    up = lambda size: math.ceil(size / divisor) * divisor  # noqa: E731
    extra = 0
    if config.mode == "3d":
        volume = (up(x), up(y), up(z))
        roi = tuple(inferer.roi_size) if inferer.roi_size else volume
        batch = min(inferer.sw_batch_size, sliding_windows(volume, roi, inferer.overlap))
        sample_shape: tuple[int, ...] = (channels, *roi)
        with torch.no_grad():
            out_channels = network.eval()(torch.zeros(1, channels, *(2 * divisor,) * 3)).shape[1]
        extra = (out_channels + 1) * x * y * z * 4  # the stitched probabilities and their weight map, float32 on the device
    else:
        planes = 1 if config.mode == "2d" else 2 * int(parser.get_parsed_content("context")) + 1
        sample_shape = (channels * planes, up(x), up(y))
        batch = min(inferer.sw_batch_size, z)
    estimate = gpu_memory_estimate(network, sample_shape, batch, training=False, members=config.members, extra_bytes=extra)
    return {**estimate, "sample_shape": list(sample_shape), "batch_size": batch}


# ---- measurements -----------------------------------------------------------------------------


def _mib(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def measure_training_config(config: Configuration, cohort: BenchmarkCohort, profile: Profile, device: str) -> dict[str, Any]:
    """Step rate, time per epoch and peak RSS of ``config``'s training on ``device``, on the cohort's cases."""
    from benchmarks.memory import linked_datalist
    from benchmarks.training_step import measure_training
    from benchmarks.training_throughput import peak_memory

    values = training_values(config)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    rate = measure_training(
        cohort.cache_dir, cohort.case_ids, device, profile.iterations, profile.warmup, config.mode,
        amp=bool(values["amp"]) and device == "cuda", config_files=config.config_paths(),
    )
    gpu_gib = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    samples_per_s = rate["end_to_end_samples_per_s"]
    cache, ids = linked_cache(cohort, profile.cohort_sizes[0])
    datalist = linked_datalist(cohort, cache, ids)
    out = cohort.root / f"resources-run-{config.mode}"
    shutil.rmtree(out, ignore_errors=True)
    try:
        main_mib, worker_mib = peak_memory(
            datalist, cache, config.mode, out, profile.memory_batches * int(values["batch_size"]), config.config_paths(), device
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)
    epoch_s = int(values["samples_per_epoch"]) / samples_per_s
    return {
        "device": device,
        "cases": profile.cohort_sizes[0],
        "batch_size": int(values["batch_size"]),
        "samples_per_epoch": int(values["samples_per_epoch"]),
        "epochs": int(values["epochs"]),
        "num_workers": int(values["num_workers"]),
        "torch_threads": rate["torch_threads"],
        "input_shape": rate["input_shape"],
        "samples_per_s": samples_per_s,
        "seconds_per_iteration": int(values["batch_size"]) / samples_per_s,
        "seconds_per_epoch": epoch_s,
        "seconds_per_run": epoch_s * int(values["epochs"]),
        "main_peak_rss_mib": _mib(main_mib),
        "worker_peak_rss_mib": _mib(worker_mib),
        "gpu_max_allocated_gib": gpu_gib,
    }


_INFERENCE_PROBE = """
import json, sys, time
import torch
from benchmarks.inference_speed import bundle_model
from benchmarks.machine import peak_rss_mib
from pipeline.inference.model import ensemble
from pipeline.inference.predict import predict
mode, files, members, device, case, out = json.loads(sys.argv[1])
models = [bundle_model(mode, False, device, tuple(files)) for _ in range(members)]
model = models[0] if members == 1 else ensemble(models)
predict(model, case, out + '/warmup', progress=False)
if device == 'cuda':
    torch.cuda.synchronize()
start = time.perf_counter()
summary = predict(model, case, out + '/timed', progress=False)
if device == 'cuda':
    torch.cuda.synchronize()
seconds = time.perf_counter() - start
gpu = torch.cuda.max_memory_allocated() / 2**30 if device == 'cuda' else None
print('PROBE', json.dumps({'seconds': seconds, 'cases': len(summary.segmentations),
      'peak_rss_mib': peak_rss_mib(), 'gpu_max_allocated_gib': gpu}))
"""


def measure_inference_config(config: Configuration, case: Path, out: Path, device: str) -> dict[str, Any]:
    """Peak RSS and wall seconds of ``predict`` with ``config``'s model over ``case`` (a case or a folder of cases), in a fresh process."""
    shutil.rmtree(out, ignore_errors=True)
    arguments = json.dumps([config.mode, [str(p) for p in config.config_paths()], config.members, device, str(case), str(out)])
    try:
        completed = subprocess.run([sys.executable, "-c", _INFERENCE_PROBE, arguments], cwd=REPO, capture_output=True, text=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if completed.returncode != 0:
        raise RuntimeError(f"inference probe for {config.name} failed:\n{completed.stderr[-2000:]}")
    figures = json.loads(next(line for line in completed.stdout.splitlines() if line.startswith("PROBE"))[6:])
    figures["seconds_per_case"] = figures["seconds"] / max(figures["cases"], 1)
    return {"device": device, **figures}


def _runs_here(config: Configuration, device: str) -> bool:
    """Whether ``config`` is measured on ``device``: every configuration on a GPU, the CPU ones on the CPU."""
    return device == "cuda" or config.device == "cpu"


def _section(name: str, progress: bool) -> None:
    if progress:
        print(f"[{datetime.now().strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)


def run_resources(profile: Profile, device: str = "cpu", work_dir: Path = DEFAULT_WORK_DIR, progress: bool = True) -> dict[str, Any]:
    """Every configuration's figures and the growth measurements; returns the report."""
    from benchmarks.memory import measure_memory

    check_device(device)
    started = time.perf_counter()
    load_at_start = os.getloadavg()
    machine = describe_machine(device)
    _section(f"cohorts: {profile.cases} full-size and {profile.cases} small synthetic cases in {work_dir}", progress)
    cohort = prepare_cohort(work_dir, profile.cases, "full", workers=min(2, machine["cpu_cores"]), progress=progress)
    small = prepare_cohort(work_dir, profile.cases, "small", workers=min(2, machine["cpu_cores"]), progress=progress)
    scratch = cohort.root / "resources-outputs"

    cohorts = {"full": cohort, "small": small}
    rows = []
    for config in CONFIGURATIONS:
        _section(config.name, progress)
        row: dict[str, Any] = {"configuration": asdict(config)}
        data = cohorts[config.size]
        if config.stage == "training":
            row["estimate"] = training_estimate(config, data)
            row["values"] = {k: v for k, v in training_values(config).items() if k != "patch_size" or config.mode == "3d"}
            if _runs_here(config, device):
                row["measured"] = measure_training_config(config, data, profile, device)
        else:
            row["estimate"] = inference_estimate(config, data)
            if _runs_here(config, device):
                row["measured"] = measure_inference_config(config, data.records[0].images[0].parent, scratch, device)
        rows.append(row)

    _section(f"growth: training memory over {', '.join(map(str, profile.cohort_sizes))} case ids", progress)
    batch = int(training_values(CONFIGURATIONS[0])["batch_size"])
    cohort_growth = measure_memory(cohort, profile.cohort_sizes, profile.memory_batches * batch)

    _section("growth: image size (small grid) and cases per call", progress)
    default_training, default_inference = CONFIGURATIONS[0], next(c for c in CONFIGURATIONS if c.stage == "inference")
    image_growth = {
        "small_grid": list(_grid_shape("small")),
        "full_grid": list(_grid_shape("full")),
        "training_small": measure_training_config(default_training, small, profile, device),
        "inference_small": measure_inference_config(default_inference, small.records[0].images[0].parent, scratch, device),
    }
    per_call = measure_inference_config(default_inference, cohort.data_root, scratch, device)

    report = {
        "benchmark": "brats-pipeline resources",
        "format_version": FORMAT_VERSION,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "profile": asdict(profile),
        "device": device,
        "machine": machine,
        "machine_name": machine_name(machine),
        "cohort": {"size": "full", "shape_xyz": list(_grid_shape("full")), "cases": len(cohort.records), "first_case": cohort.records[0].case_id},
        "method": {
            "backward_factor": BACKWARD_FACTOR,
            "optimizer_states": OPTIMIZER_STATES,
            "epoch_seconds": "samples_per_epoch / end-to-end samples/s of a short run (validation not included)",
            "gpu_estimate": "parameters x (2 + optimiser states) + per-sample layer outputs (forward hooks, float32) x batch x backward factor; "
            "inference: parameters x members + one forward pass's layer outputs (all counted live) + a stitched 3D volume; CUDA context not included",
        },
        "rows": rows,
        "growth": {"cohort_size": cohort_growth, "image_size": image_growth, "cases_per_call": per_call},
        "load_average": {"start": [round(v, 2) for v in load_at_start], "end": [round(v, 2) for v in os.getloadavg()]},
        "seconds": time.perf_counter() - started,
    }
    return report


def _grid_shape(size: str) -> tuple[int, ...]:
    from pipeline.synth import get_grid

    return tuple(get_grid(size).shape)


# ---- the table --------------------------------------------------------------------------------


def _gib(value: float | None) -> str:
    return "" if value is None else f"{value:.2f} GiB"


def _ram(mib: float | None) -> str:
    return "" if mib is None else f"{mib / 1024:.2f} GiB"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def table_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """One row of table cells per configuration, measured figures where there are some, estimates marked ``~ ... (est.)``."""
    rows = []
    for row in report["rows"]:
        config = Configuration(**{**row["configuration"], "files": tuple(row["configuration"]["files"])})
        measured, estimate = row.get("measured"), row["estimate"]
        gpu_measured = measured.get("gpu_max_allocated_gib") if measured else None
        gpu = _gib(gpu_measured) if gpu_measured is not None else f"~{estimate['total_gib']:.2f} GiB (est.)"
        where = "CPU" if not measured or measured["device"] == "cpu" else "GPU"
        cells = {"configuration": config.name, "runs on": "GPU" if config.device == "cuda" else "CPU"}
        if config.stage == "training":
            values = row["values"]
            shape = "x".join(map(str, estimate["sample_shape"][1:]))
            workers = int(values["num_workers"])
            cells["batch"] = (
                f"{values['batch_size']} x {shape}, {values['samples_per_epoch']:,}/epoch, {values['epochs']} epochs, "
                f"{workers} worker{'' if workers == 1 else 's'}"
            )
            if measured:
                worker = measured["worker_peak_rss_mib"] or 0
                cells["host RAM, training"] = f"{_ram(measured['main_peak_rss_mib'])} + {_ram(worker)} per worker"
                cells["time per epoch"] = f"{_duration(measured['seconds_per_epoch'])} ({where}; run {_duration(measured['seconds_per_run'])})"
            else:
                cells["host RAM, training"] = cells["time per epoch"] = "measure with --device cuda"
            cells["GPU memory, training"] = gpu
            cells["host RAM, inference per case"] = cells["GPU memory, inference"] = cells["time per case"] = ""
        else:
            cells["batch"] = f"{estimate['batch_size']} x {'x'.join(map(str, estimate['sample_shape'][1:]))} per forward pass" + (
                f", {config.members} members" if config.members > 1 else ""
            )
            cells["host RAM, training"] = cells["GPU memory, training"] = cells["time per epoch"] = ""
            cells["host RAM, inference per case"] = _ram(measured["peak_rss_mib"]) if measured else "measure with --device cuda"
            cells["GPU memory, inference"] = gpu
            cells["time per case"] = f"{_duration(measured['seconds_per_case'])} ({where})" if measured else "measure with --device cuda"
        rows.append(cells)
    return rows


COLUMNS = (
    "configuration", "runs on", "batch", "host RAM, training", "GPU memory, training", "time per epoch",
    "host RAM, inference per case", "GPU memory, inference", "time per case",
)


def growth_lines(report: dict[str, Any]) -> list[str]:
    """How memory and time grow with cohort size, image size and cases per call, as measured."""
    growth = report["growth"]
    runs = growth["cohort_size"]["runs"]
    sizes = ", ".join(f"{r['cases']} cases {_ram(r['main_peak_rss_mib'])} + {_ram(r['worker_peak_rss_mib'])} worker" for r in runs)
    first, last = runs[0], runs[-1]
    ratio = (last["main_peak_rss_mib"] + (last["worker_peak_rss_mib"] or 0)) / (first["main_peak_rss_mib"] + (first["worker_peak_rss_mib"] or 0))
    image = growth["image_size"]
    full_train = next(r for r in report["rows"] if r["configuration"]["name"] == CONFIGURATIONS[0].name).get("measured")
    full_infer = next(r for r in report["rows"] if r["configuration"]["stage"] == "inference").get("measured")
    small_grid, full_grid = "x".join(map(str, image["small_grid"])), "x".join(map(str, image["full_grid"]))
    verdict = "constant: the cache is memory-mapped per case, nothing per case is held" if ratio <= 1.1 else "it grows with the cohort"
    lines = [
        f"- Cohort size (training, train.yaml 2.5D, one short epoch): peak RSS {sizes}; {last['cases']} over {first['cases']} cases: "
        f"{ratio:.2f}x, so {verdict}.",
    ]
    if full_train:
        small = image["training_small"]
        lines.append(
            f"- Image size (training, train.yaml 2.5D): {small_grid} synthetic grid (input {'x'.join(map(str, small['input_shape'][1:]))}) "
            f"{small['samples_per_s']:.1f} slices/s, peak RSS {_ram(small['main_peak_rss_mib'])}; {full_grid} (input "
            f"{'x'.join(map(str, full_train['input_shape'][1:]))}) {full_train['samples_per_s']:.1f} slices/s, {_ram(full_train['main_peak_rss_mib'])}: "
            "time per slice grows with the slice's pixels, memory with the batch's activations."
        )
    if full_infer:
        small = image["inference_small"]
        lines.append(
            f"- Image size (inference, inference.yaml 2.5D): {small_grid} case {_duration(small['seconds_per_case'])}, peak RSS {_ram(small['peak_rss_mib'])}; "
            f"{full_grid} case {_duration(full_infer['seconds_per_case'])}, {_ram(full_infer['peak_rss_mib'])}: both grow with the case's voxels."
        )
    per_call = growth["cases_per_call"]
    one_case = f" against {_ram(full_infer['peak_rss_mib'])} for one case ({per_call['peak_rss_mib'] / full_infer['peak_rss_mib']:.2f}x)" if full_infer else ""
    lines.append(
        f"- Cases per call (inference.yaml 2.5D, `predict` over a folder of {per_call['cases']} cases): {_duration(per_call['seconds_per_case'])} per case, "
        f"peak RSS {_ram(per_call['peak_rss_mib'])}{one_case}: time grows linearly with the cases; `predict` takes them one at a time, "
        "so memory follows the largest case, not their number."
    )
    members = [r for r in report["rows"] if r["configuration"]["members"] > 1 and r.get("measured")]
    if full_infer and members:
        ensemble, k = members[0]["measured"], members[0]["configuration"]["members"]
        lines.append(
            f"- Ensemble members (inference.yaml 2.5D): {k} members {_duration(ensemble['seconds_per_case'])} per case, "
            f"{ensemble['seconds_per_case'] / full_infer['seconds_per_case']:.1f}x one model; peak RSS {_ram(ensemble['peak_rss_mib'])} against "
            f"{_ram(full_infer['peak_rss_mib'])}: time grows about linearly with the members (each runs over the whole case), memory little."
        )
    return lines


def markdown_report(report: dict[str, Any]) -> str:
    """The report as a markdown table with its method, hardware and growth notes."""
    m = report["machine"]
    gpu = f", GPU {m['gpu']['name']} ({m['gpu']['memory_gib']} GiB)" if m.get("gpu") else ", no GPU"
    lines = [
        f"## What each configuration needs: {report['machine_name']} ({report['profile']['name']} profile, {report['date'][:10]})",
        "",
        f"{m['cpu_model']}, {m['cpu_cores']} cores, {m['memory_gib']} GiB{gpu}; torch {m['torch']}, MONAI {m['monai']}; device {report['device']}; "
        f"synthetic {'x'.join(map(str, report['cohort']['shape_xyz']))} cases ({report['cohort']['cases']} distinct); run took "
        f"{report['seconds'] / 60:.1f} min; load average (1 min) {report['load_average']['start'][0]} at the start, {report['load_average']['end'][0]} "
        "at the end (other jobs shared the machine: timings are noisy).",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for cells in table_rows(report):
        lines.append("| " + " | ".join(cells[c] for c in COLUMNS) + " |")
    lines += [
        "",
        "Host RAM: peak resident set size, training process + its largest loader worker (the configuration's worker count; "
        "workers share library pages, so main + workers x worker is an upper bound), from one short epoch of `pipeline.training.workflow.train`; "
        "inference: `predict` on one raw case in a fresh process. Time per epoch: samples_per_epoch over the end-to-end rate of a "
        f"{report['profile']['iterations']}-iteration run ({report['profile']['warmup']} warm-up), validation not included; run = epochs x epoch. "
        "Time per case: the second `predict` call (reading, preprocessing, network, post-processing, inverse, writing). "
        "GPU memory marked (est.): " + report["method"]["gpu_estimate"] + f"; backward factor {report['method']['backward_factor']}. "
        "AMP configurations are estimated in float32 (bf16 activations take less). GPU time is measured only with --device cuda.",
        "",
        "### Growth",
        "",
        *growth_lines(report),
    ]
    return "\n".join(lines) + "\n"


def default_json_path(report: dict[str, Any]) -> Path:
    return RESULTS_DIR / f"resources-{report['machine_name']}-{report['date'][:10]}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.resources", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_const", const="quick", default="full", dest="profile", help="fewer cases and iterations")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where configurations are measured (default cpu)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here (default benchmarks/results/resources-<machine>-<date>.json)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="where the synthetic cohorts are kept (default benchmarks/.work)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or section lines")
    args = parser.parse_args(argv)
    try:
        report = run_resources(PROFILES[args.profile], args.device, args.work_dir, progress=not args.no_progress)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    write_results(report, args.json or default_json_path(report), markdown_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
