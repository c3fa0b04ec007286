"""Training-time validation: whole cached volumes and the per-structure masks scored by Dice (pipeline.training.validation_dice)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.tasks.labels import SCORED_STRUCTURES, labels_to_regions, region_masks
from pipeline.training.validation_dice import StructureMasks


@pytest.mark.parametrize("output_mode", ["softmax", "regions"])
def test_structure_masks_are_the_region_masks_of_the_decoded_prediction(output_mode: str) -> None:
    rng = np.random.default_rng(5)
    predicted, truth = (rng.integers(0, 4, size=(4, 6, 5)).astype(np.uint8) for _ in range(2))
    if output_mode == "regions":
        probabilities = 0.2 + 0.6 * labels_to_regions(predicted).astype(np.float32)
    else:
        probabilities = 0.1 + 0.8 * np.stack([predicted == value for value in range(4)]).astype(np.float32)
    out = StructureMasks(output_mode)({"pred": torch.from_numpy(probabilities), "label": torch.from_numpy(truth)[None], "case_id": "c"})
    assert out["case_id"] == "c" and out["pred"].dtype == torch.uint8 and tuple(out["pred"].shape) == (len(SCORED_STRUCTURES), 4, 6, 5)
    for channel, name in enumerate(SCORED_STRUCTURES):
        np.testing.assert_array_equal(out["pred"][channel].numpy(), region_masks(predicted)[name])
        np.testing.assert_array_equal(out["label"][channel].numpy(), region_masks(truth)[name])


def test_validation_volumes_read_whole_cached_cases(tiny_cache) -> None:
    from pipeline.preprocessing.cache import complete_case_ids, load_case
    from pipeline.training.validation_dice import ValidationVolumes

    case_ids = complete_case_ids(tiny_cache)[:2]
    volumes = ValidationVolumes(tiny_cache, case_ids)
    assert len(volumes) == 2
    item = volumes[1]
    cached = load_case(tiny_cache, case_ids[1])
    assert item["case_id"] == case_ids[1] and item["image"].dtype == torch.float16 and item["label"].dtype == torch.uint8
    np.testing.assert_array_equal(item["image"].numpy(), cached.image)
    np.testing.assert_array_equal(item["label"].numpy(), cached.label)


# ---- tasks ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("task", "channels", "output_mode"),
    [("whole-tumour", ["flair"], None), ("brats2024-post-treatment", None, None), ("brats-glioma", ["t1ce", "flair"], "regions"), ("brats2024-ped", None, None)],
)
def test_structure_masks_and_dice_follow_the_task(task, channels, output_mode) -> None:
    from pipeline.training.handlers import PredictionOverlay
    from pipeline.tasks.task import model_task, resolve_task
    from pipeline.training.validation_dice import key_metric, structure_metrics

    spec = model_task(resolve_task(task, channels), output_mode)
    rng = np.random.default_rng(1)
    predicted, truth = (rng.integers(0, len(spec.classes) + 1, size=(3, 5, 4)).astype(np.uint8) for _ in range(2))
    if spec.target == "regions":
        probabilities = 0.2 + 0.6 * spec.labels_to_regions(predicted).astype(np.float32)
    else:
        probabilities = 0.1 + 0.8 * np.stack([predicted == value for value in range(spec.num_classes)]).astype(np.float32)
    out = StructureMasks(output_mode, spec.to_dict())({"pred": torch.from_numpy(probabilities), "label": torch.from_numpy(truth)[None]})
    assert tuple(out["pred"].shape) == (len(spec.structures), 3, 5, 4)
    for channel, name in enumerate(spec.structures):
        np.testing.assert_array_equal(out["pred"][channel].numpy(), spec.structure_masks(predicted)[name])
        np.testing.assert_array_equal(out["label"][channel].numpy(), spec.structure_masks(truth)[name])
    np.testing.assert_array_equal(PredictionOverlay.internal_labels(out["label"].numpy(), spec), truth)
    assert set(structure_metrics(spec)) == {f"val_dice_{name}" for name in spec.structures} and set(key_metric(spec)) == {"val_mean_dice"}
