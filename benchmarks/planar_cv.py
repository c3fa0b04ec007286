"""Cross-validate the pipeline on the two real 2D data sets against a plain 2D baseline at the same CPU time: per-patient volume Dice (Kaggle LGG) or per-image Dice and IoU (PNG pairs).

    python -m benchmarks.planar_cv --data kaggle [--folds 5] [--epochs 3] [--samples-per-epoch 200] [--mode 2d] [--task NAME|FILE] [--set KEY=VALUE ...] [--no-baseline | --baseline-cpu-seconds S]
    python -m benchmarks.planar_cv --data pairs  [--folds 5] ...

The data set (``../shared/data/lgg_kaggle_3m`` or ``../shared/data/png_pairs``; ``--shared-data``
elsewhere; without it the run prints one ``skipped:`` line and exits 0) is listed and
preprocessed once into ``WORK/<data>[-<task>]/datalist.json`` and ``cache`` with its own task
(``kaggle-lgg``, ``image-mask-2d``) or ``--task``. Its cases (patients, or images) are dealt into
``--folds`` folds (:mod:`benchmarks.cv_folds`); for each fold:

1. pipeline arm: ``python -m pipeline train`` in a child process (the bundle's defaults with
   ``--epochs``, ``--samples-per-epoch`` and ``--set``; one other case validates and picks
   ``models/model.pt``; its CPU seconds, loader workers included, are measured), then
   :func:`pipeline.evaluation.evaluate.evaluate` scores the held-out cases with the task's metric set (the
   run's default post-processing: Kaggle keeps the largest component);
2. baseline arm (:mod:`benchmarks.baseline_planar`): a plain MONAI 2D UNet trained on the raw
   TIFF/PNG files of the same training and validation cases for the pipeline arm's training CPU
   seconds, predicting the same held-out cases, scored by the same
   :func:`pipeline.evaluation.metrics.case_metrics` against the same ground truth.

Printed and written to ``benchmarks/results/planar_cv-<machine>-<date>-<data>[-<label>].json`` and
``.md``: every held-out case's Dice and IoU per arm, the means and ``pipeline - baseline``, the
folds, the hardware, the settings and the seconds per fold. The Kaggle mean is shown next to the
published 82% mean per-patient Dice (Buda et al. 2019: trained on about 100 patients, far longer):
not the same budget nor the same patients.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.cv_folds import Fold, make_folds, write_fold_datalist
from benchmarks.machine import describe_machine, machine_name
from benchmarks.real_cv import run_child
from pipeline.core.io import write_json, write_text

__all__ = ["ARMS", "DATA_SETS", "PUBLISHED", "main", "run", "run_baseline_arm"]

REPO = Path(__file__).resolve().parents[1]

#: The data sets: folder under the shared data, and what one row scores.
DATA_SETS: dict[str, tuple[str, str]] = {"kaggle": ("lgg_kaggle_3m", "patient"), "pairs": ("png_pairs", "image")}

#: The arms, the pipeline first: differences are pipeline - baseline.
ARMS: tuple[str, ...] = ("pipeline", "baseline")

#: Published reference, per data set (mean Dice and its source), or None.
PUBLISHED: dict[str, tuple[float, str] | None] = {
    "kaggle": (0.82, "Buda et al. 2019 (Comput. Biol. Med.), mean per-patient volume Dice on kaggle_3m, trained on the other patients of 110"),
    "pairs": None,
}


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.planar_cv", description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=sorted(DATA_SETS), required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples-per-epoch", type=int, default=200)
    parser.add_argument("--mode", default="2d", choices=("2d", "2.5d", "3d"))
    parser.add_argument("--task", default=None, help="Built-in task name or task file (default: the layout's own task).")
    parser.add_argument("--no-baseline", action="store_true", help="Run the pipeline arm only.")
    parser.add_argument("--baseline-cpu-seconds", type=float, default=None, help="Train the baseline this long instead of the pipeline's measured training CPU seconds (smoke runs).")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE", help="Bundle override (repeatable).")
    parser.add_argument("--shared-data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "planar_cv")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--label", default="", help="Suffix of the results file names.")
    return parser.parse_args(argv)


def run_baseline_arm(fold: Fold, fold_list: Path, cpu_seconds: float) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Train the baseline on the fold's training and validation cases for ``cpu_seconds`` and score its held-out cases; the rows and timings."""
    import torch

    from benchmarks.baseline_planar import load_case, predict_case, train
    from pipeline.datasets.datalist import load_datalist
    from pipeline.evaluation.metrics import case_metrics

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the pipeline trains on this CPU (cpu_threads 1)
    try:
        listing = load_datalist(fold_list)
        started, cpu = time.perf_counter(), time.process_time()
        cases = [load_case(record, listing.task) for record in listing.cases("training") + listing.cases("validation")]
        network, steps = train([c[0] for c in cases], [c[1] for c in cases], cpu_seconds - (time.process_time() - cpu))
        trained, trained_cpu = time.perf_counter(), time.process_time()
        rows = []
        for record in listing.cases("test"):
            image, label = load_case(record, listing.task)
            truth = label.transpose(1, 2, 0).astype(np.uint8)
            metrics = case_metrics(predict_case(network, image), truth, (1.0, 1.0, 1.0), task=listing.task)
            rows.append({"fold": fold.index, "arm": "baseline", "case_id": record.case_id, **metrics})
    finally:
        torch.set_num_threads(threads)
    timing = {"train_s": round(trained - started, 1), "train_cpu_s": round(trained_cpu - cpu, 1), "evaluate_s": round(time.perf_counter() - trained, 1), "steps": steps}
    return rows, timing


def run(args: argparse.Namespace) -> dict[str, Any] | None:
    """Run the cross-validation and write its results; None when the data set is absent."""
    from pipeline.datasets.datalist import build_datalist, load_datalist
    from pipeline.evaluation.evaluate import evaluate
    from pipeline.preprocessing.prepare import preprocess_datalist
    from pipeline.tasks.task import resolve_task

    folder, unit = DATA_SETS[args.data]
    root = args.shared_data / folder
    if not root.is_dir():
        print(f"skipped: {root} not found")
        return None
    started = time.perf_counter()
    load = [round(value, 2) for value in os.getloadavg()]  # other jobs on the machine slow every figure
    task = resolve_task(args.task) if args.task else None
    work = args.work / (args.data if task is None else f"{args.data}-{''.join(c if c.isalnum() else '-' for c in task.name)}")
    datalist = work / "datalist.json"
    if not datalist.is_file():
        build_datalist(root, datalist, folds=args.folds, test_fraction=0.0, progress=False, task=task)
    preprocess_datalist(datalist, work / "cache", progress=False)
    loaded = load_datalist(datalist)
    cases = sorted(record.case_id for record in loaded.cases("all"))
    folds = make_folds(cases, args.folds)
    settings = (f"samples_per_epoch={args.samples_per_epoch}", "progress=false", *args.settings)
    rows: list[dict[str, Any]] = []
    seconds: list[dict[str, Any]] = []
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    for fold in folds:
        fold_dir = work / "runs" / stamp / f"fold{fold.index}"
        fold_list = write_fold_datalist(datalist, fold, fold_dir / "datalist.json")
        command = ["-m", "pipeline", "train", "--datalist", str(fold_list), "--cache", str(work / "cache"), "--mode", args.mode]
        command += ["--epochs", str(args.epochs), "--fold", "0", "--device", "cpu", "--out", str(fold_dir / "run")]
        command += [item for pair in settings for item in ("--set", pair)]
        train_wall, train_cpu = run_child(command, fold_dir / "train.log")
        evaluated = time.perf_counter()
        result = evaluate(fold_dir / "run", fold_list, fold_dir / "eval", split="test", overlays=False, progress=False, echo=False)
        timing: dict[str, Any] = {"fold": fold.index, "train_s": round(train_wall, 1), "train_cpu_s": round(train_cpu, 1), "evaluate_s": round(time.perf_counter() - evaluated, 1)}
        rows += [{"fold": fold.index, "arm": "pipeline", **row} for row in result.metrics.to_dict("records")]
        if not args.no_baseline:
            budget = train_cpu if args.baseline_cpu_seconds is None else args.baseline_cpu_seconds
            baseline_rows, timing["baseline"] = run_baseline_arm(fold, fold_list, budget)
            rows += baseline_rows
        seconds.append(timing)
        for arm in ARMS:
            shown = ", ".join(f"{r['case_id']} {r['dice_tumour']:.3f}" for r in rows if r["fold"] == fold.index and r["arm"] == arm)
            if shown:
                print(f"fold {fold.index} {arm}: {shown}", flush=True)
    frame = pd.DataFrame(rows)
    means = {arm: {m: float(frame.loc[frame["arm"] == arm, f"{m}_tumour"].mean()) for m in ("dice", "iou")} for arm in ARMS if (frame["arm"] == arm).any()}
    machine = describe_machine("cpu")
    payload = {
        "benchmark": "planar_cv",
        "data": str(root),
        "data_set": args.data,
        "task": loaded.task.name,
        "task_planar": {"planar_size": list(loaded.task.planar_size), "planar_fit": loaded.task.planar_fit} if loaded.task.planar_size else None,
        "unit": unit,
        "cases": len(cases),
        "folds": [fold.to_dict() for fold in folds],
        "settings": {"mode": args.mode, "epochs": args.epochs, "samples_per_epoch": args.samples_per_epoch, "overrides": list(args.settings), "baseline_cpu_seconds": args.baseline_cpu_seconds},
        "machine": machine,
        "command": "python -m benchmarks.planar_cv " + " ".join(sys.argv[1:]),
        "load_average": load,
        "seconds_total": round(time.perf_counter() - started, 1),
        "seconds_per_fold": seconds,
        "means": means,
        "mean_dice": means["pipeline"]["dice"],
        "published": PUBLISHED[args.data],
        "rows": rows,
    }
    name = f"planar_cv-{machine_name(machine)}-{datetime.now(timezone.utc):%Y-%m-%d}-{args.data}{'-' + args.label if args.label else ''}"
    write_json(args.results / f"{name}.json", payload)
    write_text(args.results / f"{name}.md", _markdown(payload, frame))
    print(_markdown(payload, frame))
    return payload


def _markdown(payload: dict[str, Any], frame: pd.DataFrame) -> str:
    """The results as a short Markdown page: settings, per-case Dice and IoU per arm, means, next to the published figure."""
    unit, settings, means = payload["unit"], payload["settings"], payload["means"]
    planar = payload.get("task_planar")
    fold_seconds = []
    for s in payload["seconds_per_fold"]:
        text = f"{s['train_s']:.0f}+{s['evaluate_s']:.0f} (train CPU {s['train_cpu_s']:.0f})"
        if "baseline" in s:
            b = s["baseline"]
            text += f" / baseline {b['train_s']:.0f}+{b['evaluate_s']:.0f} (train CPU {b['train_cpu_s']:.0f}, {b['steps']} steps)"
        fold_seconds.append(text)
    lines = [
        f"# Cross-validation on {payload['data_set']} ({payload['cases']} {unit}s, task {payload['task']})",
        "",
        f"- command: `{payload['command']}`",
        f"- data: `{payload['data']}`; {len(payload['folds'])} folds by {unit} (one other {unit} validates each pipeline fold; the baseline trains on it too)",
        f"- pipeline: mode {settings['mode']}, {settings['epochs']} epoch(s) of {settings['samples_per_epoch']} slices, bundle defaults otherwise {settings['overrides'] or ''}"
        + (f"; images {planar['planar_fit']} to {'x'.join(map(str, planar['planar_size']))}" if planar else ""),
        "- baseline (`benchmarks/baseline_planar.py`): MONAI 2D UNet 16-256, DiceCE, flips and rot90, raw files / 255, uniform slices, no cache, no post-processing, "
        + ("for the pipeline's training CPU seconds" if settings.get("baseline_cpu_seconds") is None else f"for {settings['baseline_cpu_seconds']:g} CPU seconds (not the pipeline's)"),
        f"- machine: {payload['machine'].get('cpu_model', '?')}, {payload['machine'].get('cpu_cores', '?')} cores, CPU only, load average {payload['load_average']} at the start; total {payload['seconds_total']:.0f} s",
        "- seconds per fold, wall (train + evaluate): " + "; ".join(fold_seconds),
        "",
    ]
    arms = [arm for arm in ARMS if arm in means]
    table = frame.pivot_table(index=["fold", "case_id"], columns="arm", values=["dice_tumour", "iou_tumour"]).reset_index()
    lines += ["| fold | " + unit + " | " + " | ".join(f"{arm} Dice | {arm} IoU" for arm in arms) + " |", "|---:|---|" + "---:|---:|" * len(arms)]
    for _, row in table.iterrows():
        cells = " | ".join(f"{row[('dice_tumour', arm)]:.3f} | {row[('iou_tumour', arm)]:.3f}" for arm in arms)
        lines.append(f"| {row[('fold', '')]} | {row[('case_id', '')]} | {cells} |")
    lines += ["", f"Mean per {unit}: " + "; ".join(f"{arm} Dice **{means[arm]['dice']:.3f}**, IoU {means[arm]['iou']:.3f}" for arm in arms) + "."]
    if len(arms) == 2:
        lines.append(f"pipeline - baseline: Dice {means['pipeline']['dice'] - means['baseline']['dice']:+.3f}, IoU {means['pipeline']['iou'] - means['baseline']['iou']:+.3f}.")
    if payload["published"]:
        value, source = payload["published"]
        lines.append(f"Published: {value:.2f} ({source}). Not the same budget: this run trains {settings['epochs']} short epoch(s) per fold on CPU, on {payload['cases']} patients.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    run(_arguments(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
