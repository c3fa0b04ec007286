"""``brats-pipeline merge-shards``: the full outputs of a ``--shard`` run of ``predict`` or ``evaluate`` from its parts."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.core.distributed import read_shards
from pipeline.evaluation.evaluate import merge_evaluation_shards
from pipeline.evaluation.report import METRICS_FILE
from pipeline.inference.predict import merge_prediction_shards

__all__ = ["merge_shards"]


def merge_shards(out_dir: str | os.PathLike[str], echo: bool = True) -> Path:
    """Write the full outputs of a ``--shard`` run from ``OUT/shards/``: ``predictions.json`` (predict) or the reports (evaluate).

    Returns:
        The manifest (predict) or ``metrics.csv`` (evaluate) written.
    """
    kind, results, contexts = read_shards(out_dir)
    if kind == "predict":
        return merge_prediction_shards(out_dir, contexts, results)
    merge_evaluation_shards(out_dir, contexts, results, echo=echo)
    return Path(out_dir) / METRICS_FILE
