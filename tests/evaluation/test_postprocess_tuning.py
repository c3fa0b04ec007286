"""Post-processing chosen by cross-validation: the greedy search on constructed cases, and the tune-postprocessing command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from prediction_cases import write_bundle_dir, write_run_dir

from pipeline.inference.model import load_model
from pipeline.cli.main import main
from pipeline.core.errors import ConfigError
from pipeline.inference.config import RUN_INFERENCE_CONFIG, model_config, write_run_inference_config
from pipeline.tasks.labels import ED, ET, NEC
from pipeline.evaluation.metrics import case_metrics
from pipeline.inference.postprocess import PostProcessing
from pipeline.evaluation.postprocess_tuning import foreground_crop, region_dice, select_postprocessing, tune_postprocessing

SHAPE = (24, 24, 24)


def _tumour(box: tuple[slice, ...] = (slice(2, 10),) * 3, et: bool = True) -> np.ndarray:
    """An 8^3 tumour: edema around a necrotic core, with (or without) a 3^3 enhancing rim voxel block."""
    seg = np.zeros(SHAPE, np.uint8)
    seg[box] = ED
    inner = tuple(slice(s.start + 2, s.stop - 2) for s in box)
    seg[inner] = NEC
    if et:
        seg[tuple(slice(s.start + 2, s.start + 5) for s in box)] = ET
    return seg


def test_region_dice_is_the_dice_the_metrics_report():
    rng = np.random.default_rng(0)
    predicted, truth = rng.integers(0, 4, SHAPE).astype(np.uint8), _tumour()
    expected = case_metrics(predicted, truth, (1.0, 1.0, 1.0))
    np.testing.assert_allclose(region_dice(predicted, truth), [expected["dice_TC"], expected["dice_WT"], expected["dice_ET"]])
    no_et = _tumour(et=False)
    assert region_dice(no_et, no_et)[2] == 1.0  # both empty: 1 (BraTS)
    assert region_dice(_tumour(), no_et)[2] == 0.0


def test_foreground_crop_changes_neither_components_nor_dice():
    predicted, truth = _tumour(), _tumour((slice(4, 12),) * 3)
    predicted[20, 20, 20] = ED
    cropped = foreground_crop(predicted, truth)
    assert cropped[0].shape == (19, 19, 19)
    post = PostProcessing(keep_largest=["WT"], min_et_voxels=30)
    np.testing.assert_allclose(region_dice(post(cropped[0]), cropped[1]), region_dice(post(predicted), truth))
    empty = foreground_crop(np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8))
    assert empty[0].shape == (1, 1, 1) and not empty[0].any()


def test_a_far_away_false_positive_makes_keep_largest_win():
    truth = _tumour()
    predicted = truth.copy()
    predicted[18:21, 18:21, 18:21] = ED  # a 27-voxel false positive far from the tumour
    choice = select_postprocessing([(predicted, truth), (truth, truth)])
    assert choice.postprocessing.keep_largest == ("WT",)
    assert choice.after["WT"] > choice.before["WT"] and choice.after["WT"] == 1.0
    kept = choice.table[choice.table["kept"]]
    assert list(kept["step"]) == ["none", "keep_largest WT"]


def test_a_multifocal_ground_truth_makes_keep_largest_lose():
    truth = _tumour()
    truth[16:20, 16:20, 16:20] = ED  # a second, 64-voxel focus: real tumour
    predicted = truth.copy()
    choice = select_postprocessing([(predicted, truth)])
    assert "WT" not in choice.postprocessing.keep_largest
    assert choice.postprocessing.min_component_voxels["WT"] == 0  # 20 ties (the simpler 0 kept), 100 removes the focus
    table = choice.table.set_index(["step", "value"])
    assert table.loc[("keep_largest WT", True), "dice_WT"] < table.loc[("keep_largest WT", False), "dice_WT"]


def test_a_tiny_false_enhancing_tumour_makes_the_et_threshold_win():
    no_et_truth = _tumour(et=False)
    false_et = no_et_truth.copy()
    false_et[5:7, 5:7, 5:7] = ET  # 8 enhancing voxels where the truth has none
    with_et = _tumour((slice(4, 20),) * 3)  # a 16^3 tumour...
    with_et[8:16, 8:16, 8:16] = ET  # ...with 538 enhancing voxels, rightly predicted
    choice = select_postprocessing([(false_et, no_et_truth), (with_et, with_et)])
    assert choice.postprocessing.min_et_voxels == 50  # the smallest threshold that turns 8 voxels to NEC, below 512
    assert choice.before["ET"] == pytest.approx(0.5) and choice.after["ET"] == 1.0
    assert choice.after["TC"] == choice.before["TC"]  # ET became NEC: the core is unchanged
    table = choice.table.set_index(["step", "value"])
    assert table.loc[("min_et_voxels", 1000), "dice_ET"] == pytest.approx(0.5)  # removes the true ET instead


def test_necrosis_predicted_as_edema_inside_the_rim_makes_filling_the_core_win():
    truth = np.zeros(SHAPE, np.uint8)
    truth[2:20, 2:20, 2:20] = ED
    truth[5:17, 5:17, 5:17] = ET
    truth[8:14, 8:14, 8:14] = NEC  # necrosis inside a closed enhancing shell
    predicted = truth.copy()
    predicted[truth == NEC] = ED  # the network calls the necrosis edema
    choice = select_postprocessing([(predicted, truth), (_tumour(), _tumour())])
    assert choice.postprocessing.fill_core_holes == "3d"  # closed in 3D: the simpler of the two that tie
    assert choice.before["TC"] == pytest.approx((2 * 1512 / (1728 + 1512) + 1) / 2) and choice.after["TC"] == 1.0 and choice.after["ET"] == choice.before["ET"]
    assert "fill_core_holes 3d" in choice.describe()


def test_ties_keep_no_post_processing():
    truth = _tumour()
    choice = select_postprocessing([(truth, truth), (_tumour(et=False), _tumour(et=False))])
    assert choice.postprocessing.is_identity
    assert choice.after == choice.before
    assert choice.table["kept"].sum() == 1  # only the baseline row
    assert "none" in choice.describe()


def test_no_cases_is_an_error():
    with pytest.raises(ValueError, match="no cases"):
        select_postprocessing([])


# ---- the command ---------------------------------------------------------------------------------


@pytest.fixture
def fold_runs(tmp_path: Path, tiny_datalist: Path) -> list[Path]:
    """The two folds of a tiny cross-validation as run folders (untrained tiny UNets): fold 0 with an
    inference.json whose post-processing no search would choose, fold 1 with config.json only."""
    runs = [write_run_dir(tmp_path / f"fold{fold}", seed=fold, datalist=str(tiny_datalist), fold=fold) for fold in (0, 1)]
    write_run_inference_config(json.loads((runs[0] / "config.json").read_text()), runs[0])
    config = json.loads((runs[0] / RUN_INFERENCE_CONFIG).read_text())
    config["postprocessing"]["min_et_voxels"] = 12345
    (runs[0] / RUN_INFERENCE_CONFIG).write_text(json.dumps(config))
    return runs


def test_the_choice_is_written_into_every_run_and_used_by_load_model_predict_and_evaluate(fold_runs, tiny_datalist, tiny_cohort, tmp_path, capsys):
    from pipeline.evaluation.evaluate import evaluate
    from pipeline.inference.predict import MANIFEST, predict

    result = tune_postprocessing(fold_runs, progress=False)
    chosen = result.choice.postprocessing
    assert result.choice.cases == 6  # the 3 validation cases of each of the 2 folds, pooled
    listed = json.loads(tiny_datalist.read_text())
    assert sorted(sum(result.case_ids.values(), [])) == sorted(r["case_id"] for r in listed["training"] + listed["validation"])
    assert result.written == [run / RUN_INFERENCE_CONFIG for run in fold_runs]
    for run in fold_runs:
        config, path = model_config(run)
        assert path == run / RUN_INFERENCE_CONFIG
        assert PostProcessing.from_config(config["postprocessing"]) == chosen
        assert config["postprocessing_tuning"]["mean_dice_after"] == result.choice.after
        assert len(config["postprocessing_tuning"]["candidates"]) == len(result.choice.table)
        assert load_model(run).postprocessing == chosen
    assert json.loads((fold_runs[0] / RUN_INFERENCE_CONFIG).read_text())["postprocessing_tuning"]["previous"]["min_et_voxels"] == 12345
    assert chosen.min_et_voxels != 12345
    printed = capsys.readouterr().out
    assert "chosen post-processing" in printed and "keep_largest WT" in printed and "written:" in printed
    summary = evaluate(fold_runs[1], tiny_datalist, tmp_path / "eval", split="test", overlays=False, progress=False, echo=False).summary
    assert summary["model"]["postprocessing"] == chosen.to_config()
    predict(fold_runs[0], tiny_cohort / listed["test"][0]["case_id"], tmp_path / "predictions", progress=False)
    assert json.loads((tmp_path / "predictions" / MANIFEST).read_text())["model"]["postprocessing"] == chosen.to_config()


def test_dry_run_writes_nothing(fold_runs):
    before = (fold_runs[0] / RUN_INFERENCE_CONFIG).read_bytes()
    result = CliRunner().invoke(main, ["tune-postprocessing", "--model", str(fold_runs[0]), "--model", str(fold_runs[1]), "--dry-run", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "dry run: nothing written" in result.output and "mean Dice over 6 out-of-fold cases" in result.output
    assert (fold_runs[0] / RUN_INFERENCE_CONFIG).read_bytes() == before
    assert not (fold_runs[1] / RUN_INFERENCE_CONFIG).exists()


def test_a_run_without_validation_cases_is_one_error_line(tmp_path, tiny_datalist):
    payload = json.loads(tiny_datalist.read_text())
    payload["data_root"] = str((tiny_datalist.parent / payload["data_root"]).resolve())
    for record in payload["training"] + payload["validation"]:
        record["fold"] = 0
    datalist = tmp_path / "one_fold_used.json"
    datalist.write_text(json.dumps(payload))
    run = write_run_dir(tmp_path / "fold1", datalist=str(datalist), fold=1)
    result = CliRunner().invoke(main, ["tune-postprocessing", "--model", str(run), "--no-progress"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert result.output.startswith(f"error: {datalist}:") and "fold 1" in result.output and "no validation cases" in result.output
    assert not (run / RUN_INFERENCE_CONFIG).exists()


def test_a_run_trained_on_every_case_is_one_error_line(tmp_path, tiny_datalist):
    run = write_run_dir(tmp_path / "all", datalist=str(tiny_datalist), fold=None)  # train --fold none
    result = CliRunner().invoke(main, ["tune-postprocessing", "--model", str(run), "--no-progress"])
    assert result.exit_code == 1 and result.output.strip().count("\n") == 0
    assert result.output.startswith(f"error: {tiny_datalist}:") and "trained on every case (no validation fold); give --split" in result.output
    assert not (run / RUN_INFERENCE_CONFIG).exists()


def test_a_folder_that_is_not_a_run_is_refused_before_predicting(tmp_path, tiny_datalist):
    run = write_run_dir(tmp_path / "run", datalist=str(tiny_datalist), fold=0)
    bundle = write_bundle_dir(tmp_path / "bundle", weights=run / "models" / "model.pt")
    with pytest.raises(ConfigError, match="not a run folder"):
        tune_postprocessing([bundle], datalist=tiny_datalist, split="test", progress=False)
    assert (bundle / "configs" / "inference.yaml").read_text() == (write_bundle_dir(tmp_path / "again") / "configs" / "inference.yaml").read_text()
    with pytest.raises(ConfigError, match="also predicted by"):
        tune_postprocessing([run, run], progress=False)
    assert not (run / RUN_INFERENCE_CONFIG).exists()
