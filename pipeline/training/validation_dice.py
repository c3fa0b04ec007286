"""Validation during training: whole cached volumes in, per-patient Dice of every scored structure out.

The evaluator reads each validation patient's whole volume from the cache
(:class:`ValidationVolumes`), predicts it with :class:`pipeline.inference.inferers.EngineInferer`, and
turns prediction and ground truth into one binary mask per scored structure of the task (BraTS
glioma: NEC, ED, ET, WT, TC; :class:`StructureMasks`). Dice uses MONAI's ``DiceMetric(ignore_empty=False)``: a structure
absent from both prediction and ground truth scores 1, as BraTS scores it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.handlers import IgniteMetricHandler
from monai.metrics import DiceMetric
from torch.utils.data import Dataset

from pipeline.preprocessing.cache import load_case, read_meta
from pipeline.tasks.task import DEFAULT_TASK, Task, TaskSpec, model_task, resolve_task

__all__ = ["StructureMasks", "ValidationVolumes", "key_metric", "structure_metrics"]


#: Name of the key validation metric (mean Dice over patients and the task's structures); it selects the best checkpoint.
KEY_METRIC = "val_mean_dice"


class ValidationVolumes(Dataset):
    """Whole cached volumes: ``image`` float16 ``(Z, C, X, Y)``, ``label`` uint8 ``(Z, X, Y)``, ``case_id``.

    Arrays are memory-mapped and read when an item is requested, so memory holds one volume at a time.

    Args:
        cache_dir: the preprocessed cache.
        case_ids: the validation cases (labelled).
    """

    def __init__(self, cache_dir: str | Path, case_ids: Sequence[str]) -> None:
        self.cache_dir = Path(cache_dir)
        self.case_ids = list(case_ids)
        for case_id in self.case_ids:
            read_meta(self.cache_dir, case_id, require_label=True)

    def __len__(self) -> int:
        return len(self.case_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        case = load_case(self.cache_dir, self.case_ids[index], require_label=True)
        image, label = torch.from_numpy(np.array(case.image)), torch.from_numpy(np.array(case.label))
        return {"image": image, "label": label, "case_id": self.case_ids[index]}


def _structure_masks(labels: torch.Tensor, task: Task = DEFAULT_TASK) -> torch.Tensor:
    """One binary channel per scored structure of internal labels, in the task's order (:meth:`pipeline.tasks.task.Task.structure_masks`)."""
    masks = task.structure_masks(labels)
    return torch.stack([masks[name] for name in task.structures]).to(torch.uint8)


class StructureMasks:
    """Evaluator post-processing: decode ``pred`` probabilities to labels, then both ``pred`` and ``label`` to structure masks.

    Args:
        output_mode: ``softmax`` (argmax over background and the classes) or ``regions`` (the
            task's regions thresholded at 0.5), decoded by :meth:`pipeline.tasks.task.Task.decode` as
            at inference; ``None``: the task's target.
        task: the task (``None``: BraTS glioma).
    """

    def __init__(self, output_mode: str | None = None, task: TaskSpec = None) -> None:
        self.task = model_task(task, output_mode)
        self.output_mode = self.task.target

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        probabilities = data["pred"]
        decoded = self.task.decode(probabilities.detach().cpu().numpy())
        predicted = torch.as_tensor(decoded, device=probabilities.device)
        label = torch.as_tensor(data["label"]).to(probabilities.device)
        if label.ndim == predicted.ndim + 1:
            label = label[0]
        return {**data, "pred": _structure_masks(predicted, self.task), "label": _structure_masks(label, self.task)}


def _select(structure: str | None, task: Task) -> Callable[[Any], tuple[list[torch.Tensor], list[torch.Tensor]]]:
    channel = None if structure is None else list(task.structures).index(structure)

    def transform(output: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        items = output if isinstance(output, list) else [output]
        if channel is None:
            return [d["pred"] for d in items], [d["label"] for d in items]
        return [d["pred"][channel : channel + 1] for d in items], [d["label"][channel : channel + 1] for d in items]

    return transform


def dice_metric(structure: str | None = None, task: TaskSpec = None) -> IgniteMetricHandler:
    """Per-patient Dice with the BraTS empty-case convention, of one structure or (``None``) all the task's structures averaged (BraTS: all five)."""
    return IgniteMetricHandler(
        metric_fn=DiceMetric(include_background=True, reduction="mean", ignore_empty=False),
        output_transform=_select(structure, resolve_task(task)),
    )


def key_metric(task: TaskSpec = None) -> dict[str, IgniteMetricHandler]:
    """The evaluator's key metric: ``val_mean_dice``, over the task's structures."""
    return {KEY_METRIC: dice_metric(task=task)}


def structure_metrics(task: TaskSpec = None) -> dict[str, IgniteMetricHandler]:
    """``val_dice_<structure>`` for every structure of the task (BraTS: NEC, ED, ET, WT and TC)."""
    return {f"val_dice_{name}": dice_metric(name, task) for name in resolve_task(task).structures}
