"""Whole-case inference time: raw NIfTI case in, segmentation NIfTI out, through the pipeline's ``predict``.

Each model is the bundle's ``configs/inference.yaml`` network and inferer for a mode (``mode``
and ``tta`` overridden, everything else as shipped), with untrained weights: the work per case
does not depend on them. One timed call of :func:`pipeline.predict.predict` covers what a user
waits for: discovering the case, reading its NIfTI files, preprocessing, the network over the
whole volume (batched slices or sliding windows), TTA, post-processing, the exact inverse onto
the input's grid, and writing the NIfTI file, colour table and manifest.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from pipeline.api import SegmentationModel
from pipeline.training import BUNDLE_DIR

INFERENCE_CONFIG = BUNDLE_DIR / "configs" / "inference.yaml"


def bundle_model(mode: str, tta: bool, device: str = "cpu", overrides: dict[str, Any] | None = None) -> SegmentationModel:
    """The bundle's inference model for ``mode`` with untrained (seeded) weights."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(INFERENCE_CONFIG))
    for key, value in {"mode": mode, "tta": tta, "device": device, **(overrides or {})}.items():
        parser[key] = value
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    inferer = parser.get_parsed_content("inferer")
    return SegmentationModel(network, inferer, postprocessing=parser["postprocessing"], device=device)


def time_case(model: SegmentationModel, case_dir: Path, out_dir: Path, repeats: int = 1, warmup: bool = True) -> float:
    """Median wall-clock seconds of predicting one case folder into ``out_dir``."""
    from pipeline.predict import predict

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
    overrides: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Seconds per case for each ``(mode, tta)`` variant, with the model's settings.

    The first variant always gets a warm-up call (imports, first allocations); ``warmup_each``
    gives every variant one, so its first-call costs (e.g. oneDNN kernel selection) stay out too.
    """
    results = []
    for index, (mode, tta) in enumerate(variants):
        model = bundle_model(mode, tta, device, overrides)
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
