"""Post-processing chosen on a real-data cross-validation's out-of-fold predictions, and what it gains.

Reads a ``benchmarks.real_cv`` result (its run folders hold each fold's data list and the
pipeline's predictions of the held-out patients), pools the pipeline's out-of-fold predictions
and lets :func:`pipeline.postprocess_selection.select_postprocessing` choose the post-processing
the nnU-Net way. Prints the candidate table and the mean Dice per region before and after, and
records them beside the result (``<result>-postprocessing.json``/``.md``).

The predictions were written with the run's own post-processing (``configs/inference.yaml``:
whole-tumour specks under 20 voxels dropped), so "before" is that setting. As in nnU-Net's
cross-validation, the settings are chosen on the same out-of-fold cases they are scored on, so
the "after" figure is slightly optimistic; ``tune-postprocessing`` chooses on each fold's
validation cases instead.

    python -m benchmarks.postprocess_cv benchmarks/results/real_cv-<machine>-<date>-<label>.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.datalist import load_datalist
from pipeline.errors import PipelineError
from pipeline.evaluate import PREDICTIONS_DIR, read_internal_labels
from pipeline.io import write_json, write_text
from pipeline.postprocess_selection import PostProcessingChoice, select_postprocessing
from pipeline.writers import segmentation_filename

__all__ = ["out_of_fold_pairs", "main"]


def out_of_fold_pairs(result: dict) -> list[tuple]:
    """``(predicted, truth)`` internal labels of every held-out patient of the result's pipeline arm."""
    stamp = result["started"][:19].replace("-", "").replace(":", "")  # as real_cv names its run folder
    folder = Path(result["data"]["work"]) / "runs" / f"{stamp}-{result['label']}"
    pairs = []
    for fold in result["folds"]:
        fold_dir = folder / f"fold{fold['fold']}"
        for record in load_datalist(fold_dir / "datalist.json").cases("test"):
            seg = fold_dir / "pipeline_eval" / PREDICTIONS_DIR / segmentation_filename(record.case_id)
            predicted, _ = read_internal_labels(seg, record.label_convention)
            truth, _ = read_internal_labels(record.label, record.label_convention)
            pairs.append((predicted, truth))
    return pairs


def report(choice: PostProcessingChoice) -> str:
    """The choice, its gain and the candidate table as markdown."""
    return f"```\n{choice.describe()}\n\n{choice.table.to_string(index=False, float_format=lambda v: f'{v:.4f}')}\n```\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.postprocess_cv", description=__doc__.split("\n\n")[0])
    parser.add_argument("result", type=Path, help="a benchmarks.real_cv result JSON")
    args = parser.parse_args(argv)
    try:
        result = json.loads(args.result.read_text())
        choice = select_postprocessing(out_of_fold_pairs(result))
    except (OSError, ValueError, KeyError, PipelineError) as err:
        print(f"error: {args.result}: cannot choose post-processing from this result ({err})", file=sys.stderr)
        return 1
    text = report(choice)
    stem = args.result.with_name(args.result.stem + "-postprocessing")
    write_json(stem.with_suffix(".json"), {
        "result": args.result.name, "cases": choice.cases, "chosen": choice.postprocessing.to_config(),
        "before": choice.before, "after": choice.after, "table": choice.table.to_dict("records"),
    })
    write_text(stem.with_suffix(".md"), f"## Post-processing chosen on the out-of-fold predictions of {args.result.name}\n\n{text}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
