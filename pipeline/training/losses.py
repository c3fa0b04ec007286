"""Training losses per target: Dice + cross-entropy for softmax classes, Dice + BCE for sigmoid regions.

MONAI's ``DiceCELoss`` computes its cross-entropy term with ``torch.nn.CrossEntropyLoss`` (a
softmax across channels) whenever the output has more than one channel, even with
``sigmoid=True``. For nested, overlapping sigmoid regions (BraTS TC, WT, ET) that term is not a
per-region binary cross-entropy: a background voxel (all regions 0) costs nothing however high
its region probabilities are, and on the real BraTS folds a regions model trained that way marked
about fifteen times the true tumour volume. Regions therefore train with MONAI's
``DiceFocalLoss`` at ``gamma=0``, which is exactly Dice + binary cross-entropy per channel.

A deeply supervised network (``DynUNet``, see :mod:`pipeline.networks`) stacks its outputs on dim 1
in training; MONAI's ``DeepSupervisionLoss`` weighs them (1, 1/2, 1/4, ...) once they are unstacked.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss, DiceFocalLoss

from pipeline.core.errors import ConfigError
from pipeline.tasks.task import TARGETS

__all__ = ["StackedDeepSupervisionLoss", "build_loss"]


class StackedDeepSupervisionLoss(DeepSupervisionLoss):
    """MONAI's ``DeepSupervisionLoss`` for outputs stacked on dim 1 (DynUNet's training output), which it takes as a list."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # noqa: A002 (MONAI's argument name)
        stacked = isinstance(input, torch.Tensor) and input.ndim == target.ndim + 1
        return super().forward(list(torch.unbind(input, dim=1)) if stacked else input, target)


def build_loss(
    target: str,
    batch: bool = True,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    class_weights: Sequence[float] | None = None,
    out_channels: int | None = None,
    deep_supervision: int = 0,
) -> torch.nn.Module:
    """The training loss of a target.

    Args:
        target: ``softmax`` (labels one-hot encoded in the loss; Dice + cross-entropy) or
            ``regions`` (one binary channel per region; Dice + binary cross-entropy per channel).
        batch: Dice over the whole batch rather than per sample (steadier on tumour-free slices).
        smooth_nr: Dice numerator smoothing.
        smooth_dr: Dice denominator smoothing.
        class_weights: one weight per output channel (softmax: background first), applied to both
            terms; ``None`` weighs every channel alike.
        out_channels: the network's output channels, when known: ``class_weights`` must give as many.
        deep_supervision: the network's extra decoder outputs (stacked on dim 1 in training); > 0
            wraps the loss in :class:`StackedDeepSupervisionLoss`.
    """
    weight = _class_weight_tensor(class_weights, out_channels)
    if target == "softmax":
        loss: torch.nn.Module = DiceCELoss(to_onehot_y=True, softmax=True, batch=batch, smooth_nr=smooth_nr, smooth_dr=smooth_dr, weight=weight)
    elif target == "regions":
        loss = DiceFocalLoss(sigmoid=True, gamma=0.0, batch=batch, smooth_nr=smooth_nr, smooth_dr=smooth_dr, weight=weight)
    else:
        raise ConfigError("target", f"choose {' or '.join(TARGETS)}, got {target!r}")
    return StackedDeepSupervisionLoss(loss) if deep_supervision else loss


def _class_weight_tensor(class_weights: Sequence[float] | None, out_channels: int | None = None) -> torch.Tensor | None:
    """The loss's per-channel weights as a tensor, or ``None``; weights must be positive, one per output channel."""
    if class_weights is None:
        return None
    weights = [float(value) for value in class_weights]
    expected = f"{out_channels} " if out_channels is not None else ""
    if not weights or min(weights) <= 0 or (out_channels is not None and len(weights) != out_channels):
        raise ConfigError("class_weights", f"give {expected}positive weights, one per output channel (softmax: background first), got {list(class_weights)!r}")
    return torch.tensor(weights)
