"""The MONAI Bundle: layout, metadata (schema, network format, versions, results) and its documented commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from markdown_tables import table_cells, table_rows
from monai.bundle import ConfigParser
from packaging.version import Version

import pipeline
from pipeline.inference.export import network_data_format
from pipeline.networks import spatial_divisor
from pipeline.training.workflow import WORKFLOW_NAME

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "brats_segmentation"
CONFIGS = BUNDLE / "configs"
METADATA = CONFIGS / "metadata.json"
BUNDLE_CARD = BUNDLE / "docs" / "README.md"

#: A tiny network and budget for the command runs (the same keys in every config).
TINY = {"channels": "[4,8,16]", "strides": "[2,2]", "num_res_units": "0", "sw_batch_size": "8"}
TINY_TRAINING = {**TINY, "samples_per_epoch": "8", "batch_size": "4", "num_workers": "0", "progress": "False", "epochs": "1"}


def _metadata() -> dict:
    return json.loads(METADATA.read_text())


def _bundle_command(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    completed = subprocess.run([sys.executable, "-m", "monai.bundle", *args], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    return completed


def _overrides(settings: dict[str, str]) -> list[str]:
    return [item for key, value in settings.items() for item in (f"--{key}", value)]


def test_bundle_layout_follows_the_specification():
    for name in ("metadata.json", "train.yaml", "evaluate.yaml", "inference.yaml", "multi_gpu_train.yaml", "logging.conf"):
        assert (CONFIGS / name).is_file(), name
    assert (BUNDLE / "docs" / "README.md").is_file()
    assert (BUNDLE / "LICENSE").read_text().lstrip().startswith("Apache License")
    # models/ holds the shipped pretrained weights (committed); anything else there (exports, training state) is not
    shipped = subprocess.run(["git", "check-ignore", "-q", str(BUNDLE / "models" / "model.pt")], cwd=REPO)
    assert shipped.returncode == 1
    for other in ("model.ts", "model.onnx", "latest.pt"):
        assert subprocess.run(["git", "check-ignore", "-q", str(BUNDLE / "models" / other)], cwd=REPO).returncode == 0, other
    for name in ("train.yaml", "evaluate.yaml", "inference.yaml", "multi_gpu_train.yaml", "gpu_train.yaml", "demo.yaml"):
        assert isinstance(yaml.safe_load((CONFIGS / name).read_text()), dict), name


def test_metadata_is_complete():
    meta = _metadata()
    assert meta["schema"].endswith("/meta_schema_20240725.json")
    assert meta["version"] in meta["changelog"]
    for key in ("monai_version", "pytorch_version", "numpy_version"):
        Version(meta[key])  # a version string
    packages = meta["required_packages_version"]
    for version in packages.values():
        Version(version)
    assert {"nibabel", "SimpleITK", "pytorch-ignite", "brats-pipeline"} <= set(packages)
    assert packages["brats-pipeline"] == pipeline.__version__
    for key in ("task", "description", "authors", "copyright", "data_source", "data_type", "image_classes", "label_classes", "pred_classes"):
        assert isinstance(meta[key], str) and meta[key].strip(), key
    assert "not a medical device" in meta["intended_use"].lower()
    references = " ".join(meta["references"])
    for author in ("Menze", "Bakas", "Baid", "MONAI", "U-Net"):
        assert author in references, author
    assert "T1, T1ce, T2, FLAIR" in meta["image_classes"]


#: The recorded 21-patient cross-validation, its trained folds re-scored with the bundle's post-processing: eval_metrics.
CV_RESCORED = REPO / "benchmarks" / "results" / "real_cv-amd-epyc-2c-2026-12-07-seed1-inference-bundle-post.json"
#: Its arm of the shipped defaults: each fold's final weights (keep_weights: last).
CV_ARM = "last + bundle post"


def test_eval_metrics_are_the_real_patient_cross_validation_of_the_shipped_defaults():
    """eval_metrics are the out-of-fold means over the 21 real patients, scored with the post-processing the bundle ships."""
    from benchmarks.inference_cv import bundle_postprocessing
    from pipeline.core.checkpoints import DEFAULT_KEPT_WEIGHTS

    meta = _metadata()
    metrics = meta["eval_metrics"]
    recorded = json.loads(CV_RESCORED.read_text())
    (means,) = [row for row in recorded["means"] if row["arm"] == CV_ARM]
    assert means["patients"] == 21
    assert recorded["postprocessing"] == bundle_postprocessing()  # the figures are those of the current defaults
    kept = yaml.safe_load((BUNDLE / "configs" / "train.yaml").read_text())["keep_weights"]
    assert kept == CV_ARM.split()[0] == DEFAULT_KEPT_WEIGHTS  # and their weights, the code's fallback the same
    for structure in ("WT", "TC", "ET", "NEC", "ED"):
        assert metrics[f"test_mean_dice_{structure.lower()}"] == round(means[f"dice_{structure}"], 4), structure
        assert metrics[f"test_mean_hd95_{structure.lower()}_mm"] == round(means[f"hd95_{structure}"], 2), structure
    assert "21" in meta["description"] and "cross-validation" in meta["description"] and CV_RESCORED.name in meta["description"]


def test_model_card_per_patient_table_is_the_recorded_cross_validation():
    """Each of the 21 patients' rows in the model card's Performance table: its fold and Dice as recorded."""
    recorded = {row["case_id"]: row for row in json.loads(CV_RESCORED.read_text())["rows"] if row["arm"] == CV_ARM}
    performance = BUNDLE_CARD.read_text().split("## Performance\n", 1)[1].split("\n## ", 1)[0]
    card = {cells[0]: cells for cells in map(table_cells, table_rows(performance)) if cells[0] in recorded}
    assert set(card) == set(recorded) and len(card) == 21
    for case_id, row in recorded.items():
        dice = [f"{row[f'dice_{structure}']:.3f}" for structure in ("WT", "TC", "ET", "NEC", "ED")]
        hd95 = " / ".join(f"{row[f'hd95_{structure}']:.1f}" for structure in ("WT", "TC", "ET"))
        assert card[case_id][1:] == [str(row["fold"]), *dice, hd95], case_id


def test_the_demo_row_of_the_results_is_what_make_demo_measures():
    """docs/results.md's synthetic-demo row; a local demo run (same seed and budget) reproduces its WT Dice."""
    wt = float(table_cells(table_rows(REPO / "docs" / "results.md", "synthetic cohort")[0])[2])
    assert 0.85 <= wt <= 1.0
    demo = REPO / "outputs" / "demo" / "demo.json"
    if demo.is_file():
        assert abs(json.loads(demo.read_text())["mean_dice"]["WT"] - wt) < 0.05


@pytest.mark.slow
def test_metadata_validates_against_the_bundle_schema(bundle_schema):
    import jsonschema

    jsonschema.validate(_metadata(), json.loads(bundle_schema.read_text()))
    completed = _bundle_command("verify_metadata", "--meta_file", str(METADATA), "--filepath", str(bundle_schema))
    assert "metadata is verified with no error" in completed.stdout + completed.stderr


def test_network_data_format_describes_the_inference_network():
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.yaml"))
    network = parser.get_parsed_content("network_def")
    expected = network_data_format(parser["mode"], parser["context"], parser["output_mode"], spatial_divisor(network))
    assert _metadata()["network_data_format"] == expected
    image = expected["inputs"]["image"]
    assert image["num_channels"] == 20 and image["spatial_shape"] == ["32*n", "32*n"]  # 2 x the 5-level UNet's divisor 16
    assert image["channel_def"]["0"] == "T1, slice z-2" and image["channel_def"]["19"] == "FLAIR, slice z+2"
    assert expected["outputs"]["pred"]["channel_def"] == {
        "0": "background",
        "1": "necrotic and non-enhancing tumour core (NEC)",
        "2": "peritumoral edema (ED)",
        "3": "enhancing tumour (ET)",
    }


def test_the_bundle_inference_config_fits_a_run_of_the_training_defaults(tmp_path):
    """A run of train.yaml's defaults (demo.yaml leaves the network alone) gets the network of inference.yaml."""
    from pipeline.inference.config import TRAINED_KEYS, run_inference_config

    keys = ("mode", "context", "output_mode", "network_name", "channels", "strides", "num_res_units", "dropout", "norm", "init_filters")
    run = run_inference_config(ConfigParser.load_config_files([str(CONFIGS / "train.yaml"), str(CONFIGS / "demo.yaml")]), tmp_path)
    inference = yaml.safe_load((CONFIGS / "inference.yaml").read_text())
    assert {k: run[k] for k in keys} == {k: inference[k] for k in keys}
    assert set(keys) <= set(TRAINED_KEYS)
    assert not set(keys) & set(yaml.safe_load((CONFIGS / "demo.yaml").read_text()))


@pytest.mark.slow
def test_verify_net_in_out():
    completed = _bundle_command(
        "verify_net_in_out", "network_def", "--meta_file", str(METADATA), "--config_file", str(CONFIGS / "inference.yaml"), "--device", "cpu"
    )
    assert "data shape of network is verified with no error" in completed.stdout + completed.stderr


@pytest.mark.slow
def test_bundle_commands_train_evaluate_and_infer(tiny_datalist: Path, tiny_cache: Path, tmp_path: Path):
    """The documented `python -m monai.bundle run training | evaluating | inference` commands, chained on tiny data.

    Paths come from --bundle_root, --dataset_dir, --datalist and --output_dir; evaluation and
    inference take the trained weights with a --checkpoint override. (The torchrun variant with
    multi_gpu_train.yaml runs in tests/test_training.py.)
    """
    run_dir = tmp_path / "run"
    _bundle_command(
        "run", "training", "--workflow_name", WORKFLOW_NAME, "--config_file", str(CONFIGS / "train.yaml"), "--bundle_root", str(BUNDLE),
        "--dataset_dir", str(tiny_cache), "--datalist", str(tiny_datalist), "--output_dir", str(run_dir), *_overrides(TINY_TRAINING),
    )  # fmt: skip
    checkpoint = run_dir / "models" / "model.pt"
    assert checkpoint.is_file()

    evaluating = f"['{CONFIGS / 'inference.yaml'}','{CONFIGS / 'evaluate.yaml'}']"  # evaluate.yaml overrides inference.yaml
    _bundle_command(
        "run", "evaluating", "--config_file", evaluating, "--bundle_root", str(BUNDLE),
        "--datalist", str(tiny_datalist), "--output_dir", str(tmp_path / "eval"), "--checkpoint", str(checkpoint),
        "--progress", "False", *_overrides(TINY),
    )  # fmt: skip
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    test_cases = [entry["case_id"] for entry in json.loads(tiny_datalist.read_text())["test"]]
    assert summary["cases"] == len(test_cases) and 0.0 <= summary["metrics"]["dice_WT"]["mean"] <= 1.0
    assert sorted(p.name for p in (tmp_path / "eval" / "predictions").glob("*_seg.nii.gz")) == sorted(f"{c}_seg.nii.gz" for c in test_cases)

    case = Path(json.loads(tiny_datalist.read_text())["data_root"])
    case = (tiny_datalist.parent / case if not case.is_absolute() else case) / test_cases[0]
    _bundle_command(
        "run", "inference", "--config_file", str(CONFIGS / "inference.yaml"), "--bundle_root", str(BUNDLE),
        "--input", str(case), "--output_dir", str(tmp_path / "pred"), "--checkpoint", str(checkpoint),
        "--progress", "False", *_overrides(TINY),
    )  # fmt: skip
    import nibabel as nib
    import numpy as np

    inferred = np.asarray(nib.load(tmp_path / "pred" / f"{test_cases[0]}_seg.nii.gz").dataobj)
    evaluated = np.asarray(nib.load(tmp_path / "eval" / "predictions" / f"{test_cases[0]}_seg.nii.gz").dataobj)
    np.testing.assert_array_equal(inferred, evaluated)  # one inference path, whichever command runs it


@pytest.mark.slow
def test_bundle_commands_run_another_task(tmp_path: Path):
    """The bundle commands on a FLAIR-only whole-tumour data list: training takes the list's task, the run's inference.json carries it."""
    import nibabel as nib
    import numpy as np

    from pipeline.datasets.datalist import build_datalist, load_datalist
    from pipeline.preprocessing.prepare import preprocess_datalist
    from pipeline.synth import generate_cohort

    generate_cohort(tmp_path / "cohort", cases=4, seed=1, size="tiny", progress=False)
    datalist = tmp_path / "wt.json"
    build_datalist(tmp_path / "cohort", datalist, folds=2, test_fraction=0.25, progress=False, task="whole-tumour", channels=["flair"])
    preprocess_datalist(datalist, tmp_path / "cache", progress=False)
    run_dir = tmp_path / "run"
    _bundle_command(
        "run", "training", "--workflow_name", WORKFLOW_NAME, "--config_file", str(CONFIGS / "train.yaml"),
        "--dataset_dir", str(tmp_path / "cache"), "--datalist", str(datalist), "--output_dir", str(run_dir), *_overrides(TINY_TRAINING),
    )  # fmt: skip
    inference = json.loads((run_dir / "inference.json").read_text())
    assert inference["task"]["channels"] == ["flair"] and inference["task"]["classes"] == ["WT"]
    record = load_datalist(datalist).cases("test")[0]
    _bundle_command(
        "run", "inference", "--config_file", str(run_dir / "inference.json"), "--input", str(record.images[0].parent),
        "--output_dir", str(tmp_path / "pred"), "--progress", "False",
    )  # fmt: skip
    seg = nib.load(tmp_path / "pred" / f"{record.case_id}_seg.nii.gz")
    assert seg.shape == nib.load(record.images[0]).shape and set(np.unique(np.asarray(seg.dataobj)).tolist()) <= {0, 1}


def test_train_config_passes_its_elastic_switch_to_both_augmentation_paths() -> None:
    config = ConfigParser.load_config_file(str(CONFIGS / "train.yaml"))
    assert isinstance(config["elastic"], bool)
    worker = config["train"]["dataset"]["dataset"]  # the dataset inside the output-mode wrapper
    assert worker["elastic"] == config["train"]["augmentation"]["elastic"] == "@elastic"


@pytest.mark.parametrize("name", ["train.yaml", "inference.yaml"])
def test_the_network_is_built_from_the_config_knobs(name: str) -> None:
    """Every network knob reaches ``network_def`` by reference, so ``--set norm=batch`` (or any other) changes the built network."""
    config = ConfigParser.load_config_file(str(CONFIGS / name))
    knobs = {"mode": "mode", "context": "context", "output_mode": "output_mode", "task": "task", "network": "network_name", "channels": "channels",
             "strides": "strides", "num_res_units": "num_res_units", "dropout": "dropout", "norm": "norm", "init_filters": "init_filters",
             "deep_supervision": "deep_supervision"}  # fmt: skip
    assert {arg: config["network_def"][arg] for arg in knobs} == {arg: f"@{knob}" for arg, knob in knobs.items()}
    assert all(knob in config for knob in knobs.values())
