"""The training throughput benchmark's generated cache: one the training loaders accept."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.training_throughput import CASE_SHAPE, write_cache
from pipeline.training.loaders import build_train_dataset


def test_generated_cache_is_one_the_training_loaders_read(tmp_path: Path) -> None:
    datalist, cache = write_cache(tmp_path, cases=3)
    dataset = build_train_dataset(cache, None, "2.5d")
    assert len(dataset) == 3 * CASE_SHAPE[0]
    assert json.loads(datalist.read_text())["training"]
