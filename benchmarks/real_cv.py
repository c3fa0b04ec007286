"""Cross-validate the pipeline on the 21 labelled real BraTS patients, next to a plain 2.5D UNet trained for the same CPU time.

    python -m benchmarks.real_cv [--folds 5] [--max-folds N | --fold K ...] [--epochs 12] [--set KEY=VALUE ...] [--config FILE ...]
                                 [--checkpoint best|last] [--tta] [--label NAME] [--device cpu|cuda]
    make bench-real FOLDS=5 ARGS="--label wide --set channels=[32,64,128,256]"
    python -m benchmarks.real_cv --fold 0 --fold 1 --label cv-a & python -m benchmarks.real_cv --fold 2 --label cv-b & ...
    python -m benchmarks.real_cv --merge benchmarks/results/real_cv-*-cv-?.json --label cv

The labelled case folders of ``../shared/data/real_brats``, ``real_brats_train`` and
``real_brats_more`` (:data:`SOURCE_FOLDERS`: 2 + 5 + 14 patients; ``$BRATS_SHARED_DATA`` or
``--shared-data`` elsewhere; without them the run prints one ``skipped:`` line and exits 0) are
linked under ``WORK/data`` and listed and preprocessed once into ``WORK/datalist.json`` and
``WORK/cache`` (reused by later runs). The patients are dealt into ``--folds`` patient-level folds
(default 5: 4 or 5 held out per fold; :mod:`benchmarks.cv_folds`); ``--max-folds N`` runs the
first N only, ``--fold K`` (repeatable) the folds named, so that parts of one split run side by side
(each part trains one process at a time) and ``--merge`` joins their results into one. For each fold, with its own data list in which the held-out patients are the
``test`` split:

1. pipeline arm: ``python -m pipeline train`` (the bundle's default config, ``--epochs``,
   ``--config`` files and ``--set`` overrides; one other patient validates, and picks
   ``models/model.pt`` under ``keep_weights: best``), then :func:`pipeline.evaluation.evaluate.evaluate` on the held-out patients
   (lesion-wise scores on; ``--checkpoint last`` scores the final weights from ``latest.pt``);
2. baseline arm: ``python -m benchmarks.baseline_unet25d`` trained on every other patient for the
   CPU seconds the pipeline's training took (loader workers included; ``--budget wall``: its wall
   time), then predicting the held-out patients.

With ``--task-arm TASK[:CHANNELS]`` (e.g. ``whole-tumour:flair``) a third arm trains the pipeline
on another task of the same patients and folds (its own data list and cache under ``WORK``) and
is scored against the BraTS ground truth on the structures that task scores (the FLAIR-only
whole-tumour model against the four-channel model's WT).

Every prediction is scored by :func:`pipeline.evaluation.metrics.case_metrics` (:mod:`benchmarks.cv_scoring`):
Dice and HD95 of WT, TC, ET, NEC and ED, lesion-wise Dice of WT, TC and ET, WT precision and
components. Each pipeline and baseline prediction also gets its label confusion against the
ground truth (:mod:`benchmarks.label_confusion`): for each true internal label (background, NEC,
ED, ET), the voxels predicted as each label, summed per arm over the held-out patients (counts
and row percentages: where the true NEC goes), and per patient the share of the true NEC
predicted as NEC and as ED.

The per-patient rows, the means per arm and per structure, ``pipeline - baseline`` and the
confusion tables are printed and written to ``benchmarks/results/real_cv-<machine>-<date>-<label>.json``
and ``.md`` (:func:`report_markdown`) with the patients by source folder, the folds, the
hardware, wall and CPU seconds per arm and fold, and the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.cv_folds import Fold, make_folds, write_fold_datalist
from benchmarks.cv_scoring import ROW_METRICS, UNCERTAINTY_SCORE, arm_means, case_row, markdown_tables, score_prediction, uncertainty_rank_correlation
from benchmarks.label_confusion import arm_confusions, confusion_markdown
from benchmarks.machine import check_device, describe_machine, machine_name
from pipeline.core.errors import ConfigError, PipelineError
from pipeline.core.io import write_json, write_text

__all__ = ["SOURCE_FOLDERS", "find_shared_data", "labelled_cases", "patients_by_source", "report_markdown", "prepare_cohort", "run_child", "run_pipeline_arm", "run_baseline_arm", "task_arm_row", "task_paths", "train_command", "merge_results", "write_report", "main"]

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DEFAULT_WORK_DIR = REPO_ROOT / "benchmarks" / "work"
#: The shared data folder next to the checkout (as ``tests/conftest.py`` finds it); the variable overrides it.
SHARED_DATA_ENV = "BRATS_SHARED_DATA"
DEFAULT_SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
#: Folders of ``../shared/data`` whose labelled cases make the cohort (a case without a seg file is left out): 21 patients.
SOURCE_FOLDERS: tuple[str, ...] = ("real_brats", "real_brats_train", "real_brats_more")
#: Patient-level folds by default: 5 folds of 21 patients hold out 4 or 5 each.
DEFAULT_FOLDS = 5
#: 2: the rows hold each prediction's label confusion (``confusion``, ``nec_as_NEC``, ``nec_as_ED``), the report ``confusion`` per arm and ``data.sources``.
FORMAT_VERSION = 2


def find_shared_data(option: Path | None) -> Path:
    """``--shared-data``, else ``$BRATS_SHARED_DATA``, else ``../shared/data`` next to the repository."""
    return Path(option or os.environ.get(SHARED_DATA_ENV) or DEFAULT_SHARED_DATA)


def labelled_cases(shared_data: Path, sources: Sequence[str] = SOURCE_FOLDERS) -> dict[str, Path]:
    """Case folders with a segmentation file under the ``sources`` folders (default :data:`SOURCE_FOLDERS`), by case id (sorted)."""
    cases = {}
    for source in sources:
        folder = shared_data / source
        for case in sorted(folder.iterdir()) if folder.is_dir() else ():
            if case.is_dir() and any(case.glob("*_seg.nii*")):
                if case.name in cases:
                    raise ConfigError(case, f"case {case.name} is also in {cases[case.name].parent}")
                cases[case.name] = case
    return dict(sorted(cases.items()))


def prepare_cohort(cases: dict[str, Path], work: Path, workers: int = 1, task: Any = None) -> Path:
    """Link the cases under ``work/data``, list them in ``work/datalist.json`` and preprocess them into ``work/cache``; reuses what exists.

    With a ``task`` (a :class:`pipeline.tasks.task.Task` other than the default), the list and cache are
    ``work/datalist-<task>.json`` and ``work/cache-<task>`` (:func:`task_paths`).
    """
    from pipeline.datasets.datalist import build_datalist, load_datalist
    from pipeline.preprocessing.prepare import preprocess_datalist

    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    for stale in data.iterdir():
        if stale.is_symlink() and stale.name not in cases:
            stale.unlink()
    for case_id, folder in cases.items():
        link = data / case_id
        if not (link.is_symlink() and link.resolve() == folder.resolve()):
            tmp = data / f".{case_id}.tmp"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(folder.resolve(), target_is_directory=True)
            tmp.replace(link)
    datalist, cache = task_paths(work, task)
    listed, stored_task = set(), None
    if datalist.is_file():
        listing = load_datalist(datalist)
        listed, stored_task = {record.case_id for record in listing.cases("all")}, listing.task
    if listed != set(cases) or (task is not None and stored_task != task):
        build_datalist(data, datalist, folds=1, test_fraction=0.0, progress=False, task=task)
    preprocess_datalist(datalist, cache, workers=workers, progress=False)
    return datalist


def task_paths(work: Path, task: Any = None) -> tuple[Path, Path]:
    """The data list and cache of a task's cohort under ``work`` (the default task: ``datalist.json`` and ``cache``)."""
    from pipeline.tasks.task import DEFAULT_TASK

    if task is None or task == DEFAULT_TASK:
        return work / "datalist.json", work / "cache"
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in task.name).strip("-")
    return work / f"datalist-{name}.json", work / f"cache-{name}"


def _child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def run_child(command: list[str], log: Path) -> tuple[float, float]:
    """Run a Python module of this checkout in a child process, output to ``log``; its wall and CPU seconds (loader workers included).

    A SIGTERM to this process while the child runs ends the child too (``subprocess.run`` kills
    it on the ``SystemExit`` the signal raises), so a stopped benchmark leaves no training behind.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    log.parent.mkdir(parents=True, exist_ok=True)
    wall, cpu = time.perf_counter(), _child_cpu_seconds()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        with open(log, "w") as out:
            code = subprocess.run([sys.executable, *command], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    finally:
        signal.signal(signal.SIGTERM, previous)
    wall, cpu = time.perf_counter() - wall, _child_cpu_seconds() - cpu
    if code != 0:
        lines = log.read_text(errors="replace").strip().splitlines() or ["(no output)"]
        raise ConfigError(log, f"{command[1]} failed with exit code {code}: {lines[-1]}")
    return wall, cpu


def train_command(fold: Fold, datalist: Path, cache: Path, run_dir: Path, args: argparse.Namespace) -> list[str]:
    """The ``pipeline train`` arguments of a fold: its validation patients validate (``--fold 0``), or with none every patient not held out trains (``--fold none``)."""
    command = ["-m", "pipeline", "train", "--datalist", str(datalist), "--cache", str(cache), "--mode", args.mode]
    command += ["--epochs", str(args.epochs), "--fold", "0" if fold.validation else "none", "--device", args.device, "--out", str(run_dir)]
    command += [item for path in args.config for item in ("--config", str(path))]
    return command + [item for pair in args.overrides for item in ("--set", pair)]


def run_pipeline_arm(
    fold: Fold, datalist: Path, cache: Path, folder: Path, args: argparse.Namespace, arm: str = "pipeline", scored_on: Path | None = None
) -> tuple[list[dict], dict]:
    """Train with the CLI and evaluate the held-out patients; the rows and the arm's timings.

    ``arm`` names the run's folders and rows. ``scored_on`` (a fold data list of the default task)
    re-scores another task's predictions against the BraTS ground truth, on the structures that
    task scores (:func:`task_arm_row`).
    """
    from pipeline.inference.model import load_model
    from pipeline.core.checkpoints import load_weights
    from pipeline.datasets.datalist import load_datalist
    from pipeline.evaluation.evaluate import PREDICTIONS_DIR, evaluate
    from pipeline.inference.writers import segmentation_filename

    run_dir = folder / arm
    train_wall, train_cpu = run_child(train_command(fold, datalist, cache, run_dir, args), folder / f"{arm}_train.log")

    wall, cpu = time.perf_counter(), time.process_time()
    model = load_model(run_dir, device=args.device, tta=args.tta)
    if args.checkpoint == "last":
        load_weights(model.network, run_dir / "models" / "latest.pt")
    result = evaluate(model, datalist, folder / f"{arm}_eval", split="test", lesion_wise=True, uncertainty=True, progress=False, echo=False)
    eval_wall, eval_cpu = time.perf_counter() - wall, time.process_time() - cpu
    predictions = folder / f"{arm}_eval" / PREDICTIONS_DIR
    records = {record.case_id: record for record in load_datalist(scored_on or datalist).cases("test")}
    if scored_on is not None:
        rows = [task_arm_row(fold.index, arm, model.task, predictions / segmentation_filename(case), records[case]) for case in records]
    else:
        rows = []
        for metrics in result.metrics.to_dict("records"):
            case = metrics["case_id"]
            row = case_row(fold.index, case, arm, metrics, predictions / segmentation_filename(case), records[case])
            rows.append(row | {UNCERTAINTY_SCORE: float(metrics[UNCERTAINTY_SCORE])})
    timing = {"train_wall_s": train_wall, "train_cpu_s": train_cpu, "eval_wall_s": eval_wall, "eval_cpu_s": eval_cpu}
    return rows, timing | {"checkpoint": _checkpoint_choice(run_dir, args.checkpoint)}


def task_arm_row(fold: int, arm: str, task: Any, seg: Path, record: Any) -> dict[str, Any]:
    """A row of another task's prediction scored against the BraTS ground truth: the columns of the structures that task scores, NaN elsewhere.

    The prediction is written in the case's own label values, so reading it with the BraTS
    convention gives every predicted tumour voxel a tumour label: its WT is exact.
    """
    row = case_row(fold, record.case_id, arm, score_prediction(seg, record), seg)
    kept = {name for name in ROW_METRICS if name.rpartition("_")[2] in set(task.structures)} | {"wt_components"}
    return {key: (value if key in kept or key not in ROW_METRICS else float("nan")) for key, value in row.items()}


def _checkpoint_choice(run_dir: Path, checkpoint: str) -> dict[str, Any]:
    """Which epoch the scored weights come from, read from ``latest.pt`` (weights only)."""
    import torch

    state = torch.load(run_dir / "models" / "latest.pt", map_location="cpu", weights_only=True)
    return {
        "scored": checkpoint,
        "epochs": int(state["epoch"]),
        "best_epoch": int(state.get("best_metric_epoch", -1)),
        "best_val_mean_dice": float(state.get("best_metric", -1.0)),
    }


def run_baseline_arm(fold: Fold, datalist: Path, folder: Path, seconds: float, device: str, budget: str = "cpu", seed: int = 0) -> tuple[list[dict], dict]:
    """Train the baseline (seeded ``seed``) for ``seconds`` of CPU time (``budget`` cpu) or wall time (wall, from its start) and score its predictions of the held-out patients."""
    from pipeline.datasets.datalist import load_datalist
    from pipeline.inference.writers import segmentation_filename

    out = folder / "baseline"
    command = ["-m", "benchmarks.baseline_unet25d", "--datalist", str(datalist), "--out", str(out)]
    command += ["--cpu-seconds", f"{seconds:.1f}"] if budget == "cpu" else ["--deadline", f"{time.time() + seconds:.3f}"]
    wall, cpu = run_child([*command, "--device", device, "--seed", str(seed)], folder / "baseline.log")
    rows = []
    for record in load_datalist(datalist).cases("test"):
        seg = out / segmentation_filename(record.case_id)
        rows.append(case_row(fold.index, record.case_id, "baseline", score_prediction(seg, record), seg, record))
    inner = json.loads((out / "baseline.json").read_text())
    timing = {"wall_s": wall, "cpu_s": cpu, "train_wall_s": inner["train_seconds"], "train_cpu_s": inner["train_cpu_seconds"], "steps": inner["steps"]}
    return rows, timing


def _reused_arm(path: Path, folds: list[Fold], arm: str) -> tuple[list[dict], dict[int, dict], dict[str, Any]]:
    """The ``arm`` rows and timings of ``folds`` from an earlier result that held out the same patients in them, and its settings.

    The earlier result may hold more folds of the same split (a merged result reused by one
    ``--fold K`` part); only the rows and timings of ``folds`` are kept.
    """
    option = f"--{arm}-from"
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(path, f"{option}: cannot read an earlier result ({err})") from None
    held_out = {int(fold.get("fold", -1)): fold.get("test") for fold in earlier.get("folds", [])}
    if any(held_out.get(fold.index) != list(fold.test) for fold in folds):
        raise ConfigError(path, f"{option}: its folds hold out other patients than this run's; use the same --folds and --seed")
    wanted = {fold.index for fold in folds}
    rows = [row for row in earlier.get("rows", []) if row.get("arm") == arm and row.get("fold") in wanted]
    if not rows:
        raise ConfigError(path, f"{option}: the result has no {arm} rows")
    timing = {int(k): v for k, v in earlier.get("timing", {}).get(arm, {}).items() if int(k) in wanted}
    return rows, timing, earlier.get("settings", {})


#: Settings a reused pipeline arm (``--pipeline-from``) must share with the run that reuses it.
_PIPELINE_SETTINGS = ("epochs", "mode", "overrides", "config_files", "val_cases", "checkpoint", "tta", "device")


def _reused_pipeline(path: Path, folds: list[Fold], settings: dict[str, Any]) -> tuple[list[dict], dict[int, dict]]:
    """The pipeline rows and timings of ``folds`` from an earlier result trained with ``settings`` (:data:`_PIPELINE_SETTINGS`)."""
    rows, timing, earlier = _reused_arm(path, folds, "pipeline")
    differing = [key for key in _PIPELINE_SETTINGS if earlier.get(key) != settings[key]]
    if differing:
        key = differing[0]
        raise ConfigError(path, f"--pipeline-from: its pipeline ran with {key} {earlier.get(key)!r}, this run has {settings[key]!r}; give the same options")
    return rows, timing


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.real_cv", description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help=f"patient-level folds (default {DEFAULT_FOLDS}: 4 or 5 of the 21 patients held out per fold)")
    parser.add_argument("--max-folds", type=int, default=None, metavar="N", help="run only the first N folds (a quicker, partial cross-validation)")
    parser.add_argument(
        "--fold",
        dest="only_folds",
        type=int,
        action="append",
        default=[],
        metavar="K",
        help="run only fold K of the split (repeatable; 0-based): parts of one cross-validation run side by side and --merge joins them",
    )
    parser.add_argument("--epochs", type=int, default=None, help="pipeline training epochs per fold (default: the training config's, train.yaml's 12)")
    parser.add_argument("--mode", default="2.5d", choices=("2d", "2.5d", "3d"), help="pipeline training mode (default 2.5d)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="bundle override passed to train (repeatable)")
    parser.add_argument("--config", action="append", type=Path, default=[], metavar="FILE", help="bundle override file passed to train (repeatable)")
    parser.add_argument("--val-cases", type=int, default=1, help="training patients that validate (and pick model.pt under keep_weights: best) in each fold (default 1; 0: none, all train)")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"), help="score models/model.pt (what keep_weights kept: the final weights by default) or the final weights of latest.pt")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help="mirrored TTA in evaluation (default: the config's)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where both arms train and predict")
    parser.add_argument(
        "--budget",
        default="cpu",
        choices=("cpu", "wall"),
        help="the baseline trains for the pipeline's training CPU seconds (default: robust to other load on a shared machine) or wall seconds",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fold split")
    parser.add_argument(
        "--sources",
        type=lambda value: tuple(part for part in value.split(",") if part),
        default=SOURCE_FOLDERS,
        metavar="FOLDER,...",
        help=f"folders of the shared data whose labelled cases make the cohort (default {','.join(SOURCE_FOLDERS)}; "
        "real_brats,real_brats_train is the 7-patient cohort of the results before the 21)",
    )
    parser.add_argument("--label", default="default", help="names the run in the results file name")
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        metavar="RESULT.json",
        help="train nothing: join the results of --fold runs of one split (same settings, disjoint folds) into one result named by --label",
    )
    parser.add_argument("--baseline-from", type=Path, default=None, metavar="RESULT.json", help="reuse the baseline rows of an earlier result with the same folds")
    parser.add_argument("--no-baseline", action="store_true", help="run the pipeline arm only")
    parser.add_argument(
        "--pipeline-from",
        type=Path,
        default=None,
        metavar="RESULT.json",
        help="reuse the pipeline rows and training times of an earlier result with the same folds and pipeline options; only the baseline trains",
    )
    parser.add_argument(
        "--baseline-seed", type=int, default=None, help="the seed of the baseline this run trains (weights and slice draws; default 0)"
    )
    parser.add_argument(
        "--task-arm",
        default=None,
        metavar="TASK[:CHANNELS]",
        help="also train the pipeline on another task, on the same folds and epochs (e.g. whole-tumour:flair, channels joined by +); "
        "scored against the BraTS ground truth on that task's structures",
    )
    parser.add_argument("--shared-data", type=Path, default=None, help=f"the shared data folder (default ${SHARED_DATA_ENV} or ../shared/data)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK_DIR, help="links, data list, cache and runs (default benchmarks/work)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON and markdown go (default benchmarks/results)")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if any(not 0 <= k < args.folds for k in args.only_folds):
        parser.error(f"--fold must lie in 0..{args.folds - 1}")
    if args.max_folds is not None and args.max_folds < 1:
        parser.error("--max-folds must be at least 1")
    if args.no_baseline and args.baseline_from:
        parser.error("--no-baseline and --baseline-from exclude each other")
    if args.pipeline_from and (args.no_baseline or args.baseline_from or args.task_arm):
        parser.error("--pipeline-from trains the baseline only: it excludes --no-baseline, --baseline-from and --task-arm")
    if args.baseline_seed is not None and (args.no_baseline or args.baseline_from):
        parser.error("--baseline-seed seeds a baseline this run trains: it excludes --no-baseline and --baseline-from (which records the reused run's seed)")
    return args


def _task_arm(spec: str | None) -> Any:
    """``TASK[:CH+CH]`` as a task on those channels, or ``None``."""
    if not spec:
        return None
    from pipeline.tasks.task import resolve_task

    name, _, channels = spec.partition(":")
    return resolve_task(name, [c for c in channels.split("+") if c] or None)


def _log(message: str) -> None:
    print(f"[real_cv {datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, argv: Sequence[str]) -> Path | None:
    """The whole benchmark; the results JSON, or ``None`` when the real data are absent."""
    from pipeline.training.workflow import configured, parse_overrides

    check_device(args.device)
    overrides = parse_overrides(args.overrides)
    for path in args.config:
        if not path.is_file():
            raise ConfigError(path, "--config: file not found")
    args.epochs = int(configured(args.epochs, "epochs", args.config, overrides))
    shared = find_shared_data(args.shared_data)
    cases = labelled_cases(shared, args.sources)
    if len(cases) < 3:
        print(f"skipped: real data not found at {shared} (needs labelled cases in {', '.join(args.sources)})")
        return None
    folds = make_folds(list(cases), args.folds, args.val_cases, args.seed)[: args.max_folds]
    if args.only_folds:
        folds = [fold for fold in folds if fold.index in set(args.only_folds)]
    baseline_rows, baseline_timing, reused_settings = _reused_arm(args.baseline_from, folds, "baseline") if args.baseline_from else ([], {}, {})
    # The seed of the baseline rows: the reused run's (0 before the seed was recorded), none without a baseline.
    baseline_seed = None if args.no_baseline else reused_settings.get("baseline_seed", 0) if args.baseline_from else args.baseline_seed or 0
    settings = {
        "folds": args.folds, "max_folds": args.max_folds, "only_folds": sorted(args.only_folds), "epochs": args.epochs, "mode": args.mode, "overrides": overrides, "config_files": [str(p) for p in args.config],
        "val_cases": args.val_cases, "checkpoint": args.checkpoint, "tta": args.tta, "device": args.device, "seed": args.seed,
        "baseline": "none" if args.no_baseline else f"reused from {args.baseline_from}" if args.baseline_from else "measured",
        "baseline_seed": baseline_seed,
        "task_arm": None,
    }
    pipeline_rows, pipeline_timing = _reused_pipeline(args.pipeline_from, folds, settings) if args.pipeline_from else ([], {})
    if args.pipeline_from:
        settings["pipeline"] = f"reused from {args.pipeline_from}"
    started = datetime.now(timezone.utc)
    runs = args.work / "runs" / f"{started:%Y%m%dT%H%M%S}-{args.label}"
    _log(f"{len(cases)} labelled patients from {shared}; preparing the cohort in {args.work}")
    datalist = prepare_cohort(cases, args.work)
    task_arm = _task_arm(args.task_arm)
    task_datalist = prepare_cohort(cases, args.work, task=task_arm) if task_arm is not None else None
    settings["task_arm"] = None if task_arm is None else task_arm.to_dict()
    rows, timing = [], {"pipeline": {}, "baseline": baseline_timing}
    if task_arm is not None:
        timing[task_arm.name] = {}
    for fold in folds:
        folder = runs / f"fold{fold.index}"
        fold_list = write_fold_datalist(datalist, fold, folder / "datalist.json")
        _log(f"fold {fold.index} ({folds.index(fold) + 1}/{len(folds)}): test {', '.join(fold.test)}; validation {', '.join(fold.validation) or 'none'}; pipeline training")
        if args.pipeline_from:
            fold_rows, timing["pipeline"][fold.index] = [row for row in pipeline_rows if row["fold"] == fold.index], pipeline_timing[fold.index]
        else:
            fold_rows, timing["pipeline"][fold.index] = run_pipeline_arm(fold, fold_list, args.work / "cache", folder, args)
        rows += fold_rows
        if task_arm is not None:
            _log(f"fold {fold.index}: {task_arm.name} training")
            task_list = write_fold_datalist(task_datalist, fold, folder / f"datalist-{task_arm.name}.json")
            task_rows, timing[task_arm.name][fold.index] = run_pipeline_arm(
                fold, task_list, task_paths(args.work, task_arm)[1], folder, args, arm=task_arm.name, scored_on=fold_list
            )
            rows += task_rows
        seconds = timing["pipeline"][fold.index][f"train_{args.budget}_s"]
        if not (args.no_baseline or args.baseline_from):
            trained = "reused, trained" if args.pipeline_from else "trained"
            _log(f"fold {fold.index}: pipeline {trained} in {seconds:.0f} {args.budget} s; baseline for the same {args.budget} time")
            fold_rows, timing["baseline"][fold.index] = run_baseline_arm(fold, fold_list, folder, seconds, args.device, args.budget, baseline_seed)
            baseline_rows += fold_rows
        fold_means = arm_means([row for row in rows + baseline_rows if row["fold"] == fold.index])
        _log(f"fold {fold.index} done: WT Dice " + ", ".join(f"{arm} {m['dice_WT']:+.3f}" for arm, m in fold_means.items()))
    rows += baseline_rows
    means = arm_means(rows)
    correlation = uncertainty_rank_correlation(rows)
    machine = describe_machine(args.device)
    report = {
        "format_version": FORMAT_VERSION,
        "label": args.label,
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.now(timezone.utc) - started).total_seconds(), 1),
        "command_line": shlex.join([Path(sys.executable).name, "-m", "benchmarks.real_cv", *argv]),
        "settings": settings,
        "data": {"shared_data": str(shared), "sources": patients_by_source(cases), "cases": {case: str(path) for case, path in cases.items()}, "work": str(args.work)},
        "folds": [fold.to_dict() for fold in folds],
        "machine": machine,
        "timing": timing,
        "rows": rows,
        "means": means,
        "confusion": arm_confusions(rows),
        "uncertainty_dice_spearman": correlation,
    }
    return write_report(report, args.results_dir)


#: Settings that may differ between the parts :func:`merge_results` joins.
_PART_SETTINGS = ("only_folds", "max_folds")


def merge_results(paths: Sequence[Path], label: str, command_line: str) -> dict[str, Any]:
    """One result from the results of several ``--fold`` runs of the same split, run side by side.

    The parts must share the data, the machine and every setting but the folds they ran, and no
    fold may appear twice (:class:`ConfigError` naming the part otherwise). Rows, timings and
    folds are joined in fold order; means, label confusion and the uncertainty correlation are
    computed again over all rows. ``started`` is the earliest part's start and ``seconds`` the wall
    time from it to the last part's end; ``parts`` keeps each part's file, command line and times.
    """
    if len(paths) < 2:
        raise ConfigError(paths[0] if paths else "--merge", "--merge needs the results of at least two --fold runs")
    parts = []
    for path in paths:
        try:
            parts.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as err:
            raise ConfigError(path, f"not a readable results file ({err})") from None
    first = parts[0]

    def comparable(report: dict[str, Any]) -> tuple:
        settings = {key: value for key, value in report["settings"].items() if key not in _PART_SETTINGS}
        return report.get("format_version"), settings, report["data"]["cases"], machine_name(report["machine"])

    seen: dict[int, Path] = {}
    for path, part in zip(paths, parts):
        if comparable(part) != comparable(first):
            raise ConfigError(path, f"its settings, data or machine differ from {paths[0]}'s: only --fold runs of one split can be merged")
        for fold in part["folds"]:
            if fold["fold"] in seen:
                raise ConfigError(path, f"fold {fold['fold']} is also in {seen[fold['fold']]}")
            seen[fold["fold"]] = path
    folds = sorted((fold for part in parts for fold in part["folds"]), key=lambda fold: fold["fold"])
    all_rows = [row for part in parts for row in part["rows"]]
    arms = list(dict.fromkeys(row["arm"] for row in all_rows))
    rows = sorted(all_rows, key=lambda row: (arms.index(row["arm"]), row["fold"]))
    timing: dict[str, dict[str, Any]] = {}
    for part in parts:
        for arm, per_fold in part["timing"].items():
            timing.setdefault(arm, {}).update({str(fold): times for fold, times in per_fold.items()})
    starts = [datetime.fromisoformat(part["started"]) for part in parts]
    end = max(start.timestamp() + part["seconds"] for start, part in zip(starts, parts))
    return {
        **first,
        "label": label,
        "started": min(starts).isoformat(timespec="seconds"),
        "seconds": round(end - min(starts).timestamp(), 1),
        "command_line": command_line,
        "parts": [
            {"file": Path(path).name, "label": part["label"], "folds": [fold["fold"] for fold in part["folds"]], "command_line": part["command_line"], "started": part["started"], "seconds": part["seconds"]}
            for path, part in zip(paths, parts)
        ],
        "settings": {**first["settings"], "only_folds": sorted(seen), "max_folds": None},
        "folds": folds,
        "timing": timing,
        "rows": rows,
        "means": arm_means(rows),
        "confusion": arm_confusions(rows),
        "uncertainty_dice_spearman": uncertainty_rank_correlation(rows),
    }


def write_report(report: dict[str, Any], results_dir: Path) -> Path:
    """Write the result's JSON and markdown as ``real_cv-<machine>-<date>-<label>``; the JSON's path."""
    path = results_dir / f"real_cv-{machine_name(report['machine'])}-{report['started'][:10]}-{report['label']}.json"
    write_json(path, report)
    markdown = report_markdown(report)
    write_text(path.with_suffix(".md"), markdown)
    print(markdown)
    return path


def patients_by_source(cases: dict[str, Path]) -> dict[str, list[str]]:
    """The case ids of :func:`labelled_cases` grouped by the folder of :data:`SOURCE_FOLDERS` they come from (in that order)."""
    return {source: [case for case, folder in cases.items() if folder.parent.name == source] for source in SOURCE_FOLDERS if any(f.parent.name == source for f in cases.values())}


def _fold_timing(timing: dict, fold: int) -> dict:
    """One fold's timing of an arm, whether the keys are numbers (this run) or strings (read back from JSON)."""
    return timing.get(fold) or timing.get(str(fold)) or {}


def report_markdown(report: dict[str, Any]) -> str:
    """The results file's markdown, from its JSON payload alone: the data (patients by source folder), the folds with
    their times, the machine, the tables per patient, per arm and per structure, the uncertainty correlation and the label confusion.
    """
    rows, machine, data = report["rows"], report["machine"], report["data"]
    gpu = f", GPU {machine['gpu']['name']}" if machine.get("gpu") else ""
    lines = [f"## Real-data cross-validation: {report['label']}", "", f"`{report['command_line']}`", ""]
    if report.get("parts"):
        lines += ["Joined from runs side by side on the same machine:", ""]
        lines += [f"- `{part['command_line']}` (started {part['started']}, {part['seconds']:.0f} s)" for part in report["parts"]]
        lines.append("")
    lines += [f"Started {report['started']}, {report['seconds']:.0f} s in all, on {machine['cpu_model']} ({machine['cpu_cores']} cores{gpu}).", ""]
    lines += [f"### Data: {len(data['cases'])} labelled patients from `{data['shared_data']}`", ""]
    lines += [f"- `{source}` ({len(cases)}): {', '.join(cases)}" for source, cases in data["sources"].items()]
    lines += ["", f"### Folds ({len(report['folds'])} of {report['settings']['folds']}, seed {report['settings']['seed']})", ""]
    lines += ["| fold | held out | validation | training patients | pipeline train wall s | pipeline train CPU s | baseline train CPU s |", "|---|---|---|---|---|---|---|"]
    for fold in report["folds"]:
        pipeline, baseline = (_fold_timing(report["timing"].get(arm, {}), fold["fold"]) for arm in ("pipeline", "baseline"))
        seconds = [f"{times[key]:.0f}" if key in times else "-" for times, key in ((pipeline, "train_wall_s"), (pipeline, "train_cpu_s"), (baseline, "train_cpu_s"))]
        lines.append(f"| {fold['fold']} | {', '.join(fold['test'])} | {', '.join(fold['validation']) or 'none (all train)'} | {len(fold['training'])} | " + " | ".join(seconds) + " |")
    correlation = report["uncertainty_dice_spearman"]
    lines += ["", markdown_tables(rows, report["means"])]
    lines += [
        f"Spearman rank correlation of the per-case uncertainty score ({UNCERTAINTY_SCORE}) with the per-case Dice "
        f"(pipeline arm, {sum(row['arm'] == 'pipeline' for row in rows)} cases): " + ", ".join(f"{name} {value:+.2f}" for name, value in correlation.items()),
        "",
        confusion_markdown(report["confusion"], rows),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse_args(argv)
    try:
        if args.merge:
            command = shlex.join([Path(sys.executable).name, "-m", "benchmarks.real_cv", *argv])
            path = write_report(merge_results(args.merge, args.label, command), args.results_dir)
        else:
            path = run(args, argv)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if path is not None:
        print(f"results: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
