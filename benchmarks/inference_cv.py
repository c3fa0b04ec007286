"""Inference choices scored on a real-data cross-validation's trained folds: checkpoint and mirrored TTA.

Re-evaluates the pipeline runs of a :mod:`benchmarks.real_cv` result on their held-out patients,
without training again, under each combination of

- ``checkpoint``: ``best`` (``models/model.pt``, the epoch one validation patient picked) or
  ``last`` (the final weights of ``models/latest.pt``: the schedule alone decides);
- ``tta``: mirrored test-time augmentation off or on (the probabilities of the flips averaged),

and prints, per variant, the mean Dice, lesion-wise Dice and HD95 of WT, TC and ET over the
held-out patients and the evaluation seconds, so that the default is chosen on the same folds with
its cost in view. Results go beside the input, as ``<result>-inference.json`` and ``.md``; the
predictions under the result's work folder (``WORK/inference/``).

    python -m benchmarks.inference_cv benchmarks/results/real_cv-<machine>-<date>-<label>.json [--variants best,last] [--tta both]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from benchmarks.cv_folds import fold_run_folder
from benchmarks.cv_scoring import case_row
from pipeline.core.errors import PipelineError
from pipeline.core.io import write_json, write_text

__all__ = ["CHECKPOINTS", "fold_runs", "score_variant", "main"]

#: Which weights a variant scores.
CHECKPOINTS: tuple[str, ...] = ("best", "last")

#: The columns averaged per variant.
MEAN_COLUMNS: tuple[str, ...] = tuple(f"{m}_{s}" for m in ("dice", "lesion_dice", "hd95") for s in ("WT", "TC", "ET"))


def fold_runs(result: dict) -> list[tuple[int, Path, Path]]:
    """``(fold, run folder, fold data list)`` of every fold of a real_cv result's pipeline arm."""
    folders = {int(f["fold"]): fold_run_folder(result, int(f["fold"])) for f in result["folds"]}
    return [(fold, folder / "pipeline", folder / "datalist.json") for fold, folder in folders.items()]


def score_variant(runs: Sequence[tuple[int, Path, Path]], checkpoint: str, tta: bool, out: Path, device: str = "cpu") -> tuple[list[dict], float]:
    """Per-patient rows of one variant over every fold, and its evaluation wall seconds."""
    from pipeline.inference.model import load_model
    from pipeline.core.checkpoints import load_weights
    from pipeline.evaluation.evaluate import PREDICTIONS_DIR, evaluate
    from pipeline.inference.writers import segmentation_filename

    rows, seconds = [], 0.0
    for fold, run_dir, datalist in runs:
        started = time.perf_counter()
        model = load_model(run_dir, device=device, tta=tta)
        if checkpoint == "last":
            load_weights(model.network, run_dir / "models" / "latest.pt")
        folder = out / f"fold{fold}-{checkpoint}-{'tta' if tta else 'plain'}"
        result = evaluate(model, datalist, folder, split="test", lesion_wise=True, progress=False, echo=False)
        seconds += time.perf_counter() - started
        for metrics in result.metrics.to_dict("records"):
            rows.append(case_row(fold, metrics["case_id"], f"{checkpoint}{' + tta' if tta else ''}", metrics, folder / PREDICTIONS_DIR / segmentation_filename(metrics["case_id"])))
    return rows, seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inference_cv", description=__doc__.split("\n\n")[0])
    parser.add_argument("result", type=Path, help="a benchmarks.real_cv result JSON (its run folders must still exist)")
    parser.add_argument("--checkpoints", default=",".join(CHECKPOINTS), help="comma-separated: best, last (default both)")
    parser.add_argument("--tta", choices=("off", "on", "both"), default="both", help="mirrored TTA variants (default both)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args(argv)
    checkpoints = [c.strip() for c in args.checkpoints.split(",") if c.strip()]
    if not checkpoints or set(checkpoints) - set(CHECKPOINTS):
        parser.error(f"--checkpoints: choose from {', '.join(CHECKPOINTS)}")
    ttas = {"off": [False], "on": [True], "both": [False, True]}[args.tta]
    stem = args.result.with_name(args.result.stem + "-inference")
    try:
        result = json.loads(args.result.read_text())
        runs = fold_runs(result)
        missing = [str(run) for _, run, _ in runs if not run.is_dir()]
        if missing:
            raise PipelineError(missing[0], "run folder not found (rerun benchmarks.real_cv)")
        rows, timing = [], {}
        for checkpoint, tta in itertools.product(checkpoints, ttas):
            variant_rows, timing[f"{checkpoint}{' + tta' if tta else ''}"] = score_variant(runs, checkpoint, tta, Path(result["data"]["work"]) / "inference" / stem.name, args.device)
            rows += variant_rows
    except (OSError, ValueError, KeyError, PipelineError) as err:
        print(f"error: {args.result}: {err}", file=sys.stderr)
        return 1
    table = pd.DataFrame(rows).groupby("arm", sort=False)[list(MEAN_COLUMNS)].mean()
    table["eval_seconds"] = pd.Series(timing)
    table.insert(0, "patients", pd.DataFrame(rows).groupby("arm", sort=False).size())
    text = f"```\n{table.to_string(float_format=lambda v: f'{v:.3f}')}\n```\n"
    write_json(stem.with_suffix(".json"), {"result": args.result.name, "rows": rows, "means": table.reset_index().to_dict("records"), "eval_seconds": timing})
    write_text(stem.with_suffix(".md"), f"## Inference variants on the trained folds of {args.result.name}\n\n{text}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
