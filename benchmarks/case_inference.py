"""Whole-case inference time: raw NIfTI case in, segmentation NIfTI out, through the pipeline's ``predict``.

Each model is ``inference_speed.bundle_model``: the bundle's ``configs/inference.yaml`` network,
inferer and post-processing for a mode (``mode`` and ``tta`` overridden, everything else as
shipped), with untrained weights: the work per case does not depend on them. One timed call of
:func:`pipeline.inference.predict.predict` covers what a user waits for: discovering the case, reading its
NIfTI files, preprocessing, the network over the whole volume (batched slices or sliding
windows), TTA, post-processing, the exact inverse onto the input's grid, and writing the NIfTI
file, colour table and manifest. (``inference_speed.py`` splits the same work into phases.)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.inference_speed import bundle_model
from pipeline.inference.model import SegmentationModel


def time_case(model: SegmentationModel, case_dir: Path, out_dir: Path, repeats: int = 1, warmup: bool = True) -> float:
    """Median wall-clock seconds of predicting one case folder into ``out_dir``."""
    from pipeline.inference.predict import predict

    if warmup:
        predict(model, case_dir, out_dir, progress=False)
    times = []
    for _ in range(repeats):
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        predict(model, case_dir, out_dir, progress=False)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def measure_inference(
    case_dir: Path,
    out_dir: Path,
    device: str = "cpu",
    variants: tuple[tuple[str, bool], ...] = (("2d", False), ("2d", True), ("2.5d", False), ("2.5d", True), ("3d", False), ("3d", True)),
    repeats: int = 1,
    warmup_each: bool = True,
) -> list[dict[str, Any]]:
    """Seconds per case for each ``(mode, tta)`` variant, with the model's settings.

    The first variant always gets a warm-up call (imports, first allocations); ``warmup_each``
    gives every variant one, so its first-call costs (e.g. oneDNN kernel selection) stay out too.
    """
    results = []
    for index, (mode, tta) in enumerate(variants):
        model = bundle_model(mode, tta, device)
        seconds = time_case(model, case_dir, out_dir / f"{mode}-{'tta' if tta else 'plain'}", repeats, warmup=warmup_each or index == 0)
        inferer = model.inferer
        results.append(
            {
                "mode": mode,
                "tta": tta,
                "tta_passes": len(inferer.flips()),
                "network": type(model.network).__name__,
                "roi_size": list(inferer.roi_size) if inferer.roi_size else None,
                "sw_batch_size": inferer.sw_batch_size,
                "seconds_per_case": seconds,
            }
        )
    return results
