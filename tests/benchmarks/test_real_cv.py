"""The real-data cross-validation benchmark on the tiny synthetic cohort: folds, per-fold data lists, the baseline and the scoring."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from benchmarks import baseline_unet25d as baseline
from benchmarks.cv_folds import fold_run_folder, make_folds, write_fold_datalist
from benchmarks.cv_scoring import ROW_METRICS, UNCERTAINTY_SCORE, arm_means, case_row, markdown_tables, score_prediction, uncertainty_rank_correlation
from benchmarks.real_cv import _reused_arm, labelled_cases, main, patients_by_source
from pipeline.datasets.datalist import load_datalist
from pipeline.core.errors import ConfigError
from pipeline.tasks.labels import get_convention


@pytest.fixture(scope="module")
def fold_datalist(tiny_datalist: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """Fold 0 of 4 over the tiny cohort's labelled cases, as a data list in another folder."""
    cases = [record.case_id for record in load_datalist(tiny_datalist).cases("all")]
    fold = make_folds(cases, folds=4, val_cases=1, seed=0)[0]
    return write_fold_datalist(tiny_datalist, fold, tmp_path_factory.mktemp("fold") / "sub" / "fold0.json"), fold


def test_folds_hold_every_patient_out_once_and_never_train_on_it() -> None:
    cases = [f"case_{i:02d}" for i in range(7)]
    folds = make_folds(cases, folds=7, val_cases=1, seed=0)
    assert sorted(case for fold in folds for case in fold.test) == cases
    for fold in folds:
        assert len(fold.test) == 1 and len(fold.validation) == 1
        assert set(fold.test).isdisjoint({*fold.validation, *fold.training})
        assert sorted({*fold.test, *fold.validation, *fold.training}) == cases
    assert len({fold.validation for fold in folds}) == 7  # each fold validates on a different patient
    assert make_folds(cases, 7, 1, seed=0) == folds and make_folds(cases, 7, 1, seed=1) != folds
    with pytest.raises(ConfigError, match="--folds"):
        make_folds(cases, folds=8)
    with pytest.raises(ConfigError, match="--val-cases"):
        make_folds(cases, folds=2, val_cases=3)  # 4 held out + 3 validating leaves nobody to train


def test_folds_without_validation_train_on_every_patient_not_held_out(tiny_datalist: Path, tmp_path: Path) -> None:
    """``--val-cases 0``: the same held-out patients, nobody validates, and the pipeline trains with ``--fold none`` on all the others."""
    import argparse

    from benchmarks.real_cv import train_command

    cases = [record.case_id for record in load_datalist(tiny_datalist).cases("all")]
    with_validation, without = make_folds(cases, folds=4, val_cases=1, seed=0), make_folds(cases, folds=4, val_cases=0, seed=0)
    for one, none in zip(with_validation, without):
        assert none.test == one.test and none.validation == () and sorted(none.training) == sorted(one.training + one.validation)
    listing = load_datalist(write_fold_datalist(tiny_datalist, without[0], tmp_path / "fold0.json"))
    training, validation = listing.fold_split(None)  # what `pipeline train --fold none` uses
    assert sorted(r.case_id for r in training) == sorted(without[0].training) and validation == []
    args = argparse.Namespace(mode="2.5d", epochs=12, device="cpu", config=[], overrides=["seed=1"])
    for fold, expected in ((with_validation[0], "0"), (without[0], "none")):
        command = train_command(fold, tmp_path / "fold0.json", tmp_path / "cache", tmp_path / "run", args)
        assert command[command.index("--fold") + 1] == expected and command[-2:] == ["--set", "seed=1"]


def test_a_stopped_benchmark_stops_its_child(tmp_path: Path) -> None:
    """SIGTERM to a process waiting in ``run_child`` ends the child it runs (a stopped run leaves no training behind)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    script = f"from pathlib import Path; from benchmarks.real_cv import run_child; run_child(['-c', {child!r}], Path({str(tmp_path / 'child.log')!r}))"
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 60
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.monotonic() < deadline and parent.poll() is None, "the child never started"
        time.sleep(0.1)
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=30) == 128 + signal.SIGTERM
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_fold_datalist_puts_the_held_out_patients_in_test_only(fold_datalist: tuple[Path, object], tiny_datalist: Path) -> None:
    path, fold = fold_datalist
    listing = load_datalist(path)
    assert [r.case_id for r in listing.cases("test")] == list(fold.test) and all(r.fold == -1 for r in listing.cases("test"))
    training, validation = listing.fold_split(0)  # what `pipeline train --fold 0` uses
    assert [r.case_id for r in validation] == list(fold.validation)
    assert [r.case_id for r in training] == list(fold.training)
    assert set(fold.test).isdisjoint(r.case_id for r in training + validation)
    original = {r.case_id: r for r in load_datalist(tiny_datalist).cases("all")}
    for record in listing.cases("all"):
        assert record.images == original[record.case_id].images and record.label == original[record.case_id].label
        assert record.label.is_file()


def test_baseline_reads_brats_labels_into_internal_classes_in_a_padded_brain_box(tiny_datalist: Path) -> None:
    record = load_datalist(tiny_datalist).cases("all")[0]
    image, label, box = baseline.load_case(record)
    seg = np.asarray(nib.load(record.label).dataobj)
    assert set(np.unique(seg)) <= {0, 1, 2, 4} and 4 in np.unique(seg)
    assert image.shape[1] == 4 and image.shape[2] % 16 == 0 and image.shape[3] % 16 == 0
    assert label.shape == (image.shape[0], *image.shape[2:]) and set(np.unique(label)) <= {0, 1, 2, 3}
    inside = seg[box]
    for brats, internal in ((1, 1), (2, 2), (4, 3)):
        assert (label == internal).sum() == (inside == brats).sum()
    assert (label > 0).sum() == (seg > 0).sum()  # the brain box keeps the whole tumour
    np.testing.assert_array_equal(label[:, : inside.shape[0], : inside.shape[1]], get_convention("brats2017").to_internal(inside).transpose(2, 0, 1))
    brain = image.any(axis=1)
    assert abs(float(image[:, 3][brain].mean())) < 0.2  # z-scored on the brain
    assert baseline.slice_stack(image, 0).shape == (20, *image.shape[2:])


@pytest.mark.slow
def test_baseline_trains_to_a_deadline_and_writes_scorable_segmentations(fold_datalist: tuple[Path, object], tmp_path: Path) -> None:
    path, fold = fold_datalist
    listing = load_datalist(path)
    cases = [baseline.load_case(record) for record in listing.cases("training")[:2]]
    network, steps = baseline.train([c[0] for c in cases], [c[1] for c in cases], deadline=time.time() + 600, max_steps=2)
    assert steps == 2
    _, cpu_steps = baseline.train([c[0] for c in cases], [c[1] for c in cases], deadline=time.process_time() + 600, max_steps=1, clock=time.process_time)
    assert cpu_steps == 1  # a CPU-time budget: the clock is the process's CPU seconds
    labels = baseline.predict_volume(network, cases[0][0])
    assert labels.shape == cases[0][1].shape and set(np.unique(labels)) <= {0, 1, 2, 3}

    out = tmp_path / "baseline"  # a deadline already past: no training step, every test case still predicted
    assert baseline.main(["--datalist", str(path), "--out", str(out), "--deadline", str(time.time())]) == 0
    assert json.loads((out / "baseline.json").read_text())["steps"] == 0
    assert baseline.main(["--datalist", str(path), "--out", str(tmp_path / "cpu"), "--cpu-seconds", "0"]) == 0
    assert json.loads((tmp_path / "cpu" / "baseline.json").read_text())["steps"] == 0
    for record in listing.cases("test"):
        seg_path = out / f"{record.case_id}_seg.nii.gz"
        seg, source = nib.load(seg_path), nib.load(record.images[0])
        assert seg.shape == source.shape and np.allclose(seg.affine, source.affine)
        assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 4}
        row = case_row(fold.index, record.case_id, "baseline", score_prediction(seg_path, record), seg_path)
        assert set(ROW_METRICS) <= set(row) and 0.0 <= row["dice_WT"] <= 1.0 and row["wt_components"] >= 0


def test_ground_truth_scored_as_a_prediction_is_perfect(tiny_datalist: Path) -> None:
    record = load_datalist(tiny_datalist).cases("all")[0]
    row = case_row(0, record.case_id, "pipeline", score_prediction(record.label, record), record.label, record)
    assert all(row[f"dice_{s}"] == pytest.approx(1.0) for s in ("WT", "TC", "ET", "NEC", "ED"))
    assert row["hd95_WT"] == 0.0 and row["precision_WT"] == pytest.approx(1.0) and row["lesion_dice_WT"] == pytest.approx(1.0)
    assert row["wt_components"] >= 1
    confusion = np.asarray(row["confusion"])  # every voxel on the diagonal, one row per internal label
    truth = get_convention(record.label_convention).to_internal(np.asarray(nib.load(record.label).dataobj))
    np.testing.assert_array_equal(confusion, np.diag(np.bincount(truth.ravel(), minlength=4)))
    assert confusion[1, 1] > 0 and row["nec_as_NEC"] == 1.0 and row["nec_as_ED"] == 0.0
    assert "confusion" not in case_row(0, record.case_id, "pipeline", score_prediction(record.label, record), record.label)


def test_means_per_arm_and_the_difference_pipeline_minus_baseline() -> None:
    def row(arm: str, fold: int, value: float) -> dict:
        return {"fold": fold, "case_id": f"c{fold}", "arm": arm, **{name: value for name in ROW_METRICS}}

    rows = [row("pipeline", 0, 0.8), row("pipeline", 1, 0.6), row("baseline", 0, 0.5), row("baseline", 1, 0.5)]
    means = arm_means(rows)
    assert means["pipeline"]["dice_WT"] == pytest.approx(0.7) and means["baseline"]["dice_WT"] == pytest.approx(0.5)
    assert means["pipeline - baseline"]["dice_ET"] == pytest.approx(0.2)
    assert "pipeline - baseline" not in arm_means(rows[:2])
    table = markdown_tables(rows, means)
    assert "| 0 | c0 | pipeline | 0.800 |" in table and "| pipeline - baseline |" in table
    assert "| structure | pipeline Dice | baseline Dice | pipeline - baseline Dice | pipeline HD95 mm |" in table
    assert "| NEC | 0.700 | 0.500 | 0.200 | 0.7 | 0.5 | 0.2 | - | - | - |" in table  # no lesion-wise NEC score
    assert "| ED | 0.700 |" in table and "| WT | 0.700 | 0.500 | 0.200 | 0.7 | 0.5 | 0.2 | 0.700 |" in table


def test_uncertainty_rank_correlation_with_dice() -> None:
    def row(case: int, score: float, dice: float, arm: str = "pipeline") -> dict:
        return {"fold": 0, "case_id": f"c{case}", "arm": arm, UNCERTAINTY_SCORE: score, "dice_WT": dice, "dice_TC": 1 - dice, "dice_ET": dice}

    rows = [row(0, 0.1, 0.9), row(1, 0.2, 0.8), row(2, 0.3, 0.6), row(3, 0.4, 0.5), row(4, 0.9, 0.95, arm="baseline")]
    correlation = uncertainty_rank_correlation(rows)  # the baseline row has no score and does not count
    assert correlation["WT"] == pytest.approx(-1.0) and correlation["TC"] == pytest.approx(1.0)
    assert all(np.isnan(value) for value in uncertainty_rank_correlation(rows[:2]).values())


def test_absent_real_data_skip_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--shared-data", str(tmp_path / "nowhere"), "--work", str(tmp_path / "work")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"skipped: real data not found at {tmp_path / 'nowhere'}") and out.count("\n") == 1
    assert not (tmp_path / "work").exists()


def test_only_labelled_cases_join_the_cohort(tmp_path: Path) -> None:
    for folder, case, files in (
        ("real_brats", "A_1", ["A_1_t1.nii.gz", "A_1_seg.nii.gz"]),
        ("real_brats", "B_1", ["B_1_t1.nii.gz"]),  # unlabelled: left out
        ("real_brats_train", "C_1", ["C_1_seg.nii.gz"]),
        ("real_brats_more", "B_2", ["B_2_flair.nii.gz", "B_2_seg.nii.gz"]),
        ("elsewhere", "D_1", ["D_1_seg.nii.gz"]),  # not a source folder
    ):
        (tmp_path / folder / case).mkdir(parents=True)
        for name in files:
            (tmp_path / folder / case / name).touch()
    cases = labelled_cases(tmp_path)
    assert list(cases) == ["A_1", "B_2", "C_1"]
    assert patients_by_source(cases) == {"real_brats": ["A_1"], "real_brats_train": ["C_1"], "real_brats_more": ["B_2"]}
    assert list(labelled_cases(tmp_path, ("real_brats", "real_brats_train"))) == ["A_1", "C_1"]  # --sources: the 7-patient cohort's folders
    (tmp_path / "real_brats_more" / "A_1").mkdir()
    (tmp_path / "real_brats_more" / "A_1" / "A_1_seg.nii.gz").touch()
    with pytest.raises(ConfigError, match="also in"):
        labelled_cases(tmp_path)


def test_reused_baseline_must_hold_out_the_same_patients(tmp_path: Path) -> None:
    folds = make_folds([f"c{i}" for i in range(4)], folds=2)
    rows = [{"fold": 0, "case_id": folds[0].test[0], "arm": "baseline", "dice_WT": 0.5}]
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"folds": [f.to_dict() for f in folds], "rows": rows, "timing": {"baseline": {"0": {"wall_s": 1.0}}}}))
    assert _reused_arm(earlier, folds, "baseline")[:2] == (rows, {0: {"wall_s": 1.0}})
    with pytest.raises(ConfigError, match="--baseline-from: its folds hold out other patients"):
        _reused_arm(earlier, make_folds([f"c{i}" for i in range(4)], folds=2, seed=1), "baseline")
    with pytest.raises(ConfigError, match="--pipeline-from: the result has no pipeline rows"):
        _reused_arm(earlier, folds, "pipeline")


def test_reused_baseline_keeps_the_folds_of_a_part(tmp_path: Path) -> None:
    folds = make_folds([f"c{i}" for i in range(6)], folds=3)
    rows = [{"fold": f.index, "case_id": f.test[0], "arm": arm, "dice_WT": 0.5} for f in folds for arm in ("baseline", "pipeline")]
    earlier = tmp_path / "merged.json"
    timing = {"baseline": {str(f.index): {"wall_s": float(f.index)} for f in folds}}
    earlier.write_text(json.dumps({"folds": [f.to_dict() for f in folds], "rows": rows, "timing": timing}))
    kept, kept_timing, _ = _reused_arm(earlier, [folds[1]], "baseline")
    assert kept == [{"fold": 1, "case_id": folds[1].test[0], "arm": "baseline", "dice_WT": 0.5}]
    assert kept_timing == {1: {"wall_s": 1.0}}


def test_postprocessing_chosen_on_out_of_fold_predictions(tiny_datalist: Path, tmp_path: Path) -> None:
    import shutil

    from benchmarks import postprocess_cv
    from pipeline.evaluation.evaluate import PREDICTIONS_DIR
    from pipeline.inference.writers import segmentation_filename

    cases = [record.case_id for record in load_datalist(tiny_datalist).cases("all")]
    fold = make_folds(cases, folds=4, val_cases=1, seed=0)[0]
    fold_dir = tmp_path / "runs" / "20261129T101500-tiny" / "fold0"
    listing = load_datalist(write_fold_datalist(tiny_datalist, fold, fold_dir / "datalist.json"))
    predictions = fold_dir / "pipeline_eval" / PREDICTIONS_DIR
    predictions.mkdir(parents=True)
    for record in listing.cases("test"):  # perfect predictions: nothing to gain
        shutil.copy(record.label, predictions / segmentation_filename(record.case_id))
    result = tmp_path / "real_cv-tiny.json"
    result.write_text(json.dumps({"data": {"work": str(tmp_path)}, "label": "tiny", "started": "2026-11-29T10:15:00+00:00", "folds": [{"fold": 0}]}))
    assert postprocess_cv.main([str(result)]) == 0
    chosen = json.loads((tmp_path / "real_cv-tiny-postprocessing.json").read_text())
    assert chosen["cases"] == len(fold.test) and chosen["before"] == chosen["after"] == {"TC": 1.0, "WT": 1.0, "ET": 1.0}
    assert chosen["lesion_wise"] is None
    assert [row["setting"] for row in chosen["classes"]] == ["none", "chosen"]
    assert all(row["dice_NEC"] == row["dice_ED"] == 1.0 for row in chosen["classes"])  # the truth copied
    assert all(row["nec_as_NEC"] in (1.0,) or np.isnan(row["nec_as_NEC"]) for row in chosen["classes"])
    assert postprocess_cv.main([str(result), "--lesion-wise"]) == 0  # perfect predictions score 1 lesion-wise at every size
    rows = json.loads((tmp_path / "real_cv-tiny-postprocessing.json").read_text())["lesion_wise"]
    assert [row["min_TC_ET_voxels"] for row in rows] == list(postprocess_cv.LESION_SIZES)
    assert rows[0]["lesion_dice_WT"] == rows[0]["dice_WT"] == 1.0 and rows[0]["components_WT"] >= 1
    assert postprocess_cv.main([str(tmp_path / "missing.json")]) == 1


@pytest.mark.slow
def test_inference_variants_rescore_the_trained_folds(tiny_datalist: Path, tmp_path: Path) -> None:
    """benchmarks.inference_cv: each checkpoint/TTA variant scores every held-out patient of every fold, without training."""
    import torch

    from benchmarks import inference_cv
    from prediction_cases import write_run_dir

    cases = [record.case_id for record in load_datalist(tiny_datalist).cases("all")]
    fold = make_folds(cases, folds=4, val_cases=1, seed=0)[0]
    fold_dir = tmp_path / "runs" / "20261129T101500-tiny" / "fold0"
    write_fold_datalist(tiny_datalist, fold, fold_dir / "datalist.json")
    run = write_run_dir(fold_dir / "pipeline")
    weights = torch.load(run / "models" / "model.pt", weights_only=True)
    torch.save({"network": {k: torch.zeros_like(v) for k, v in weights.items()}, "epoch": 1}, run / "models" / "latest.pt")
    result = tmp_path / "real_cv-tiny.json"
    result.write_text(json.dumps({"data": {"work": str(tmp_path)}, "label": "tiny", "started": "2026-11-29T10:15:00+00:00", "folds": [{"fold": 0}]}))
    assert inference_cv.main([str(result), "--tta", "off"]) == 0
    recorded = json.loads((tmp_path / "real_cv-tiny-inference.json").read_text())
    assert [row["arm"] for row in recorded["means"]] == ["best", "last"]
    assert all(row["patients"] == len(fold.test) for row in recorded["means"])
    assert {(row["arm"], row["case_id"]) for row in recorded["rows"]} == {(arm, case) for arm in ("best", "last") for case in fold.test}
    # the zeroed final weights predict nothing: a different score from the best weights' proves they were loaded
    _, last = (pd.DataFrame(recorded["rows"]).query(f"arm == '{arm}'")["wt_components"].tolist() for arm in ("best", "last"))
    assert last == [0] * len(fold.test)
    assert recorded["postprocessing"] is None and set(recorded["confusion"]) == {"best", "last"}

    assert inference_cv.main([str(result), "--tta", "off", "--checkpoints", "best", "--postprocessing", "bundle"]) == 0
    rescored = json.loads((tmp_path / "real_cv-tiny-inference-bundle-post.json").read_text())
    assert rescored["postprocessing"] == inference_cv.bundle_postprocessing() and "fill_core_holes" in rescored["postprocessing"]
    assert [row["arm"] for row in rescored["means"]] == ["best + bundle post"] and rescored["confusion"]["best + bundle post"]["patients"] == len(fold.test)
    assert inference_cv.main([str(tmp_path / "missing.json")]) == 1


@pytest.mark.slow
def test_inference_ensembles_join_the_same_folds_of_other_results(tiny_datalist: Path, tmp_path: Path) -> None:
    """--ensemble-with: each fold averages its run with the other result's run of that fold; other folds are refused."""
    import shutil

    from benchmarks import inference_cv
    from prediction_cases import write_run_dir

    cases = [record.case_id for record in load_datalist(tiny_datalist).cases("all")]
    fold = make_folds(cases, folds=4, val_cases=1, seed=0)[0]
    results, fold_dirs = [], []
    for label, started in (("one", "2026-11-29T10:15:00+00:00"), ("two", "2026-11-29T11:15:00+00:00")):
        record = {"data": {"work": str(tmp_path)}, "label": label, "started": started, "folds": [{"fold": 0, "test": fold.test}]}
        fold_dir = fold_run_folder(record, 0)
        write_fold_datalist(tiny_datalist, fold, fold_dir / "datalist.json")
        if not fold_dirs:
            write_run_dir(fold_dir / "pipeline")
        else:  # the same weights: their ensemble must score as the single model does
            shutil.copytree(fold_dirs[0] / "pipeline", fold_dir / "pipeline")
        fold_dirs.append(fold_dir)
        results.append(tmp_path / f"real_cv-{label}.json")
        results[-1].write_text(json.dumps(record))
    assert inference_cv.main([str(results[0]), "--tta", "off", "--checkpoints", "best"]) == 0
    assert inference_cv.main([str(results[0]), "--tta", "off", "--checkpoints", "best", "--ensemble-with", str(results[1])]) == 0
    single = json.loads((tmp_path / "real_cv-one-inference.json").read_text())
    joined = json.loads((tmp_path / "real_cv-one-inference-ensemble2.json").read_text())
    assert joined["ensemble_with"] == ["real_cv-two.json"] and [row["arm"] for row in joined["means"]] == ["ensemble of 2: best"]
    assert [row["case_id"] for row in joined["rows"]] == [row["case_id"] for row in single["rows"]] and {row["case_id"] for row in joined["rows"]} == set(fold.test)
    assert [row["dice_WT"] for row in joined["rows"]] == pytest.approx([row["dice_WT"] for row in single["rows"]])
    other_fold = json.loads(results[1].read_text()) | {"folds": [{"fold": 0, "test": fold.training[:1]}]}
    results[1].write_text(json.dumps(other_fold))
    assert inference_cv.main([str(results[0]), "--tta", "off", "--checkpoints", "best", "--ensemble-with", str(results[1])]) == 1


def test_each_inference_choice_has_its_own_result_file() -> None:
    """A TTA-only re-scoring never replaces the record of the same folds without TTA."""
    from benchmarks.inference_cv import output_stem

    result = Path("results") / "real_cv-x-cv21.json"
    names = {(post, tta): output_stem(result, post, tta).name for post in ("run", "bundle") for tta in ("off", "on", "both")}
    assert names[("run", "both")] == "real_cv-x-cv21-inference" and names[("bundle", "off")] == "real_cv-x-cv21-inference-bundle-post"
    assert names[("bundle", "on")] == "real_cv-x-cv21-inference-bundle-post-tta" and names[("run", "on")] == "real_cv-x-cv21-inference-tta"
    assert output_stem(result, "bundle", "off", members=3).name == "real_cv-x-cv21-inference-bundle-post-ensemble3"
    assert output_stem(result, "bundle", "on").parent == result.parent


def test_another_tasks_arm_is_scored_on_its_own_structures(tiny_datalist: Path, tmp_path: Path) -> None:
    """--task-arm whole-tumour:flair: a WT-only prediction read with the BraTS convention gives the exact WT; other columns are NaN."""
    from benchmarks.real_cv import _task_arm, task_arm_row, task_paths
    from pipeline.tasks.task import DEFAULT_TASK

    task = _task_arm("whole-tumour:flair")
    assert task.channels == ("flair",) and _task_arm(None) is None
    assert task_paths(tmp_path, None) == task_paths(tmp_path, DEFAULT_TASK) == (tmp_path / "datalist.json", tmp_path / "cache")
    assert task_paths(tmp_path, task)[1].name.startswith("cache-whole-tumour")
    record = load_datalist(tiny_datalist).cases("all")[0]
    truth = nib.load(record.label)
    convention = task.convention(record.label_convention)
    written = convention.from_internal(convention.to_internal(np.asarray(truth.dataobj)))  # the truth as the WT task writes it
    seg = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(written.astype(np.uint8), truth.affine), seg)
    row = task_arm_row(0, task.name, task, seg, record)
    assert row["dice_WT"] == 1.0 and row["precision_WT"] == 1.0 and row["arm"] == task.name
    assert np.isnan(row["dice_TC"]) and np.isnan(row["hd95_ET"]) and np.isnan(row["lesion_dice_TC"])
    means = arm_means([row, {**row, "arm": "pipeline", "dice_TC": 0.5}])
    assert list(means) == ["pipeline", task.name] and means[task.name]["dice_WT"] == 1.0 and np.isnan(means[task.name]["dice_TC"])
    assert f"| {task.name} | 1 |" in markdown_tables([row], arm_means([row]))


def _untrained_arms(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Replace both arms' training by fixed predictions: the pipeline copies the ground truth, the baseline calls every tumour voxel ED.

    Returns the list the baseline's seeds are appended to, one per trained fold.

    The metrics are made up (``case_metrics`` takes seconds per case, and its scores are tested
    above); the label confusion is computed from the written predictions.
    """
    import shutil

    from benchmarks import real_cv

    def score(fold, datalist: Path, out: Path, arm: str, predict) -> list[dict]:
        out.mkdir(parents=True, exist_ok=True)
        rows = []
        for i, record in enumerate(load_datalist(datalist).cases("test")):
            seg = out / f"{record.case_id}_seg.nii.gz"
            predict(record, seg)
            metrics = {name: (0.9 if arm == "pipeline" else 0.5) - 0.1 * i for name in ROW_METRICS}
            rows.append(case_row(fold.index, record.case_id, arm, metrics, seg, record))
        return rows

    def all_edema(record, seg: Path) -> None:
        truth = nib.load(record.label)
        nib.save(nib.Nifti1Image(np.where(np.asarray(truth.dataobj) > 0, 2, 0).astype(np.uint8), truth.affine), seg)  # BraTS 2 = ED

    def pipeline_arm(fold, datalist, cache, folder, args, arm="pipeline", scored_on=None):
        rows = score(fold, datalist, folder / "pipeline_eval", arm, lambda record, seg: shutil.copy(record.label, seg))
        return [row | {UNCERTAINTY_SCORE: float(i)} for i, row in enumerate(rows)], {"train_wall_s": 2.0, "train_cpu_s": 3.0, "eval_wall_s": 1.0, "eval_cpu_s": 1.0}

    def baseline_arm(fold, datalist, folder, seconds, device, budget="cpu", seed=0):
        assert seconds == 3.0  # the pipeline's training CPU seconds
        baseline_seeds.append(seed)
        return score(fold, datalist, folder / "baseline", "baseline", all_edema), {"wall_s": 3.0, "cpu_s": 3.0, "train_wall_s": 3.0, "train_cpu_s": 3.0, "steps": 1}

    baseline_seeds: list[int] = []
    monkeypatch.setattr(real_cv, "run_pipeline_arm", pipeline_arm)
    monkeypatch.setattr(real_cv, "run_baseline_arm", baseline_arm)
    return baseline_seeds


def test_a_run_over_the_three_source_folders_reports_structures_and_label_confusion(
    tiny_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole runner on the tiny cohort spread over the three source folders (symlinks), training replaced by fixed predictions."""
    from benchmarks.real_cv import SOURCE_FOLDERS

    shared = tmp_path / "shared"
    cases = sorted(case.name for case in tiny_cohort.iterdir() if case.is_dir())
    spread = dict(zip(cases, ["real_brats"] * 2 + ["real_brats_train"] * 2 + ["real_brats_more"] * (len(cases) - 4)))
    for case, source in spread.items():
        (shared / source).mkdir(parents=True, exist_ok=True)
        (shared / source / case).symlink_to(tiny_cohort / case, target_is_directory=True)
    _untrained_arms(monkeypatch)
    argv = ["--shared-data", str(shared), "--work", str(tmp_path / "work"), "--results-dir", str(tmp_path / "results"), "--max-folds", "2", "--label", "smoke"]
    assert main(argv) == 0

    (result,) = (tmp_path / "results").glob("real_cv-*-smoke.json")
    report = json.loads(result.read_text())
    assert report["format_version"] == 2 and report["settings"]["folds"] == 5 and len(report["folds"]) == 2
    assert report["data"]["sources"] == {source: [c for c in cases if spread[c] == source] for source in SOURCE_FOLDERS}
    held_out = [case for fold in report["folds"] for case in fold["test"]]
    assert {(row["arm"], row["case_id"]) for row in report["rows"]} == {(arm, case) for arm in ("pipeline", "baseline") for case in held_out}
    pipeline, baseline = report["confusion"]["pipeline"], report["confusion"]["baseline"]
    assert pipeline["patients"] == baseline["patients"] == len(held_out) and pipeline["labels"] == ["background", "NEC", "ED", "ET"]
    counts = np.asarray(pipeline["counts"])
    assert counts[1, 1] > 0 and np.array_equal(counts, np.diag(np.diag(counts)))  # the truth copied: all on the diagonal
    nec, background = np.asarray(baseline["counts"])[1], np.asarray(baseline["counts"])[0]
    assert nec.tolist() == [0, 0, counts[1, 1], 0] and baseline["row_percent"][1][2] == 100.0  # every true NEC voxel called ED
    assert background[0] == counts[0, 0]
    assert all(row["nec_as_ED"] == 1.0 for row in report["rows"] if row["arm"] == "baseline" and not np.isnan(row["nec_as_ED"]))

    markdown = result.with_suffix(".md").read_text()
    for expected in (
        f"### Data: {len(cases)} labelled patients from `{shared}`",
        f"- `real_brats_more` ({len(cases) - 4}): " + ", ".join(cases[4:]),
        "### Folds (2 of 5, seed 0)",
        f"| 0 | {', '.join(report['folds'][0]['test'])} | {report['folds'][0]['validation'][0]} | ",
        "| NEC | ",
        "| ED | ",
        "### Means per structure",
        "### Label confusion",
        "**baseline** (",
        f"| NEC | 0 (0.0 %) | 0 (0.0 %) | {counts[1, 1]:,} (100.0 %) | 0 (0.0 %) | {counts[1, 1]:,} |",
        "### True NEC per patient: share predicted as NEC and as ED",
    ):
        assert expected in markdown, expected
    assert "### Label confusion" in capsys.readouterr().out


def _linked_as_more(tiny_cohort: Path, tmp_path: Path) -> Path:
    """The tiny cohort's cases linked into ``tmp_path/shared/real_brats_more``; that folder."""
    shared = tmp_path / "shared" / "real_brats_more"
    shared.mkdir(parents=True)
    for case in sorted(c for c in tiny_cohort.iterdir() if c.is_dir()):
        (shared / case.name).symlink_to(case, target_is_directory=True)
    return shared


def test_fold_runs_side_by_side_merge_into_the_run_of_both_folds(tiny_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--fold 0`` and ``--fold 1`` joined by ``--merge`` give the rows, means and confusion of one ``--max-folds 2`` run; bad joins are refused."""
    from benchmarks.real_cv import merge_results

    shared = _linked_as_more(tiny_cohort, tmp_path)
    _untrained_arms(monkeypatch)
    common = ["--shared-data", str(shared.parent), "--work", str(tmp_path / "work"), "--results-dir", str(tmp_path / "results")]
    assert main([*common, "--max-folds", "2", "--label", "both"]) == 0
    assert main([*common, "--fold", "1", "--label", "one"]) == 0
    assert main([*common, "--fold", "0", "--label", "zero"]) == 0
    results = tmp_path / "results"
    (both,), (zero,), (one,) = (list(results.glob(f"real_cv-*-{label}.json")) for label in ("both", "zero", "one"))
    assert [fold["fold"] for fold in json.loads(one.read_text())["folds"]] == [1]
    assert json.loads(zero.read_text())["settings"]["epochs"] == 12  # train.yaml's, not a benchmark default

    assert main(["--merge", str(one), str(zero), "--label", "joined", "--results-dir", str(results)]) == 0
    (joined,) = results.glob("real_cv-*-joined.json")
    whole, merged = json.loads(both.read_text()), json.loads(joined.read_text())
    assert merged["folds"] == whole["folds"] and merged["settings"]["only_folds"] == [0, 1]
    assert merged["rows"] == whole["rows"]
    assert merged["means"] == whole["means"] and merged["confusion"] == whole["confusion"]
    assert set(merged["timing"]["pipeline"]) == {"0", "1"} and [part["file"] for part in merged["parts"]] == [one.name, zero.name]
    for fold, part in ((0, zero), (1, one)):  # the post-hoc benchmarks find each fold's run in the part that trained it
        folder = fold_run_folder(merged, fold)
        assert folder == fold_run_folder(json.loads(part.read_text()), fold) and (folder / "datalist.json").is_file() and (folder / "pipeline_eval").is_dir()
    markdown = joined.with_suffix(".md").read_text()
    assert "Joined from runs side by side" in markdown and "--fold 1 --label one" in markdown and "### Folds (2 of 5, seed 0)" in markdown

    with pytest.raises(ConfigError, match="fold 0 is also in"):
        merge_results([zero, both], "twice", "merge")
    other = json.loads(zero.read_text())
    other["settings"]["epochs"] = 3
    (results / "other.json").write_text(json.dumps(other))
    with pytest.raises(ConfigError, match="settings, data or machine differ"):
        merge_results([one, results / "other.json"], "mixed", "merge")
    assert main(["--merge", str(one), str(tmp_path / "missing.json"), "--label", "x", "--results-dir", str(results)]) == 1
    assert not list(results.glob("real_cv-*-x.json"))


def test_a_reused_pipeline_arm_trains_only_the_baseline_with_its_seed(tiny_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--pipeline-from`` keeps an earlier run's pipeline rows and times, trains the baseline for those times with ``--baseline-seed``, and refuses other pipeline options."""
    from benchmarks import real_cv

    shared = _linked_as_more(tiny_cohort, tmp_path)
    seeds = _untrained_arms(monkeypatch)
    results = tmp_path / "results"
    common = ["--shared-data", str(shared.parent), "--work", str(tmp_path / "work"), "--results-dir", str(results), "--max-folds", "2", "--set", "seed=1"]
    assert main([*common, "--label", "first"]) == 0 and seeds == [0, 0]
    (first,) = results.glob("real_cv-*-first.json")

    seeds.clear()
    monkeypatch.setattr(real_cv, "run_pipeline_arm", lambda *args, **kwargs: pytest.fail("the pipeline trained again"))
    assert main([*common, "--pipeline-from", str(first), "--baseline-seed", "1", "--label", "again"]) == 0
    assert seeds == [1, 1]
    (again,) = results.glob("real_cv-*-again.json")
    earlier, report = json.loads(first.read_text()), json.loads(again.read_text())
    assert [row for row in report["rows"] if row["arm"] == "pipeline"] == [row for row in earlier["rows"] if row["arm"] == "pipeline"]
    assert report["timing"]["pipeline"] == earlier["timing"]["pipeline"]
    assert report["settings"]["baseline_seed"] == 1 and report["settings"]["pipeline"] == f"reused from {first}"

    other = [arg for arg in common if arg not in ("--set", "seed=1")]
    assert main([*other, "--pipeline-from", str(first), "--label", "mismatch"]) == 1
    assert not list(results.glob("real_cv-*-mismatch.json"))


def test_the_recorded_baseline_seed_is_the_seed_of_the_baseline_rows(tiny_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reused baseline records the reusing run's seed as the reused run's; a seed for a baseline not trained here is refused."""
    shared = _linked_as_more(tiny_cohort, tmp_path)
    seeds = _untrained_arms(monkeypatch)
    results = tmp_path / "results"
    common = ["--shared-data", str(shared.parent), "--work", str(tmp_path / "work"), "--results-dir", str(results), "--fold", "0"]
    assert main([*common, "--baseline-seed", "3", "--label", "seeded"]) == 0 and seeds == [3]
    (seeded,) = results.glob("real_cv-*-seeded.json")
    assert main([*common, "--baseline-from", str(seeded), "--label", "reuse"]) == 0 and seeds == [3]
    assert main([*common, "--no-baseline", "--label", "alone"]) == 0 and seeds == [3]
    recorded = {label: json.loads(next(results.glob(f"real_cv-*-{label}.json")).read_text())["settings"]["baseline_seed"] for label in ("seeded", "reuse", "alone")}
    assert recorded == {"seeded": 3, "reuse": 3, "alone": None}
    for refused in (["--baseline-from", str(seeded)], ["--no-baseline"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*common, *refused, "--baseline-seed", "1", "--label", "refused"])
        assert exit_info.value.code == 2
    assert not list(results.glob("real_cv-*-refused.json"))


def test_the_class_table_shows_necrosis_called_edema_and_what_filling_the_core_does() -> None:
    from benchmarks.postprocess_cv import class_table
    from pipeline.inference.postprocess import PostProcessing

    truth = np.zeros((16, 16, 16), np.uint8)
    truth[1:15, 1:15, 1:15] = 2  # ED
    truth[3:13, 3:13, 3:13] = 3  # ET
    truth[5:11, 5:11, 5:11] = 1  # NEC inside the enhancing shell
    predicted = np.where(truth == 1, 2, truth).astype(np.uint8)  # the necrosis called edema
    table = class_table([(predicted, truth, (1.0, 1.0, 1.0))], {"none": PostProcessing(), "fill": PostProcessing(fill_core_holes="3d")}).set_index("setting")
    assert table.loc["none", "dice_NEC"] == 0.0 and table.loc["none", "nec_as_ED"] == 1.0 and table.loc["none", "dice_ED"] < 1.0
    assert table.loc["fill", "dice_NEC"] == table.loc["fill", "dice_ED"] == table.loc["fill", "nec_as_NEC"] == 1.0
