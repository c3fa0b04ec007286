"""Internal labels to TC/WT/ET region channels, array and dictionary forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.tasks.labels import regions_to_labels
from pipeline.transforms.regions import LabelsToRegions, LabelsToRegionsd


def test_regions_are_nested_and_decode_back() -> None:
    label = np.random.default_rng(0).integers(0, 4, size=(1, 6, 5)).astype(np.uint8)
    regions = LabelsToRegions()(label)
    assert regions.shape == (3, 6, 5) and regions.dtype == np.uint8
    tc, wt, et = regions.astype(bool)
    assert np.array_equal(wt, label[0] > 0) and np.array_equal(tc, np.isin(label[0], (1, 3))) and np.array_equal(et, label[0] == 3)
    assert np.array_equal(regions_to_labels(regions), label[0])


def test_dictionary_form_keeps_tensors_and_other_keys() -> None:
    data = {"image": torch.zeros(4, 3, 3), "label": torch.tensor([[[0, 1, 2], [3, 0, 0], [2, 2, 1]]], dtype=torch.uint8)}
    out = LabelsToRegionsd(keys="label")(data)
    assert isinstance(out["label"], torch.Tensor) and out["label"].shape == (3, 3, 3)
    assert out["image"] is data["image"]
    assert int(out["label"][1].sum()) == 6  # WT: every non-zero voxel


def test_needs_one_channel() -> None:
    with pytest.raises(ValueError, match="one-channel"):
        LabelsToRegions()(np.zeros((2, 3, 3), dtype=np.uint8))
