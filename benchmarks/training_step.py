"""Training throughput: the bundle's training step alone against the same step fed by its loader.

The network, loss, optimiser and DataLoader are built from the bundle's ``configs/train.yaml``
(the definition ``make train`` runs) with only paths, mode, device and sizes overridden, and
driven by MONAI's ``SupervisedTrainer`` with the bundle's gradient clipping, as training does:

- *model step alone*: the trainer iterates over one batch already on the device, repeated;
- *end to end*: the trainer iterates over the bundle's DataLoader (memory-mapped cache, 2.5D
  stacking, augmentation, foreground-weighted sampling, its worker count) with the bundle's
  ``prepare_batch`` (with ``augment_on: device``, as ``configs/gpu_train.yaml`` sets, the
  augmentation runs there, on the device).

Samples/s are counted between iteration ends after a warm-up (DataLoader worker start,
``torch.compile``), so both figures are steady-state rates of the same step.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pipeline.training.workflow import GPU_CONFIG, training_config_files


def bundle_training_parts(
    cache_dir: Path,
    case_ids: Sequence[str],
    device: str,
    iterations: int,
    mode: str = "2.5d",
    batch_size: int | None = None,
    num_workers: int | None = None,
    overrides: dict[str, Any] | None = None,
    config_files: Sequence[str | Path] | None = None,
) -> dict[str, Any]:
    """The bundle's network, loss, optimiser and training DataLoader over ``case_ids`` of ``cache_dir``.

    On CUDA the bundle's ``configs/gpu_train.yaml`` is merged over ``configs/train.yaml`` when present,
    unless ``config_files`` names the override files to merge (``()``: ``train.yaml`` alone).

    Args:
        cache_dir: the preprocessed cache.
        case_ids: the training cases (all of them: no validation split is needed here).
        device: ``cpu`` or ``cuda``.
        iterations: batches the DataLoader must provide in one pass.
        mode: ``2d``, ``2.5d`` or ``3d``.
        batch_size: samples per batch (``None``: the bundle's).
        num_workers: DataLoader workers (``None``: the bundle's).
        overrides: any other bundle keys.
        config_files: override files merged after ``train.yaml`` (``None``: by device, as above).

    Returns:
        ``network``, ``loss``, ``optimizer``, ``dataloader``, ``prepare_batch`` (the trainer's: with
        ``augment_on: device`` it augments on the device), ``batch_size``, ``num_workers``,
        ``amp_dtype`` (a torch dtype), ``grad_clip_norm`` and ``cpu_threads`` (the torch threads
        the bundle's ``initialize`` sets, or ``None``).
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    if config_files is None:
        config_files = [GPU_CONFIG] if device == "cuda" and GPU_CONFIG.is_file() else []
    files = training_config_files(mode, config_files)
    parser.read_config([str(f) for f in files])
    settings: dict[str, Any] = {
        "dataset_dir": str(cache_dir),
        "cache_dir": str(cache_dir),
        "device": f"$torch.device('{device}')",
        "mode": mode,
        "fold_cases": [list(case_ids), []],
        "progress": False,
        **(overrides or {}),
    }
    if batch_size is not None:
        settings["batch_size"] = int(batch_size)
    if num_workers is not None:
        settings["num_workers"] = int(num_workers)
    for key, value in settings.items():
        parser[key] = value
    value = parser.get_parsed_content
    parser["samples_per_epoch"] = int(iterations) * int(value("batch_size"))
    return {
        "network": parser.get_parsed_content("network"),
        "loss": parser.get_parsed_content("loss"),
        "optimizer": parser.get_parsed_content("optimizer"),
        "dataloader": parser.get_parsed_content("train#dataloader"),
        "prepare_batch": parser.get_parsed_content("train#trainer#prepare_batch"),
        "batch_size": int(value("batch_size")),
        "num_workers": int(value("num_workers")),
        "amp_dtype": getattr(torch, value("amp_dtype")),
        "grad_clip_norm": value("grad_clip_norm"),
        "cpu_threads": value("cpu_threads") if "cpu_threads" in parser else None,
    }


def run_trainer(
    parts: dict[str, Any],
    data: Any,
    iterations: int,
    warmup: int,
    device: str,
    amp: bool = False,
    compile: bool = False,
) -> dict[str, float]:
    """Run ``iterations`` training iterations over ``data`` and return the steady-state rate after ``warmup``.

    Returns:
        ``samples_per_s``, ``seconds`` (measured part) and ``iterations`` (measured).
    """
    from ignite.engine import Events
    from monai.engines import SupervisedTrainer, default_prepare_batch
    from monai.inferers import SimpleInferer

    from pipeline.training.handlers import GradientClipping

    if iterations <= warmup:
        raise ValueError(f"need more iterations ({iterations}) than warm-up iterations ({warmup})")
    trainer = SupervisedTrainer(
        device=torch.device(device),
        max_epochs=1,
        epoch_length=iterations,
        train_data_loader=data,
        network=parts["network"],
        optimizer=parts["optimizer"],
        loss_function=parts["loss"],
        inferer=SimpleInferer(),
        amp=amp,
        amp_kwargs={"dtype": parts["amp_dtype"]},
        compile=compile,
        decollate=False,
        train_handlers=[GradientClipping(parts["grad_clip_norm"])],
        prepare_batch=parts["prepare_batch"] if data is parts["dataloader"] else default_prepare_batch,
    )
    stamps: list[float] = []

    def stamp(_: Any) -> None:
        if device == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    trainer.add_event_handler(Events.ITERATION_COMPLETED, stamp)
    trainer.run()
    measured = len(stamps) - warmup
    seconds = stamps[-1] - stamps[warmup - 1] if warmup > 0 else stamps[-1] - stamps[0]
    if warmup == 0:
        measured -= 1
    return {"samples_per_s": measured * parts["batch_size"] / seconds, "seconds": seconds, "iterations": measured}


def resident_batch(parts: dict[str, Any], device: str) -> dict[str, Any]:
    """One batch from the bundle's DataLoader, moved to ``device`` (for the model-step-alone rate)."""
    iterator = iter(parts["dataloader"])
    batch = next(iterator)
    del iterator  # stops the DataLoader workers
    batch = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
    batch["image"] = batch["image"].float()  # augment_on: device sends float16; the model step alone takes it as training does
    return batch


def measure_training(
    cache_dir: Path,
    case_ids: Sequence[str],
    device: str = "cpu",
    iterations: int = 12,
    warmup: int = 2,
    mode: str = "2.5d",
    batch_size: int | None = None,
    num_workers: int | None = None,
    amp: bool = False,
    compile: bool = False,
    config_files: Sequence[str | Path] | None = None,
) -> dict[str, Any]:
    """Samples/s of the bundle's training step alone and end to end with its loader, and their ratio.

    The torch thread count is the bundle's ``cpu_threads`` during the measurement, as in training.
    ``config_files``: as :func:`bundle_training_parts` takes them.
    """
    parts = bundle_training_parts(cache_dir, case_ids, device, iterations, mode, batch_size, num_workers, config_files=config_files)
    previous_threads = torch.get_num_threads()
    if parts["cpu_threads"]:
        torch.set_num_threads(int(parts["cpu_threads"]))
    try:
        batch = resident_batch(parts, device)
        # a first short run pays the one-time costs (allocator growth, kernel selection, compilation) for both measurements
        run_trainer(parts, [batch] * (warmup + 2), warmup + 2, warmup, device, amp, compile)
        model_only = run_trainer(parts, [batch] * iterations, iterations, warmup, device, amp, compile)
        end_to_end = run_trainer(parts, parts["dataloader"], iterations, warmup, device, amp, compile)
        threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous_threads)
    return {
        "mode": mode,
        "device": device,
        "amp": amp,
        "compile": compile,
        "batch_size": parts["batch_size"],
        "num_workers": parts["num_workers"],
        "torch_threads": threads,
        "input_shape": list(batch["image"].shape),
        "model_only_samples_per_s": model_only["samples_per_s"],
        "end_to_end_samples_per_s": end_to_end["samples_per_s"],
        "end_to_end_over_model_only": end_to_end["samples_per_s"] / model_only["samples_per_s"],
        "iterations_measured": model_only["iterations"],
    }


def training_flops_per_sample(parts: dict[str, Any], batch: dict[str, Any]) -> float:
    """FLOPs of one training step (forward, loss, backward) per sample, counted by ``FlopCounterMode``.

    Counts the matrix multiplications and convolutions (PyTorch's counter ignores element-wise
    operations), the figure a GPU's tensor-core peak is quoted for.
    """
    from torch.utils.flop_counter import FlopCounterMode

    network, loss_function = parts["network"], parts["loss"]
    network.train()
    with FlopCounterMode(display=False) as counter:
        loss = loss_function(network(batch["image"].float()), batch["label"])
        loss.backward()
    network.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch["image"].shape[0]
