"""Internal labels to a task's region channels (BraTS: TC, WT, ET), for region-based (sigmoid) training."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from pipeline.tasks.task import TaskSpec, resolve_task

__all__ = ["LabelsToRegions", "LabelsToRegionsd"]


class LabelsToRegions(Transform):
    """Turn a one-channel internal label map ``(1, ...)`` into one channel per region of the task (BraTS: TC, WT, ET).

    The conversion is :meth:`pipeline.tasks.task.Task.labels_to_regions`; the output keeps the input's
    array type (numpy or torch, device included) and is uint8.

    Args:
        task: the task whose regions are made (``None``: BraTS glioma).
    """

    def __init__(self, task: TaskSpec = None) -> None:
        self.task = resolve_task(task)

    def __call__(self, label: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        if label.shape[0] != 1:
            raise ValueError(f"expected a one-channel label map (1, ...), got shape {tuple(label.shape)}")
        if isinstance(label, torch.Tensor):
            return torch.as_tensor(self.task.labels_to_regions(label[0].cpu().numpy()), device=label.device)
        return self.task.labels_to_regions(np.asarray(label)[0])


class LabelsToRegionsd(MapTransform):
    """Dictionary wrapper of :class:`LabelsToRegions`.

    Args:
        keys: keys of the label maps to convert.
        allow_missing_keys: do not raise if a key is absent.
        task: the task whose regions are made (``None``: BraTS glioma).
    """

    def __init__(self, keys: KeysCollection = "label", allow_missing_keys: bool = False, task: TaskSpec = None) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = LabelsToRegions(task)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d
