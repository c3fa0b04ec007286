"""End-to-end inference time for one 240x240x155 case: NIfTI in, segmentation NIfTI out.

Times the default model of the bundle (``configs/inference.yaml``: 2.5D UNet, 5 slices of context,
no TTA; untrained seeded weights, the work per case does not depend on them) through the same
functions ``brats-pipeline predict`` runs, phase by phase, and then ``predict`` itself end to end:

* read + preprocess: ``prepare_case`` (read the 4 NIfTI files, reorient to RAS, crop, z-score);
* network: ``VolumeInferer`` over every axial slice (batched 2.5D stacks);
* post-process + labels: argmax and ``PostProcessing``;
* invert: ``restore_to_original`` onto the input's grid;
* write: ``write_segmentation`` (uint8 NIfTI, the input's header, atomic);
* predict end to end: all of the above plus discovering the case, colour table and manifest.

Uses the real case BraTS2021_00006 when ``../shared/data/real_brats`` is present, else a
synthetic full-size case made with ``pipeline.synth``. The target is well under 30 s per case
on a 2-core CPU.

    .venv/bin/python benchmarks/inference_speed.py [--case DIR] [--repeats 3] [--device cpu] [--mode 2.5d] [--tta]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

REAL_CASE = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_brats" / "BraTS2021_00006"
INFERENCE_CONFIG = Path(__file__).resolve().parents[1] / "bundles" / "brats_segmentation" / "configs" / "inference.yaml"


def bundle_model(mode: str, tta: bool, device: str, config_files: tuple[str | Path, ...] = ()):
    """The bundle's inference ``model`` component (network, inferer, post-processing) with seeded untrained weights.

    ``config_files`` are override files merged after ``inference.yaml`` (e.g. ``gpu_inference.yaml``).
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(INFERENCE_CONFIG), *map(str, config_files)])
    parser["mode"], parser["tta"], parser["device"], parser["checkpoint"] = mode, tta, device, None
    torch.manual_seed(0)
    return parser.get_parsed_content("model")  # the config's own components, untrained weights


def case_folder(requested: Path | None, work: Path) -> Path:
    """The case to time: ``--case``, else the real BraTS2021_00006, else a synthetic full-size case."""
    if requested is not None:
        return requested
    if REAL_CASE.is_dir():
        return REAL_CASE
    from pipeline.synth import generate_cohort

    return generate_cohort(work / "synthetic", cases=1, seed=0, size="full", progress=False)[0]


def median_seconds(function: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of ``function`` over ``repeats`` calls (after one warm-up)."""
    function()
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        function()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", type=Path, default=None, help="case folder (default: BraTS2021_00006 or a synthetic case)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mode", default="2.5d", choices=["2d", "2.5d", "3d"])
    parser.add_argument("--tta", action="store_true")
    args = parser.parse_args()

    from pipeline.datasets import discover_case
    from pipeline.inference.writers import write_segmentation
    from pipeline.core.io import load_nifti
    from pipeline.tasks.labels import get_convention
    from pipeline.inference.predict import predict
    from pipeline.core.geometry import restore_to_original
    from pipeline.preprocessing.prepare import prepare_case

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        case = case_folder(args.case, work)
        model = bundle_model(args.mode, args.tta, args.device)
        record = discover_case(case)
        prepared = prepare_case(record)
        scores = model.inferer(model.network, prepared.image, model.device)
        cache_labels = model.postprocessing(model.inferer.to_labels(scores))
        labels = restore_to_original(cache_labels, prepared.meta)
        reference = load_nifti(record.images[0])
        convention = get_convention(record.label_convention)

        phases: dict[str, Callable[[], object]] = {
            "read + preprocess (prepare_case)": lambda: prepare_case(record),
            "network over the volume": lambda: model.inferer(model.network, prepared.image, model.device),
            "labels + post-processing": lambda: model.postprocessing(model.inferer.to_labels(scores)),
            "invert (restore_to_original)": lambda: restore_to_original(cache_labels, prepared.meta),
            "write NIfTI": lambda: write_segmentation(labels, reference, work / "phase" / "seg.nii.gz", convention),
            "predict, end to end": lambda: predict(model, case, work / "predict", progress=False),
        }
        results = {name: median_seconds(function, args.repeats) for name, function in phases.items()}

    threads = torch.get_num_threads()
    print(f"case: {record.case_id} {tuple(reference.shape[:3])}, cache grid (Z, C, X, Y) {prepared.image.shape}")
    print(
        f"model: bundle inference.yaml, mode {args.mode}, context {model.inferer.context}, tta {args.tta}, "
        f"sw_batch_size {model.inferer.sw_batch_size}, device {args.device}, torch threads {threads}, CPUs {os.cpu_count()}"
    )
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"seconds per case: median of {args.repeats} after a warm-up; load average {load} (other processes share the CPUs)\n")
    for name, (wall, cpu) in results.items():
        print(f"  {name:<34} wall {wall:7.2f} s   cpu {cpu:7.2f} s")
    parts = sum(wall for name, (wall, _) in results.items() if name != "predict, end to end")
    print(f"\n  sum of the phases                  wall {parts:7.2f} s")


if __name__ == "__main__":
    main()
