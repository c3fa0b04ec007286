"""The plain 2D baseline of the planar cross-validation: raw slices scaled to 0-1, a CPU-second budget, masks at each image's size."""

from __future__ import annotations

import time

import numpy as np
from planar_cases import image_pairs, kaggle_root

from benchmarks import baseline_planar as baseline
from pipeline.datasets import discover
from pipeline.core.io import read_image_2d
from pipeline.tasks.task import IMAGE_MASK_2D, KAGGLE_LGG


def test_raw_slices_are_scaled_to_one_and_masks_to_zero_one(tmp_path):
    root = kaggle_root(tmp_path / "kaggle", [("TCGA_AB_0001_20000101", 3)])
    (record,) = discover(root, KAGGLE_LGG).records
    image, label = baseline.load_case(record, KAGGLE_LGG)
    first = read_image_2d(root / record.case_id / f"{record.case_id}_1.tif")
    assert image.shape == (3, 3, 16, 16) and image.dtype == np.float32 and np.allclose(image[0, 1], first[..., 1] / 255.0)
    assert label.shape == (3, 16, 16) and set(np.unique(label)) <= {0, 1} and label.sum() > 0


def test_the_baseline_trains_for_its_cpu_seconds_on_images_of_several_sizes_and_predicts_each_at_its_size(tmp_path):
    root = image_pairs(tmp_path / "pairs", sizes=((16, 16), (20, 12), (10, 18)))
    cases = [baseline.load_case(record, IMAGE_MASK_2D) for record in discover(root, IMAGE_MASK_2D).records]
    started = time.process_time()
    network, steps = baseline.train([c[0] for c in cases], [c[1] for c in cases], seconds=1.5)
    assert steps >= 1 and time.process_time() - started >= 1.5
    for image, _ in cases:
        predicted = baseline.predict_case(network, image)
        assert predicted.shape == (*image.shape[2:], 1) and set(np.unique(predicted)) <= {0, 1}
