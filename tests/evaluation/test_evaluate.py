"""The evaluate command: per-patient scores of exported predictions, reports, bundle workflow, real data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from case_writers import write_case, write_datalist
from prediction_cases import HyperintensityNetwork, OracleNetwork, write_bundle_dir, write_run_dir

from pipeline.inference.model import SegmentationModel
from pipeline.cli.main import main
from pipeline.core.errors import ConfigError
from pipeline.evaluation.evaluate import evaluate, read_internal_labels
from pipeline.inference.inferers import VolumeInferer
from pipeline.tasks.labels import SCORED_STRUCTURES
from pipeline.evaluation.metrics import case_metrics, metric_columns
from pipeline.inference.postprocess import PostProcessing

REPO = Path(__file__).resolve().parents[2]
TEST_CASES = {"BraTS2021_00001": "lps", "BraTS2021_00002": "ras", "BraTS2021_00003": "oblique", "BraTS2021_00004": "permuted"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data root, data list): four test cases stored in four layouts, one validation and one training case."""
    root = tmp_path_factory.mktemp("evaluate") / "data"
    for index, (case_id, layout) in enumerate(TEST_CASES.items()):
        write_case(root, case_id, layout=layout, seed=index)
    write_case(root, "BraTS2021_00005", layout="lps", seed=5)
    write_case(root, "BraTS2021_00006", layout="ras", seed=6)
    splits = {**{case_id: "test" for case_id in TEST_CASES}, "BraTS2021_00005": "validation", "BraTS2021_00006": "training"}
    datalist = write_datalist(root.parent / "tiny.json", root, splits)
    payload = json.loads(datalist.read_text())
    payload["training"][0]["fold"] = 1
    payload["num_folds"] = 2
    datalist.write_text(json.dumps(payload))
    return root, datalist


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run_dir(tmp_path_factory.mktemp("evaluate_run") / "run")


def test_perfect_predictions_score_perfectly_in_every_storage(data, tmp_path, capsys):
    _, datalist = data
    oracle = SegmentationModel(OracleNetwork(), VolumeInferer("2.5d", context=1), postprocessing=PostProcessing())
    result = evaluate(oracle, datalist, tmp_path, split="test", progress=False)
    frame = pd.read_csv(tmp_path / "metrics.csv")
    assert sorted(frame["case_id"]) == sorted(TEST_CASES)
    assert list(frame.columns) == ["case_id", *metric_columns()]
    for structure in SCORED_STRUCTURES:
        assert (frame[f"dice_{structure}"] == 1.0).all(), structure
        assert (frame[f"hd95_{structure}"] == 0.0).all(), structure
        assert (frame[f"sensitivity_{structure}"] == 1.0).all() and (frame[f"precision_{structure}"] == 1.0).all()
    assert (frame["true_volume_ml_WT"] > 0).all() and (frame["true_volume_ml_WT"] == frame["pred_volume_ml_WT"]).all()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["cases"] == 4 and summary["split"] == "test"
    assert summary["metrics"]["dice_ET"]["mean"] == 1.0 and summary["metrics"]["hd95_WT"]["max"] == 0.0
    assert "directed 95th percentiles" in summary["hd95_definition"]
    for case_id in TEST_CASES:
        assert (tmp_path / "overlays" / f"{case_id}.png").is_file()
        assert (tmp_path / "predictions" / f"{case_id}_seg.nii.gz").is_file()
    assert (tmp_path / "predictions" / "brats_brats2017.ctbl").is_file()
    assert (tmp_path / "plots" / "dice_distribution.png").is_file() and (tmp_path / "plots" / "dice_per_case.png").is_file()
    printed = capsys.readouterr().out
    assert "WT" in printed and "1.000" in printed and printed.count("\n") >= 7
    assert result.table in printed


def test_cli_evaluate_scores_the_written_files(data, run_dir, tmp_path):
    root, datalist = data
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        main, ["evaluate", "--model", str(run_dir), "--datalist", str(datalist), "--out", str(out), "--split", "validation", "--lesion-wise", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "Dice mean" in result.output and "1 case(s)" in result.output
    frame = pd.read_csv(out / "metrics.csv")
    assert frame["case_id"].tolist() == ["BraTS2021_00005"] and "lesion_dice_WT" in frame
    # the scores are those of the exported file against the ground-truth file, on the original grid
    predicted, image = read_internal_labels(out / "predictions" / "BraTS2021_00005_seg.nii.gz", "brats2017")
    truth, _ = read_internal_labels(root / "BraTS2021_00005" / "BraTS2021_00005_seg.nii.gz", "brats2017")
    expected = case_metrics(predicted, truth, image.header.get_zooms()[:3], lesion_wise=True)
    for column, value in expected.items():
        assert frame.loc[0, column] == pytest.approx(value, rel=1e-5, abs=1e-6), column
    assert 0.0 < frame.loc[0, "dice_WT"] < 1.0  # an untrained network: neither perfect nor empty


def test_evaluate_an_ensemble_with_uncertainty_scores_in_metrics_csv(data, run_dir, tmp_path):
    _, datalist = data
    other = write_run_dir(tmp_path / "other", seed=1)
    out = tmp_path / "eval"
    evaluate([run_dir, other], datalist, out, split="validation", overlays=False, progress=False, echo=False, uncertainty=True)
    frame = pd.read_csv(out / "metrics.csv")
    assert 0 < frame.loc[0, "uncertainty_entropy_WT"] <= 1 and 0 < frame.loc[0, "uncertainty_disagreement_WT"] <= 1
    assert (out / "predictions" / "BraTS2021_00005_uncertainty.nii.gz").is_file()
    assert (out / "predictions" / "BraTS2021_00005_disagreement.nii.gz").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["uncertainty"] is True and len(summary["model"]["ensemble"]) == 2
    assert "uncertainty_entropy_WT" in summary["metrics"]


def test_split_errors(data, run_dir, tmp_path):
    _, datalist = data
    with pytest.raises(ConfigError, match="no ground truth"):
        evaluate(run_dir, datalist, tmp_path, split="unlabelled", progress=False)
    payload = json.loads(datalist.read_text())
    payload["test"] = []
    empty = tmp_path / "no_test.json"
    empty.write_text(json.dumps(payload))
    with pytest.raises(ConfigError, match="has no cases"):
        evaluate(run_dir, empty, tmp_path, split="test", progress=False)
    result = CliRunner().invoke(main, ["evaluate", "--model", str(run_dir), "--datalist", str(empty), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and result.output.startswith("error: ")


@pytest.mark.slow
def test_trained_run_folder_evaluates_with_training_curves(data, tmp_path):
    from pipeline.preprocessing.prepare import preprocess_datalist
    from pipeline.training.workflow import train

    _, datalist = data
    cache = tmp_path / "cache"
    preprocess_datalist(datalist, cache, workers=1, progress=False)
    tiny = {"channels": [4, 8], "strides": [2], "num_res_units": 0, "samples_per_epoch": 8, "batch_size": 4, "num_workers": 0, "progress": False, "context": 1}
    run = train(datalist, cache, tmp_path / "run", mode="2.5d", epochs=1, overrides=tiny)
    result = evaluate(run, datalist, tmp_path / "eval", split="test", overlays=False, progress=False, echo=False)
    assert len(result.metrics) == 4
    assert result.summary["plots"].get("training_curves") == "plots/training_curves.png"
    assert (tmp_path / "eval" / "plots" / "training_curves.png").is_file()


@pytest.mark.slow
def test_monai_bundle_run_evaluating(data, run_dir, tmp_path):
    _, datalist = data
    bundle = write_bundle_dir(tmp_path / "bundle", weights=run_dir / "models" / "model.pt")
    # evaluate.yaml is an override merged after the bundle's inference.yaml (which holds the network)
    configs = f"['{bundle / 'configs' / 'inference.yaml'}','{REPO / 'bundles' / 'brats_segmentation' / 'configs' / 'evaluate.yaml'}']"
    command = [
        sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file", configs,
        "--bundle_root", str(bundle), "--datalist", str(datalist), "--output_dir", str(tmp_path / "eval"),
        "--split", "validation", "--progress", "False",
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert completed.returncode == 0, completed.stderr[-2000:]
    bundle_frame = pd.read_csv(tmp_path / "eval" / "metrics.csv")
    cli_out = tmp_path / "cli"
    result = CliRunner().invoke(main, ["evaluate", "--model", str(bundle), "--datalist", str(datalist), "--out", str(cli_out), "--split", "validation", "--no-progress"])
    assert result.exit_code == 0, result.output
    # Same code, another process: near-tied voxels of the untrained network may flip with summation order.
    pd.testing.assert_frame_equal(bundle_frame, pd.read_csv(cli_out / "metrics.csv"), rtol=0.02)


@pytest.mark.real_data
@pytest.mark.slow
def test_evaluate_on_a_real_case(real_brats_dir, tmp_path):
    case = "BraTS2021_00006"
    datalist = tmp_path / "real.json"
    entry = {"case_id": case, "image": [f"{case}/{case}_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")], "label": f"{case}/{case}_seg.nii.gz", "fold": -1}
    datalist.write_text(json.dumps({"label_convention": "brats2017", "data_root": str(real_brats_dir), "training": [], "validation": [], "test": [entry]}))
    model = SegmentationModel(HyperintensityNetwork(), VolumeInferer("2d"), postprocessing={"keep_largest": ["WT", "TC", "ET"]})
    result = evaluate(model, datalist, tmp_path / "eval", progress=False, echo=False)
    row = result.metrics.iloc[0]
    assert row["case_id"] == case
    truth = nib.load(real_brats_dir / case / f"{case}_seg.nii.gz")
    voxels = np.asarray(truth.dataobj)
    assert row["true_volume_ml_WT"] == pytest.approx(np.count_nonzero(voxels) / 1000)
    assert row["true_volume_ml_ET"] == pytest.approx(np.count_nonzero(voxels == 4) / 1000)
    assert all(0.0 <= row[f"dice_{s}"] <= 1.0 for s in SCORED_STRUCTURES)
    # the FLAIR-hyperintensity rule finds this frontal tumour: the export lands on the scan, not mirrored
    assert row["dice_WT"] > 0.7 and row["hd95_WT"] < 15
    predicted, _ = read_internal_labels(tmp_path / "eval" / "predictions" / f"{case}_seg.nii.gz", "brats2017")
    whole_tumour = voxels > 0
    for axis in (0, 1):  # the check above would catch a left-right or front-back mix-up
        mirrored = np.flip(predicted, axis) > 0
        assert 2 * np.count_nonzero(mirrored & whole_tumour) / (mirrored.sum() + whole_tumour.sum()) < 0.6
    assert (tmp_path / "eval" / "overlays" / f"{case}.png").is_file()


def test_evaluate_the_synthetic_cohort(tiny_datalist, run_dir, tmp_path):
    from pipeline.datasets.datalist import load_datalist
    from prediction_cases import assert_same_geometry

    records = load_datalist(tiny_datalist).cases("test")
    result = evaluate(run_dir, tiny_datalist, tmp_path, split="test", overlays=False, progress=False, echo=False)
    assert sorted(result.metrics["case_id"]) == sorted(r.case_id for r in records)
    for record in records:
        written = tmp_path / "predictions" / f"{record.case_id}_seg.nii.gz"
        assert_same_geometry(written, record.images[0])
        assert_same_geometry(written, record.label)


@pytest.mark.parametrize("layout", ["lps", "permuted", "oblique"])
def test_ground_truth_moves_onto_the_cache_grid_like_the_preprocessing(tmp_path, layout):
    from pipeline.datasets import discover_case
    from pipeline.core.geometry import restore_to_original, to_cache_grid
    from pipeline.preprocessing.prepare import prepare_case

    record = discover_case(write_case(tmp_path, layout=layout))
    prepared = prepare_case(record)
    truth, _ = read_internal_labels(record.label, "brats2017")
    moved = to_cache_grid(truth, prepared.meta)
    np.testing.assert_array_equal(moved, prepared.label)
    np.testing.assert_array_equal(restore_to_original(moved, prepared.meta), truth)


def test_bad_ground_truth_stops_evaluation_but_not_prediction(run_dir, tmp_path):
    from pipeline.inference.predict import predict

    root = tmp_path / "data"
    case = write_case(root, "BraTS2021_00001", layout="lps")
    seg_path = case / "BraTS2021_00001_seg.nii.gz"
    seg = nib.load(seg_path)
    voxels = np.asarray(seg.dataobj).copy()
    voxels[voxels == 4] = 3  # a 2023-style ET in a 2017-2021 case
    nib.save(nib.Nifti1Image(voxels, seg.affine, seg.header), seg_path)
    datalist = write_datalist(tmp_path / "list.json", root, {"BraTS2021_00001": "test"})
    summary = predict(run_dir, datalist, tmp_path / "pred", progress=False)  # the ground truth is not read
    assert summary.segmentations["BraTS2021_00001"].is_file()
    result = CliRunner().invoke(main, ["evaluate", "--model", str(run_dir), "--datalist", str(datalist), "--out", str(tmp_path / "eval"), "--no-progress"])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {seg_path}: labels [3] are not in the brats2017 convention")
    assert not (tmp_path / "eval" / "predictions").exists()  # stopped before any prediction


# ---- tasks ------------------------------------------------------------------------------------
def test_a_binary_task_is_scored_on_its_one_structure(data, tmp_path):
    """Whole tumour: an oracle scores Dice 1 on WT, the only column; files hold 0/1, with the task's colour table."""
    import torch

    from pipeline.tasks.task import resolve_task

    class WholeTumourOracle(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            start = (x.shape[1] - 4) // 2
            tumour = x[:, start : start + 3].amax(dim=1)  # the NEC, ET and ED markers (see OracleNetwork)
            return torch.stack([torch.full_like(tumour, 0.5), tumour], dim=1)

    _, datalist = data
    task = resolve_task("whole-tumour")
    model = SegmentationModel(WholeTumourOracle(), VolumeInferer("2.5d", context=1, task=task), postprocessing=PostProcessing(task=task))
    result = evaluate(model, datalist, tmp_path, split="test", progress=False, echo=False, lesion_wise=True)
    frame = pd.read_csv(tmp_path / "metrics.csv")
    assert list(frame.columns) == ["case_id", *metric_columns(lesion_wise=True, task=task)]
    assert (frame["dice_WT"] == 1.0).all() and (frame["hd95_WT"] == 0.0).all() and (frame["lesion_dice_WT"] == 1.0).all()
    assert result.table.splitlines()[1].startswith("WT") and len(result.table.splitlines()) == 3
    for case_id in TEST_CASES:
        written = np.asarray(nib.load(tmp_path / "predictions" / f"{case_id}_seg.nii.gz").dataobj)
        assert set(np.unique(written).tolist()) == {0, 1}
        assert (tmp_path / "overlays" / f"{case_id}.png").is_file()
    assert (tmp_path / "predictions" / "whole-tumour_brats2017.ctbl").is_file()
    assert (tmp_path / "plots" / "dice_per_case.png").is_file()
