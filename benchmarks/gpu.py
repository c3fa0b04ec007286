"""GPU figures: 2.5D training with and without AMP and ``torch.compile``, GPU memory, and the share of the GPU's peak.

Every variant is the bundle's training step (:mod:`benchmarks.training_step`, with
``configs/gpu_train.yaml`` merged when the bundle has it) alone and end to end with its
DataLoader. The share of peak is the training step's FLOPs (``FlopCounterMode``: convolutions
and matrix products, forward and backward) times the samples/s reached, over the GPU's dense
bf16 peak from :data:`benchmarks.machine.PEAK_BF16_FLOPS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.machine import check_device, peak_bf16_flops
from benchmarks.training_step import bundle_training_parts, measure_training, resident_batch, training_flops_per_sample


def measure_gpu_training(
    cache_dir: Path,
    case_ids: Sequence[str],
    iterations: int,
    warmup: int,
    batch_size: int | None = None,
    num_workers: int | None = None,
    variants: Sequence[tuple[bool, bool]] = ((False, False), (True, False), (False, True), (True, True)),
) -> dict[str, Any]:
    """Samples/s, GPU memory and share of peak of the 2.5D training step for each ``(amp, compile)`` variant.

    Raises:
        ConfigError: when no CUDA GPU is usable.
    """
    check_device("cuda")
    name = torch.cuda.get_device_name(0)
    peak = peak_bf16_flops(name)
    parts = bundle_training_parts(cache_dir, case_ids, "cuda", 1, batch_size=batch_size, num_workers=0)
    flops = training_flops_per_sample(parts, resident_batch(parts, "cuda"))
    del parts
    results = []
    for amp, compile in variants:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        figures = measure_training(cache_dir, case_ids, "cuda", iterations, warmup, "2.5d", batch_size, num_workers, amp, compile)
        figures["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        for key in ("model_only", "end_to_end"):
            achieved = flops * figures[f"{key}_samples_per_s"]
            figures[f"{key}_tflops"] = achieved / 1e12
            figures[f"{key}_fraction_of_peak_bf16"] = achieved / peak if peak else None
        results.append(figures)
    return {"gpu": name, "peak_bf16_tflops": peak / 1e12 if peak else None, "training_gflop_per_sample": flops / 1e9, "training": results}


def max_memory_during(function: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """Call ``function`` and return its result with the GPU memory it allocated at most (GiB)."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    result = function(*args, **kwargs)
    return result, torch.cuda.max_memory_allocated() / 2**30
