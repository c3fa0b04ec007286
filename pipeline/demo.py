"""The demo: the whole pipeline on the synthetic cohort on a CPU, in one call (``make demo``).

Five stages, each reusing what an earlier run finished:

1. **cohort**: :func:`pipeline.synth.generate_cohort` writes the synthetic BraTS 2021-style cases
   (finished cases are kept);
2. **data list**: patient-level folds and a held-out test split (:func:`pipeline.datasets.datalist.build_datalist`;
   an existing list of the same cases is kept);
3. **cache**: :func:`pipeline.preprocessing.prepare.preprocess_datalist` (unchanged cases are skipped);
4. **training**: the bundle's ``configs/train.yaml`` with ``configs/demo.yaml`` merged over it
   (:func:`pipeline.training.workflow.train`); a finished run is kept, an interrupted one resumes from
   ``models/latest.pt``;
5. **evaluation**: whole-volume inference on the held-out test patients, NIfTI segmentations with
   a 3D Slicer colour table, per-patient metrics, plots and overlays (:func:`pipeline.evaluation.evaluate.evaluate`);
   skipped when its report is newer than the model.

Everything the demo produces lies under ``out_dir`` (default ``outputs/demo``)::

    OUT/run/                      the training run (config.json, inference.json, provenance.json, models/, logs/, tensorboard/)
    OUT/evaluation/predictions/   <case>_seg.nii.gz (labels 0/1/2/4, the input's grid) + brats_brats2017.ctbl
    OUT/evaluation/overlays/      <case>.png: ground truth, prediction and error map (FP, FN) in three planes
    OUT/evaluation/plots/         Dice distribution, Dice per case, training curves
    OUT/evaluation/metrics.csv    one row per patient; summary.json / summary.txt: the statistics
    OUT/demo.json                 the demo's settings, stage times and mean Dice per structure

The cohort, data list and cache live where the Makefile keeps them (``data/synthetic``,
``data_lists/synthetic.json``, ``cache/synthetic``), so ``make train`` and ``make demo`` share them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.checkpoints import KEPT, finished_epochs
from pipeline.core.errors import ConfigError
from pipeline.core.io import write_json
from pipeline.core.paths import BUNDLE_DIR
from pipeline.datasets.datalist import SPLITS, build_datalist, load_datalist
from pipeline.evaluation.evaluate import evaluate
from pipeline.preprocessing.prepare import preprocess_datalist
from pipeline.synth import generate_cohort
from pipeline.training.workflow import TRAIN_CONFIG, train

__all__ = ["DEMO_CONFIG", "DemoResult", "configured_epochs", "datalist_matches_cohort", "run_demo"]


#: The demo's training budget, merged over ``configs/train.yaml``.
DEMO_CONFIG = BUNDLE_DIR / "configs" / "demo.yaml"

#: The whole-tumour Dice the demo is expected to reach on the held-out synthetic patients.
TARGET_WT_DICE = 0.85

RUN_DIR, EVALUATION_DIR, DEMO_SUMMARY = "run", "evaluation", "demo.json"
STRUCTURES: tuple[str, ...] = ("WT", "TC", "ET", "NEC", "ED")


@dataclass
class DemoResult:
    """What :func:`run_demo` produced."""

    out_dir: Path
    run_dir: Path
    evaluation_dir: Path
    dice: dict[str, float]
    hd95: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)

    @property
    def target_reached(self) -> bool:
        return self.dice.get("WT", 0.0) >= TARGET_WT_DICE


def _echo_stage(echo: Callable[[str], None], number: int, title: str) -> None:
    echo(f"\n[{number}/5] {title}")


def datalist_matches_cohort(datalist: Path, data_dir: Path, case_ids: Sequence[str]) -> bool:
    """True when ``datalist`` exists, lists exactly ``case_ids`` and points at ``data_dir``."""

    if not datalist.is_file():
        return False
    try:
        listing = load_datalist(datalist)
    except Exception:  # an unreadable or outdated list is rebuilt, not trusted
        return False
    listed = {record.case_id for split in SPLITS for record in listing.records[split]}
    return Path(listing.data_root).resolve() == data_dir.resolve() and listed == set(case_ids)


def configured_epochs(config_files: Sequence[Path], overrides: Mapping[str, Any]) -> int:
    """The ``epochs`` of the demo: from ``overrides``, else the last config file that sets it, else train.yaml's."""
    from monai.bundle import ConfigParser

    if "epochs" in overrides:
        return int(overrides["epochs"])
    epochs = None
    for path in (TRAIN_CONFIG, *config_files):
        config = ConfigParser.load_config_file(str(path))
        if isinstance(config, Mapping) and "epochs" in config:
            epochs = config["epochs"]
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(config_files[-1] if config_files else TRAIN_CONFIG, f"epochs must be a positive integer, got {epochs!r}")
    return epochs


def _evaluation_is_current(evaluation_dir: Path, run_dir: Path, datalist: Path) -> bool:

    summary = evaluation_dir / "summary.json"
    model = run_dir / "models" / KEPT
    if not summary.is_file() or not model.is_file():
        return False
    return summary.stat().st_mtime > max(model.stat().st_mtime, datalist.stat().st_mtime)


def _mean(summary: Mapping[str, Any], metric: str, structure: str) -> float:
    """The mean of ``<metric>_<structure>`` in an evaluation's ``summary.json`` (NaN when absent)."""
    value = summary.get("metrics", {}).get(f"{metric}_{structure}")
    return float(value["mean"]) if isinstance(value, Mapping) else float("nan")


def run_demo(
    out_dir: str | os.PathLike[str] = "outputs/demo",
    data_dir: str | os.PathLike[str] = "data/synthetic",
    datalist: str | os.PathLike[str] = "data_lists/synthetic.json",
    cache_dir: str | os.PathLike[str] = "cache/synthetic",
    cases: int = 24,
    size: str = "small",
    seed: int = 0,
    workers: int = 2,
    epochs: int | None = None,
    config_files: Sequence[str | os.PathLike[str]] = (DEMO_CONFIG,),
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Generate, preprocess, train, evaluate and report on the synthetic cohort.

    Args:
        out_dir: where the run and the evaluation go.
        data_dir: the synthetic cohort's folder (generated or completed).
        datalist: its data list (written unless it already lists exactly this cohort).
        cache_dir: the preprocessed cache (built or completed).
        cases: cases in the cohort.
        size: ``small`` (the demo's 96x96x62 at 2.5 mm), ``tiny`` or ``full``.
        seed: cohort and split seed.
        workers: processes for preprocessing (training keeps train.yaml's loader settings).
        epochs: training epochs (``None``: the value in ``config_files``).
        config_files: bundle files merged over ``train.yaml`` (default: ``configs/demo.yaml``).
        overrides: bundle keys applied last (e.g. a tiny network for tests).
        progress: show progress bars.
        echo: where stage headers and the final summary go.

    Returns:
        The paths, the mean Dice and HD95 per structure on the test patients and the stage times.
    """

    out, data, listing, cache = Path(out_dir), Path(data_dir), Path(datalist), Path(cache_dir)
    run_dir, evaluation_dir = out / RUN_DIR, out / EVALUATION_DIR
    config_paths = [Path(p) for p in config_files]
    overrides = dict(overrides or {})
    target_epochs = int(epochs) if epochs is not None else configured_epochs(config_paths, overrides)
    seconds: dict[str, float] = {}
    reused: list[str] = []
    started = time.perf_counter()

    _echo_stage(echo, 1, f"Synthetic cohort: {cases} {size} cases -> {data}")
    clock = time.perf_counter()
    existing = {folder.name for folder in data.iterdir()} if data.is_dir() else set()
    folders = generate_cohort(data, cases=cases, seed=seed, size=size, progress=progress)
    if all(folder.name in existing for folder in folders):
        reused.append("cohort")
    seconds["cohort"] = time.perf_counter() - clock

    _echo_stage(echo, 2, f"Data list (patient-level folds, held-out test split) -> {listing}")
    clock = time.perf_counter()
    if datalist_matches_cohort(listing, data, [folder.name for folder in folders]):
        echo(f"kept {listing}: it lists exactly these {len(folders)} cases")
        reused.append("datalist")
    else:
        build_datalist(data, listing, seed=seed, progress=progress)
    seconds["datalist"] = time.perf_counter() - clock

    _echo_stage(echo, 3, f"Preprocessing into the memory-mapped cache -> {cache}")
    summary = preprocess_datalist(listing, cache, workers=workers, progress=progress)
    echo(str(summary))
    if not summary.processed:
        reused.append("cache")
    seconds["preprocess"] = summary.seconds

    _echo_stage(echo, 4, f"Training ({target_epochs} epochs on CPU) -> {run_dir}")
    clock = time.perf_counter()
    done = finished_epochs(run_dir / "models")
    if done >= target_epochs and (run_dir / "models" / KEPT).is_file():
        echo(f"kept the finished run in {run_dir} ({done} epochs)")
        reused.append("training")
    else:
        if done:
            echo(f"resuming the run in {run_dir} after epoch {done}")
        settings = dict(overrides)
        train(
            datalist=listing,
            cache_dir=cache,
            out=run_dir,
            mode=str(settings.pop("mode", "2.5d")),
            epochs=target_epochs,
            resume=done > 0,
            device="cpu",
            config_files=config_paths,
            overrides={"progress": progress, **settings},
        )
    seconds["training"] = time.perf_counter() - clock

    _echo_stage(echo, 5, f"Evaluating the held-out test patients (whole volumes) -> {evaluation_dir}")
    clock = time.perf_counter()
    if _evaluation_is_current(evaluation_dir, run_dir, listing):
        echo(f"kept the evaluation in {evaluation_dir} (newer than the model)")
        reused.append("evaluation")
        report = json.loads((evaluation_dir / "summary.json").read_text())
    else:
        report = evaluate(run_dir, listing, evaluation_dir, split="test", progress=progress, echo=False).summary
    seconds["evaluation"] = time.perf_counter() - clock
    seconds["total"] = time.perf_counter() - started

    result = DemoResult(
        out_dir=out,
        run_dir=run_dir,
        evaluation_dir=evaluation_dir,
        dice={s: _mean(report, "dice", s) for s in STRUCTURES},
        hd95={s: _mean(report, "hd95", s) for s in STRUCTURES},
        seconds={k: round(v, 1) for k, v in seconds.items()},
        reused=reused,
    )
    write_json(
        out / DEMO_SUMMARY,
        {
            "data_dir": str(data),
            "datalist": str(listing),
            "cache_dir": str(cache),
            "cases": cases,
            "size": size,
            "seed": seed,
            "epochs": target_epochs,
            "config_files": [str(p) for p in config_paths],
            "overrides": {k: v for k, v in overrides.items()},
            "test_cases": int(report.get("cases", 0)),
            "mean_dice": result.dice,
            "mean_hd95_mm": result.hd95,
            "target_wt_dice": TARGET_WT_DICE,
            "seconds": result.seconds,
            "reused": reused,
        },
    )
    echo(demo_summary_text(result, data, int(report.get("cases", 0))))
    return result


def showcase_case(evaluation_dir: Path) -> str:
    """The test patient to open first: the best mean Dice over WT, TC and ET (``<case>`` when there is none)."""
    import pandas as pd

    metrics = evaluation_dir / "metrics.csv"
    if not metrics.is_file():
        return "<case>"
    frame = pd.read_csv(metrics)
    columns = [c for c in ("dice_WT", "dice_TC", "dice_ET") if c in frame]
    if frame.empty or not columns:
        return "<case>"
    return str(frame.loc[frame[columns].mean(axis=1).idxmax(), "case_id"])


def demo_summary_text(result: DemoResult, data_dir: Path, test_cases: int) -> str:
    """The one-screen summary printed at the end of the demo."""
    evaluation = result.evaluation_dir
    predictions = evaluation / "predictions"
    example = showcase_case(evaluation)
    tables = sorted(predictions.glob("*.ctbl"))
    table = tables[0] if tables else predictions / "brats_brats2017.ctbl"
    verdict = "reached" if result.target_reached else "NOT reached"
    lines = [
        "",
        "=" * 78,
        f"Demo finished in {result.seconds.get('total', 0.0):.0f} s"
        + (f" (reused: {', '.join(result.reused)})" if result.reused else ""),
        f"Mean over the {test_cases} held-out synthetic test patients:",
        "  structure   Dice    HD95 (mm)",
    ]
    lines += [f"  {s:<9} {result.dice[s]:6.3f}  {result.hd95[s]:9.2f}" for s in STRUCTURES]
    lines += [
        f"  whole-tumour Dice target {TARGET_WT_DICE}: {verdict}",
        "",
        "Outputs:",
        f"  segmentations  {predictions}/<case>_seg.nii.gz (labels 0/1/2/4 on the input's grid)",
        f"  colour table   {table}",
        f"  overlays       {evaluation / 'overlays'}/<case>.png",
        f"  plots          {evaluation / 'plots'}/",
        f"  report         {evaluation / 'metrics.csv'}, {evaluation / 'summary.json'}",
        f"  model          {result.run_dir / 'models' / 'model.pt'} (TensorBoard: {result.run_dir / 'tensorboard'})",
        "",
        "Open a result in 3D Slicer:",
        f"  1. drag {table} into Slicer (it loads as a colour table)",
        f"  2. File > Add Data: {data_dir / example / (example + '_flair.nii.gz')}",
        f"     and {predictions / (example + '_seg.nii.gz')}",
        f"     (Show Options: Description 'Segmentation', Color node '{table.stem}')",
        "=" * 78,
    ]
    return "\n".join(lines)
