"""Cross-validate the pipeline on the two real 2D data sets: per-patient volume Dice (Kaggle LGG) or per-image Dice (PNG pairs).

    python -m benchmarks.planar_cv --data kaggle [--folds 5] [--epochs 3] [--samples-per-epoch 200] [--mode 2d] [--set KEY=VALUE ...]
    python -m benchmarks.planar_cv --data pairs  [--folds 5] ...

The data set (``../shared/data/lgg_kaggle_3m`` or ``../shared/data/png_pairs``; ``--shared-data``
elsewhere; without it the run prints one ``skipped:`` line and exits 0) is listed and
preprocessed once into ``WORK/<data>/datalist.json`` and ``WORK/<data>/cache`` with its own task
(``kaggle-lgg``, ``image-mask-2d``). Its cases (patients, or images) are dealt into ``--folds``
folds (:mod:`benchmarks.cv_folds`); for each fold the pipeline trains (the bundle's defaults with
``--epochs``, ``--samples-per-epoch`` and ``--set``; one other case validates and picks
``models/model.pt``) and :func:`pipeline.evaluate.evaluate` scores the held-out cases with the
task's metric set (the run's default post-processing: Kaggle keeps the largest component).

Printed and written to ``benchmarks/results/planar_cv-<machine>-<date>-<data>.json`` and ``.md``:
every held-out case's Dice, the mean, the folds, the hardware, the settings and the seconds per
fold. The Kaggle mean is shown next to the published 82% mean per-patient Dice (Buda et al. 2019:
trained on about 100 patients, far longer): not the same budget nor the same patients.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.cv_folds import make_folds, write_fold_datalist
from benchmarks.machine import describe_machine, machine_name
from pipeline.io import write_json, write_text

__all__ = ["DATA_SETS", "PUBLISHED", "main", "run"]

REPO = Path(__file__).resolve().parents[1]

#: The data sets: folder under the shared data, and what one row scores.
DATA_SETS: dict[str, tuple[str, str]] = {"kaggle": ("lgg_kaggle_3m", "patient"), "pairs": ("png_pairs", "image")}

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
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE", help="Bundle override (repeatable).")
    parser.add_argument("--shared-data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "planar_cv")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--label", default="", help="Suffix of the results file names.")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any] | None:
    """Run the cross-validation and write its results; None when the data set is absent."""
    from pipeline.datalist import build_datalist, load_datalist
    from pipeline.evaluate import evaluate
    from pipeline.preprocess import preprocess_datalist
    from pipeline.training import parse_overrides, train

    folder, unit = DATA_SETS[args.data]
    root = args.shared_data / folder
    if not root.is_dir():
        print(f"skipped: {root} not found")
        return None
    started = time.perf_counter()
    load = [round(value, 2) for value in os.getloadavg()]  # other jobs on the machine slow every figure
    work = args.work / args.data
    datalist = work / "datalist.json"
    if not datalist.is_file():
        build_datalist(root, datalist, folds=args.folds, test_fraction=0.0, progress=False)
    preprocess_datalist(datalist, work / "cache", progress=False)
    loaded = load_datalist(datalist)
    cases = sorted(record.case_id for record in loaded.cases("all"))
    folds = make_folds(cases, args.folds)
    overrides = parse_overrides((f"samples_per_epoch={args.samples_per_epoch}", "progress=false", *args.settings))
    rows: list[dict[str, Any]] = []
    seconds: list[dict[str, float]] = []
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    for fold in folds:
        fold_dir = work / "runs" / stamp / f"fold{fold.index}"
        fold_list = write_fold_datalist(datalist, fold, fold_dir / "datalist.json")
        fold_started = time.perf_counter()
        run_dir = train(fold_list, work / "cache", fold_dir / "run", mode=args.mode, epochs=args.epochs, overrides=overrides)
        trained = time.perf_counter()
        result = evaluate(run_dir, fold_list, fold_dir / "eval", split="test", overlays=False, progress=False, echo=False)
        seconds.append({"fold": fold.index, "train_s": round(trained - fold_started, 1), "evaluate_s": round(time.perf_counter() - trained, 1)})
        for row in result.metrics.to_dict("records"):
            rows.append({"fold": fold.index, **row})
        print(f"fold {fold.index}: " + ", ".join(f"{r['case_id']} {r['dice_tumour']:.3f}" for r in rows if r["fold"] == fold.index), flush=True)
    frame = pd.DataFrame(rows)
    mean = float(frame["dice_tumour"].mean())
    machine = describe_machine("cpu")
    payload = {
        "benchmark": "planar_cv",
        "data": str(root),
        "data_set": args.data,
        "task": loaded.task.name,
        "unit": unit,
        "cases": len(cases),
        "folds": [fold.to_dict() for fold in folds],
        "settings": {"mode": args.mode, "epochs": args.epochs, "samples_per_epoch": args.samples_per_epoch, "overrides": list(args.settings)},
        "machine": machine,
        "command": "python -m benchmarks.planar_cv " + " ".join(sys.argv[1:]),
        "load_average": load,
        "seconds_total": round(time.perf_counter() - started, 1),
        "seconds_per_fold": seconds,
        "mean_dice": mean,
        "published": PUBLISHED[args.data],
        "rows": rows,
    }
    name = f"planar_cv-{machine_name(machine)}-{datetime.now(timezone.utc):%Y-%m-%d}-{args.data}{'-' + args.label if args.label else ''}"
    write_json(args.results / f"{name}.json", payload)
    write_text(args.results / f"{name}.md", _markdown(payload, frame))
    print(_markdown(payload, frame))
    return payload


def _markdown(payload: dict[str, Any], frame: pd.DataFrame) -> str:
    """The results as a short Markdown page: settings, per-case Dice, mean, next to the published figure."""
    unit, settings = payload["unit"], payload["settings"]
    lines = [
        f"# Cross-validation on {payload['data_set']} ({payload['cases']} {unit}s, task {payload['task']})",
        "",
        f"- command: `{payload['command']}`",
        f"- data: `{payload['data']}`; {len(payload['folds'])} folds by {unit} (one other {unit} validates each fold)",
        f"- settings: mode {settings['mode']}, {settings['epochs']} epoch(s) of {settings['samples_per_epoch']} slices, bundle defaults otherwise {settings['overrides'] or ''}",
        f"- machine: {payload['machine'].get('cpu_model', '?')}, {payload['machine'].get('cpu_cores', '?')} cores, CPU only, load average {payload['load_average']} at the start; total {payload['seconds_total']:.0f} s",
        "- seconds per fold (train + evaluate): " + ", ".join(f"{s['train_s']:.0f}+{s['evaluate_s']:.0f}" for s in payload["seconds_per_fold"]),
        "",
        f"| fold | {unit} | Dice | IoU | sensitivity | precision |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for row in frame.to_dict("records"):
        lines.append(f"| {row['fold']} | {row['case_id']} | {row['dice_tumour']:.3f} | {row['iou_tumour']:.3f} | {row['sensitivity_tumour']:.3f} | {row['precision_tumour']:.3f} |")
    lines += ["", f"Mean Dice per {unit}: **{payload['mean_dice']:.3f}** (median {frame['dice_tumour'].median():.3f})."]
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
