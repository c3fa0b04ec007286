"""Training losses per target (pipeline.training.losses)."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceLoss

from pipeline.core.errors import ConfigError
from pipeline.training.losses import StackedDeepSupervisionLoss, build_loss


def _regions_target() -> torch.Tensor:
    """Nested TC, WT, ET masks: WT a square, TC and ET inside it, everything else background."""
    target = torch.zeros(2, 3, 32, 32)
    target[:, 1, 8:24, 8:24] = 1  # WT
    target[:, 0, 12:20, 12:20] = 1  # TC
    target[:, 2, 14:18, 14:18] = 1  # ET
    return target


def test_regions_loss_is_dice_plus_binary_cross_entropy_per_channel() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 32, 32), _regions_target()
    expected = DiceLoss(sigmoid=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)(logits, target)
    expected = expected + torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert torch.allclose(build_loss("regions")(logits, target), expected, atol=1e-6)


def test_regions_loss_penalises_region_probabilities_on_background() -> None:
    """A voxel outside every region with high region logits must cost more than with low ones."""
    target = _regions_target()
    exact = torch.where(target > 0, 8.0, -8.0)
    background = target.sum(1, keepdim=True) == 0
    spilled = torch.where(background.expand_as(exact), torch.full_like(exact, 8.0), exact)
    loss = build_loss("regions")
    assert loss(spilled, target) > loss(exact, target) + 1.0


def test_softmax_loss_takes_class_index_labels() -> None:
    labels = torch.zeros(2, 1, 32, 32)
    labels[:, :, 8:24, 8:24] = 2
    right = torch.nn.functional.one_hot(labels[:, 0].long(), 4).permute(0, 3, 1, 2).float() * 16 - 8
    wrong = right.roll(1, dims=1)
    loss = build_loss("softmax")
    assert loss(right, labels) + 10.0 < loss(wrong, labels)


def test_unknown_target_is_refused() -> None:
    with pytest.raises(ConfigError, match="target"):
        build_loss("sigmoid")


def test_class_weights_raise_the_cost_of_missing_the_weighted_class() -> None:
    """Predicting NEC (label 1) as background costs more once NEC weighs 3 and the rest 1."""
    labels = torch.zeros(2, 1, 32, 32)
    labels[:, :, 8:24, 8:24] = 2
    labels[:, :, 12:20, 12:20] = 1
    logits = torch.nn.functional.one_hot(labels[:, 0].long(), 4).permute(0, 3, 1, 2).float() * 16 - 8
    nec_missed = logits.clone()
    nec_missed[:, :, 12:20, 12:20] = torch.tensor([8.0, -8.0, -8.0, -8.0])[:, None, None]
    equal, weighted = build_loss("softmax"), build_loss("softmax", class_weights=[1, 3, 1, 1])
    assert torch.allclose(build_loss("softmax", class_weights=[1, 1, 1, 1])(nec_missed, labels), equal(nec_missed, labels))
    assert weighted(nec_missed, labels) > equal(nec_missed, labels) + 0.5
    assert torch.isclose(weighted(logits, labels), equal(logits, labels), atol=1e-3)  # a right NEC costs nothing extra


@pytest.mark.parametrize("weights", [[], [1, 0, 1, 1], [1, -2, 1, 1], [1, 2, 1]])
def test_class_weights_must_be_positive_and_one_per_channel(weights: list[float]) -> None:
    with pytest.raises(ConfigError, match="class_weights: give 4 positive weights"):
        build_loss("softmax", class_weights=weights, out_channels=4)
    assert build_loss("regions", class_weights=[1, 2, 1], out_channels=3).dice.class_weight.tolist() == [1, 2, 1]


@pytest.mark.parametrize("target", ["softmax", "regions"])
def test_deep_supervision_scores_every_stacked_output(target: str) -> None:
    """Stacked outputs (DynUNet in training) cost the full output's loss plus 1/2, 1/4, ... of each coarser head's."""
    labels = torch.zeros(2, 1, 16, 16)
    labels[:, :, 4:12, 4:12] = 2
    plain, supervised = build_loss(target), build_loss(target, deep_supervision=2)
    assert isinstance(supervised, StackedDeepSupervisionLoss) and not isinstance(plain, StackedDeepSupervisionLoss)
    channels = 4 if target == "softmax" else 3
    truth = labels if target == "softmax" else torch.cat([labels > 0] * 3, dim=1).float()
    outputs = [torch.randn(2, channels, 16, 16) for _ in range(3)]
    expected = sum(weight * plain(output, truth) for weight, output in zip((1.0, 0.5, 0.25), outputs))
    assert torch.isclose(supervised(torch.stack(outputs, dim=1), truth), expected)
    assert torch.isclose(supervised(outputs[0], truth), plain(outputs[0], truth))  # eval output: one tensor, plain loss
