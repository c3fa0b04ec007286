"""The one inference definition: configs/inference.yaml, its overrides, and a run folder's inference.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from monai.bundle import ConfigParser
from prediction_cases import CONFIGS, write_bundle_dir

from pipeline.inference.model import load_model
from pipeline.cli.main import main
from pipeline.core.errors import ConfigError
from pipeline.inference.config import (
    INFERENCE_CONFIG,
    RUN_INFERENCE_CONFIG,
    TRAINED_KEYS,
    model_config,
    run_inference_config,
    write_run_inference_config,
)
from pipeline.training.workflow import GPU_CONFIG, TRAIN_CONFIG, training_config_files

REPO = Path(__file__).resolve().parents[2]


def _network_shapes(network: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in network.state_dict().items()}


def test_evaluate_yaml_is_a_short_override_of_inference_yaml():
    evaluate = yaml.safe_load((CONFIGS / "evaluate.yaml").read_text())
    assert not set(evaluate) & {*TRAINED_KEYS, "inferer", "model", "postprocessing", "checkpoint"}
    assert len((CONFIGS / "evaluate.yaml").read_text().splitlines()) < 30
    parser = ConfigParser(ConfigParser.load_config_files([str(CONFIGS / "inference.yaml"), str(CONFIGS / "evaluate.yaml")]))
    assert "$from pipeline.evaluation.evaluate import evaluate" in parser["imports"] and "$import pipeline" in parser["imports"]
    assert parser["split"] == "test" and parser["sw_batch_size"] == yaml.safe_load(INFERENCE_CONFIG.read_text())["sw_batch_size"]


def test_a_run_folder_loads_like_a_bundle_folder(run_dir, case_dir, tmp_path):
    """RUN_DIR/inference.json (as training writes it) and an older run's config.json give the same model."""
    old_style, path = model_config(run_dir)
    assert path.name == "config.json" and old_style["bundle_root"] == str(run_dir.absolute())
    train = json.loads((run_dir / "config.json").read_text())
    for key in TRAINED_KEYS:
        assert old_style[key] == train[key], key
    assert old_style["postprocessing"]["_target_"] == "pipeline.inference.postprocess.PostProcessing"

    written = write_run_inference_config(ConfigParser(train), run_dir)
    try:
        assert written == run_dir / RUN_INFERENCE_CONFIG
        assert model_config(run_dir) == (old_style, written)
        model = load_model(run_dir)
        assert model.inferer.sw_batch_size == train["sw_batch_size"]  # the run's value, not a default
        bundle = write_bundle_dir(tmp_path / "bundle", weights=run_dir / "models" / "model.pt")
        assert (model.segment(case_dir).get_fdata() == load_model(bundle).segment(case_dir).get_fdata()).all()
    finally:
        written.unlink()


def test_load_model_instantiates_the_config_components(run_dir, tmp_path):
    bundle = write_bundle_dir(tmp_path / "bundle", weights=run_dir / "models" / "model.pt", sw_batch_size=3, overlap=0.25)
    config = yaml.safe_load((bundle / "configs" / "inference.yaml").read_text())
    config["postprocessing"]["min_et_voxels"] = 77
    (bundle / "configs" / "inference.yaml").write_text(yaml.safe_dump(config))
    model = load_model(bundle)
    assert (model.inferer.sw_batch_size, model.inferer.overlap, model.postprocessing.min_et_voxels) == (3, 0.25, 77)
    assert load_model(bundle, postprocessing={"min_et_voxels": 5}).postprocessing.min_et_voxels == 5
    config["model"] = "@inferer"
    (bundle / "configs" / "inference.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="not a SegmentationModel"):
        load_model(bundle)


@pytest.mark.parametrize("mode", ["2.5d", "3d"])
def test_gpu_training_has_its_inference_counterpart(mode, tmp_path):
    """A GPU-trained network fits gpu_inference.yaml (bundle folder) and the run's own inference.json (run folder)."""
    training = ConfigParser()
    training.read_config([str(f) for f in training_config_files(mode, [GPU_CONFIG])])
    training["mode"] = mode
    trained = _network_shapes(training.get_parsed_content("network_def"))

    overrides = ["inference.yaml", "gpu_inference.yaml"] + (["gpu_inference_3d.yaml"] if mode == "3d" else [])
    bundle = ConfigParser(ConfigParser.load_config_files([str(CONFIGS / name) for name in overrides]))
    assert _network_shapes(bundle.get_parsed_content("network_def")) == trained
    assert bundle.get_parsed_content("roi_size") == training.get_parsed_content("roi_size")

    run = ConfigParser(run_inference_config(training, tmp_path))
    assert _network_shapes(run.get_parsed_content("network_def")) == trained
    assert run.get_parsed_content("checkpoint") == str(tmp_path.absolute() / "models" / "model.pt")
    assert _network_shapes(ConfigParser(yaml.safe_load(INFERENCE_CONFIG.read_text())).get_parsed_content("network_def")) != trained


def test_no_mode_expressions_hide_variants_in_the_configs():
    for path in CONFIGS.glob("*.yaml"):
        assert "@mode !=" not in path.read_text() and "@mode ==" not in path.read_text(), path.name
    assert training_config_files("2.5d") == [TRAIN_CONFIG]
    assert [p.name for p in training_config_files("3d", [GPU_CONFIG])] == ["train.yaml", "train_3d.yaml", "gpu_train.yaml", "gpu_train_3d.yaml"]


@pytest.mark.slow
def test_predict_bundle_run_inference_and_segment_write_identical_files(run_dir, case_dir, tmp_path):
    """`predict --model BUNDLE`, `monai.bundle run inference` and `pipeline.load_model(...).segment` give byte-identical NIfTI files."""
    bundle = write_bundle_dir(tmp_path / "bundle", weights=run_dir / "models" / "model.pt")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    name = f"{case_dir.name}_seg.nii.gz"

    def run(*command: str) -> None:
        completed = subprocess.run([sys.executable, *command], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
        assert completed.returncode == 0, completed.stderr[-3000:]

    run("-m", "pipeline", "predict", "--model", str(bundle), "--input", str(case_dir), "--out", str(tmp_path / "cli"), "--no-progress")
    run(
        "-m", "monai.bundle", "run", "inference", "--config_file", str(bundle / "configs" / "inference.yaml"), "--bundle_root", str(bundle),
        "--input", str(case_dir), "--output_dir", str(tmp_path / "bundle_run"), "--progress", "False",
    )  # fmt: skip
    code = (
        "import sys, pipeline; from pipeline.core.io import save_nifti; "
        "save_nifti(sys.argv[3], pipeline.load_model(sys.argv[1]).segment(sys.argv[2]))"
    )
    (tmp_path / "api").mkdir()
    run("-c", code, str(bundle), str(case_dir), str(tmp_path / "api" / name))
    expected = (tmp_path / "cli" / name).read_bytes()
    assert (tmp_path / "bundle_run" / name).read_bytes() == expected
    assert (tmp_path / "api" / name).read_bytes() == expected


def test_docs_merge_evaluate_yaml_after_inference_yaml_and_offer_tracking():
    """The documented evaluating command merges evaluate.yaml after inference.yaml; train and make train offer --tracking."""
    merged = "['bundles/brats_segmentation/configs/inference.yaml','bundles/brats_segmentation/configs/evaluate.yaml']"
    for doc in (REPO / "docs" / "bundle.md", REPO / "bundles" / "brats_segmentation" / "docs" / "README.md", CONFIGS / "evaluate.yaml"):
        assert merged in doc.read_text(), doc
    for doc in (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "bundles" / "brats_segmentation" / "docs" / "README.md"):
        assert "--config_file bundles/brats_segmentation/configs/evaluate.yaml" not in doc.read_text(), doc
    assert "--tracking mlflow|FILE" in CliRunner().invoke(main, ["train", "--help"]).output
    assert "--tracking $(TRACKING)" in (REPO / "Makefile").read_text()


# ---- tasks ------------------------------------------------------------------------------------
def test_a_run_stores_its_task_and_an_old_run_is_glioma(tmp_path):
    from prediction_cases import write_run_dir

    from pipeline.tasks.task import DEFAULT_TASK, resolve_task

    old = write_run_dir(tmp_path / "old")
    config = json.loads((old / "config.json").read_text())
    config.pop("task")  # trained before runs had tasks
    (old / "config.json").write_text(json.dumps(config))
    assert load_model(old).task == DEFAULT_TASK and run_inference_config(config, old)["task"] == "brats-glioma"

    whole = resolve_task("whole-tumour", ["flair"]).to_dict()
    run = write_run_dir(tmp_path / "whole", task=whole)
    stored = run_inference_config(json.loads((run / "config.json").read_text()), run)
    assert stored["task"] == whole and stored["postprocessing"]["keep_largest"] == ["WT"]
    model = load_model(run)
    assert model.task.channels == ("flair",) and model.postprocessing.keep_largest == ("WT",) and model.postprocessing.task == model.task

    gtv = resolve_task("meningioma-rt").to_dict()
    run = write_run_dir(tmp_path / "gtv", task=gtv)
    stored = run_inference_config(json.loads((run / "config.json").read_text()), run)
    assert stored["postprocessing"] == {"_target_": "pipeline.inference.postprocess.PostProcessing"}  # no WT to edit
    assert load_model(run).postprocessing.is_identity


@pytest.mark.parametrize("overrides", [[], ["evaluate.yaml"], ["gpu_inference.yaml"], ["gpu_inference_3d.yaml"]])
def test_override_files_compose_with_a_task(overrides, tmp_path):
    files = [str(INFERENCE_CONFIG), *(str(INFERENCE_CONFIG.parent / name) for name in overrides)]
    parser = ConfigParser(ConfigParser.load_config_files(files))
    parser["task"] = "brats2024-post-treatment"
    assert parser.get_parsed_content("inferer").task.name == "brats2024-post-treatment"
    network = parser.get_parsed_content("network_def")
    assert [m for m in network.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Conv3d | torch.nn.ConvTranspose2d | torch.nn.ConvTranspose3d)][-1].out_channels == 5
