"""Inference choices scored on a real-data cross-validation's trained folds: checkpoint and mirrored TTA.

Re-evaluates the pipeline runs of a :mod:`benchmarks.real_cv` result on their held-out patients,
without training again, under each combination of

- ``checkpoint``: ``best`` (``models/model.pt``: what the run's ``keep_weights`` kept, the epoch one
  validation patient picked for runs trained with ``keep_weights: best``) or ``last`` (the final
  weights of ``models/latest.pt``: the schedule alone decides; the default since bundle 0.6.0);
- ``tta``: mirrored test-time augmentation off or on (the probabilities of the flips averaged),
- with ``--ensemble-with``: each fold's model averaged with the same fold's models of other
  real_cv results on the same folds (independently trained members: another seed or recipe),

with each run's own post-processing (its ``inference.json``, as the run was scored) or, with
``--postprocessing bundle``, the bundle's current ``configs/inference.yaml`` one (the shipped
defaults, when they changed after the folds were trained),

and prints, per variant, the mean Dice, lesion-wise Dice and HD95 of WT, TC and ET over the
held-out patients and the evaluation seconds, so that the default is chosen on the same folds with
its cost in view. Results go beside the input, as ``<result>-inference.json`` and ``.md``
(``-inference-bundle-post`` with the bundle's post-processing; ``-tta`` added when only the TTA
variant is scored, so it never replaces the record without it; ``-ensembleN`` for an ensemble of N
members); the predictions under the result's work folder (``WORK/inference/``).

    python -m benchmarks.inference_cv benchmarks/results/real_cv-<machine>-<date>-<label>.json [--checkpoints best,last] [--tta both] [--postprocessing bundle] [--ensemble-with OTHER.json ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.cv_folds import fold_run_folder
from benchmarks.label_confusion import arm_confusions, confusion_markdown
from benchmarks.cv_scoring import case_row
from pipeline.core.errors import PipelineError
from pipeline.core.io import write_json, write_text

__all__ = ["CHECKPOINTS", "bundle_postprocessing", "fold_runs", "score_variant", "main"]

#: Which weights a variant scores.
CHECKPOINTS: tuple[str, ...] = ("best", "last")

#: The columns averaged per variant.
MEAN_COLUMNS: tuple[str, ...] = (
    *(f"{m}_{s}" for m in ("dice", "lesion_dice", "hd95") for s in ("WT", "TC", "ET")),
    "dice_NEC", "dice_ED", "hd95_NEC", "hd95_ED", "precision_WT", "wt_components",
)  # fmt: skip


def bundle_postprocessing() -> dict[str, Any]:
    """The ``postprocessing`` component of the bundle's ``configs/inference.yaml``, without its ``_target_``."""
    from monai.bundle import ConfigParser

    from pipeline.inference.config import INFERENCE_CONFIG

    component = ConfigParser.load_config_file(str(INFERENCE_CONFIG))["postprocessing"]
    return {key: value for key, value in component.items() if key != "_target_"}


def fold_runs(result: dict, members: Sequence[dict] = ()) -> list[tuple[int, list[Path], Path]]:
    """``(fold, run folders, fold data list)`` of every fold of a real_cv result's pipeline arm.

    ``members``: other real_cv results on the same folds, whose pipeline runs of each fold join the
    result's own (an ensemble per fold).

    Raises:
        ValueError: when a member lacks a fold or holds out other patients in it.
    """
    member_folds = [{int(f["fold"]): f for f in member["folds"]} for member in members]
    runs = []
    for record in result["folds"]:
        fold = int(record["fold"])
        folders = [fold_run_folder(result, fold)]
        for member, their_folds in zip(members, member_folds):
            theirs = their_folds.get(fold)
            if theirs is None or sorted(theirs.get("test", ())) != sorted(record.get("test", ())):
                raise ValueError(f"ensemble member {member.get('label')!r} does not hold out the same patients in fold {fold}")
            folders.append(fold_run_folder(member, fold))
        runs.append((fold, [folder / "pipeline" for folder in folders], folders[0] / "datalist.json"))
    return runs


def score_variant(
    runs: Sequence[tuple[int, list[Path], Path]], checkpoint: str, tta: bool, out: Path, device: str = "cpu", postprocessing: dict[str, Any] | None = None
) -> tuple[list[dict], float]:
    """Per-patient rows of one variant over every fold (with each prediction's label confusion), and its evaluation wall seconds.

    A fold with several run folders scores their ensemble (the name starts ``ensemble of N``).
    ``postprocessing`` replaces the runs' own (:func:`bundle_postprocessing`); the variant's name then ends in ``+ bundle post``.
    """
    from pipeline.inference.model import load_model
    from pipeline.core.checkpoints import load_weights
    from pipeline.datasets.datalist import load_datalist
    from pipeline.evaluation.evaluate import PREDICTIONS_DIR, evaluate
    from pipeline.inference.writers import segmentation_filename

    members = max((len(run_dirs) for _, run_dirs, _ in runs), default=1)
    name = f"{f'ensemble of {members}: ' if members > 1 else ''}{checkpoint}{' + tta' if tta else ''}{' + bundle post' if postprocessing is not None else ''}"
    rows, seconds = [], 0.0
    for fold, run_dirs, datalist in runs:
        started = time.perf_counter()
        model = load_model(run_dirs, device=device, tta=tta, postprocessing=postprocessing)
        if checkpoint == "last":
            networks = model.network if len(run_dirs) > 1 else [model.network]
            for network, run_dir in zip(networks, run_dirs):
                load_weights(network, run_dir / "models" / "latest.pt")
        folder = out / f"fold{fold}-{name.replace(' + ', '-').replace(': ', '-').replace(' ', '-')}"
        result = evaluate(model, datalist, folder, split="test", lesion_wise=True, progress=False, echo=False)
        seconds += time.perf_counter() - started
        records = {record.case_id: record for record in load_datalist(datalist).cases("test")}
        for metrics in result.metrics.to_dict("records"):
            case = metrics["case_id"]
            rows.append(case_row(fold, case, name, metrics, folder / PREDICTIONS_DIR / segmentation_filename(case), records[case]))
    return rows, seconds


def output_stem(result: Path, postprocessing: str, tta: str, members: int = 1) -> Path:
    """Where the re-scoring of ``result`` goes (without suffix): one name per post-processing, TTA and ensemble choice."""
    suffix = ("-bundle-post" if postprocessing == "bundle" else "") + ("-tta" if tta == "on" else "") + (f"-ensemble{members}" if members > 1 else "")
    return result.with_name(result.stem + "-inference" + suffix)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inference_cv", description=__doc__.split("\n\n")[0])
    parser.add_argument("result", type=Path, help="a benchmarks.real_cv result JSON (its run folders must still exist)")
    parser.add_argument("--checkpoints", default=",".join(CHECKPOINTS), help="comma-separated: best, last (default both)")
    parser.add_argument("--tta", choices=("off", "on", "both"), default="both", help="mirrored TTA variants (default both)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument(
        "--postprocessing",
        choices=("run", "bundle"),
        default="run",
        help="each run's own post-processing (default) or the bundle's configs/inference.yaml one (the current defaults)",
    )
    parser.add_argument(
        "--ensemble-with",
        type=Path,
        nargs="+",
        default=[],
        metavar="RESULT",
        help="real_cv results on the same folds: each fold scores the ensemble of its runs with theirs",
    )
    args = parser.parse_args(argv)
    checkpoints = [c.strip() for c in args.checkpoints.split(",") if c.strip()]
    if not checkpoints or set(checkpoints) - set(CHECKPOINTS):
        parser.error(f"--checkpoints: choose from {', '.join(CHECKPOINTS)}")
    ttas = {"off": [False], "on": [True], "both": [False, True]}[args.tta]
    stem = output_stem(args.result, args.postprocessing, args.tta, 1 + len(args.ensemble_with))
    try:
        result = json.loads(args.result.read_text())
        runs = fold_runs(result, [json.loads(member.read_text()) for member in args.ensemble_with])
        missing = [str(run) for _, run_dirs, _ in runs for run in run_dirs if not run.is_dir()]
        if missing:
            raise PipelineError(missing[0], "run folder not found (rerun benchmarks.real_cv)")
        post = bundle_postprocessing() if args.postprocessing == "bundle" else None
        rows, timing = [], {}
        for checkpoint, tta in itertools.product(checkpoints, ttas):
            variant_rows, seconds = score_variant(runs, checkpoint, tta, Path(result["data"]["work"]) / "inference" / stem.name, args.device, post)
            timing[variant_rows[0]["arm"] if variant_rows else checkpoint] = seconds
            rows += variant_rows
    except (OSError, ValueError, KeyError, PipelineError) as err:
        print(f"error: {args.result}: {err}", file=sys.stderr)
        return 1
    table = pd.DataFrame(rows).groupby("arm", sort=False)[list(MEAN_COLUMNS)].mean()
    table["eval_seconds"] = pd.Series(timing)
    table.insert(0, "patients", pd.DataFrame(rows).groupby("arm", sort=False).size())
    confusion = arm_confusions(rows)
    text = f"```\n{table.to_string(float_format=lambda v: f'{v:.3f}')}\n```\n\n" + confusion_markdown(confusion, rows)
    write_json(stem.with_suffix(".json"), {
        "result": args.result.name, "ensemble_with": [member.name for member in args.ensemble_with], "command_line": shlex.join([Path(sys.executable).name, "-m", "benchmarks.inference_cv", *sys.argv[1:]] if argv is None else ["python", "-m", "benchmarks.inference_cv", *argv]),
        "postprocessing": post, "rows": rows, "means": table.reset_index().to_dict("records"), "confusion": confusion, "eval_seconds": timing,
    })
    write_text(stem.with_suffix(".md"), f"## Inference variants on the trained folds of {args.result.name}\n\n{text}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
