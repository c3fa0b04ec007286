"""The plain 2D baseline of the planar cross-validation: what the original Kaggle LGG and image-folder systems did.

A MONAI 2D UNet (the pipeline's channels, 16-256, 2 residual units) on whole slices read from the
raw TIFF/PNG files (:func:`pipeline.datasets.case_checks.read_planar`, no cache), scaled to 0-1
(``/ 255``), DiceCE over softmax background/tumour, random flips and rot90, slices drawn
uniformly (no tumour-aware sampling, no validation, no post-processing), Adam with the learning
rate falling linearly to 0 at the budget's end. The budget is CPU seconds of this process
(``time.process_time``), so it matches the pipeline's measured training CPU time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet

from pipeline.datasets.records import CaseRecord
from pipeline.datasets.case_checks import read_planar
from pipeline.core.errors import InputError
from pipeline.tasks.task import Task

__all__ = ["BATCH_SIZE", "LEARNING_RATE", "load_case", "predict_case", "train"]

BATCH_SIZE, LEARNING_RATE = 16, 1e-3


def load_case(record: CaseRecord, task: Task) -> tuple[np.ndarray, np.ndarray | None]:
    """The raw slices of a case scaled to 0-1, ``(slices, channels, rows, columns)`` float32, and its 0/1 masks ``(slices, rows, columns)`` or None."""
    case, problems = read_planar(record, task)
    if case is None:
        raise InputError(*(problems[0].split(": ", 1) if problems else (record.images[0], "unreadable")))
    image = np.stack(case.channels).transpose(3, 0, 1, 2).astype(np.float32) / 255.0
    label = None if case.label is None else (case.label.transpose(2, 0, 1) > 0).astype(np.int64)
    return np.ascontiguousarray(image), label


def _padded(arrays: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Arrays ``(..., rows, columns)`` zero-padded at the end to ``size`` and stacked (slices of different sizes batch together)."""
    return np.stack([np.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, size[0] - a.shape[-2]), (0, size[1] - a.shape[-1])]) for a in arrays])


def _fit(length: int) -> int:
    """A side the UNet's four halvings take: a multiple of 16, at least 32 (instance norm needs more than one pixel at the bottom)."""
    return max(32, -(-length // 16) * 16)


def _network(channels: int) -> UNet:
    return UNet(2, channels, 2, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)


def train(
    images: Sequence[np.ndarray], labels: Sequence[np.ndarray], seconds: float, seed: int = 0, clock: Callable[[], float] = time.process_time
) -> tuple[UNet, int]:
    """Train until ``clock()`` has advanced ``seconds`` (CPU seconds by default); the network and the number of steps."""
    rng, _ = np.random.default_rng(seed), torch.manual_seed(seed)
    slices = [(c, z) for c, image in enumerate(images) for z in range(len(image))]
    size = tuple(max(image.shape[d] for image in images) for d in (2, 3))
    size = (_fit(size[0]), _fit(size[1]))
    network = _network(images[0].shape[1]).train()
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE)
    start = clock()
    deadline, steps = start + seconds, 0
    while (now := clock()) < deadline:
        for group in optimizer.param_groups:
            group["lr"] = LEARNING_RATE * (deadline - now) / max(seconds, 1e-6)
        xs, ys = [], []
        for c, z in (slices[i] for i in rng.integers(0, len(slices), BATCH_SIZE)):
            x, y = images[c][z], labels[c][z][None]
            turns = int(rng.integers(0, 4))
            x, y = np.rot90(x, turns, (1, 2)), np.rot90(y, turns, (1, 2))
            for axis in (1, 2):
                if rng.random() < 0.5:
                    x, y = np.flip(x, axis), np.flip(y, axis)
            xs.append(np.ascontiguousarray(x)), ys.append(np.ascontiguousarray(y))
        shape = tuple(max(a.shape[d] for a in xs) for d in (1, 2))  # rot90 swaps a non-square slice's sides
        shape = (max(shape[0], size[0]), max(shape[1], size[1]))
        x, y = torch.from_numpy(_padded(xs, shape)), torch.from_numpy(_padded(ys, shape))
        optimizer.zero_grad()
        loss_function(network(x), y).backward()
        optimizer.step()
        steps += 1
    return network.eval(), steps


@torch.no_grad()
def predict_case(network: UNet, image: np.ndarray, batch: int = 16) -> np.ndarray:
    """Internal labels ``(rows, columns, slices)`` (argmax, no post-processing) of every slice of ``image`` ``(slices, C, rows, columns)``."""
    rows, columns = image.shape[2:]
    padded = np.pad(image, [(0, 0), (0, 0), (0, _fit(rows) - rows), (0, _fit(columns) - columns)])
    parts = [network(torch.from_numpy(padded[z : z + batch])).argmax(1).numpy().astype(np.uint8) for z in range(0, len(padded), batch)]
    return np.ascontiguousarray(np.concatenate(parts)[:, :rows, :columns].transpose(1, 2, 0))
