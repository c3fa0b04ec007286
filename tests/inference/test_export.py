"""TorchScript (MONAI ckpt_export) and ONNX exports reproduce the PyTorch network, and the exports run inference."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from prediction_cases import TINY_NETWORK, write_bundle_dir, write_run_dir

from pipeline.inference.model import load_model
from pipeline.cli.main import main
from pipeline.core.errors import ConfigError
from pipeline.inference.export import export_model, load_network, network_data_format
from pipeline.networks import build_network, spatial_divisor

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run_dir(tmp_path_factory.mktemp("export") / "run", seed=3)


def _pytorch_logits(run_dir: Path, inputs: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return load_network(run_dir).network(inputs).numpy()


def test_channel_def_follows_the_2_5d_stacking_order():
    """Input channel i of the metadata is the modality and slice offset that stack_context puts at i."""
    from pipeline.training.loaders import stack_context

    context = 2
    volume = np.zeros((9, 4, 2, 2), np.float32)
    for z in range(9):
        for c in range(4):
            volume[z, c] = 10 * z + c  # value names (slice, modality)
    stacked = np.asarray(stack_context(volume, np.array([4]), context))[0]
    channel_def = network_data_format("2.5d", context)["inputs"]["image"]["channel_def"]
    assert len(channel_def) == stacked.shape[0] == 20
    modality_index = {"T1": 0, "T1ce": 1, "T2": 2, "FLAIR": 3}
    for index, description in channel_def.items():
        name, _, where = description.partition(", slice ")
        offset = 0 if where == "z" else int(where[1:])
        assert stacked[int(index), 0, 0] == 10 * (4 + offset) + modality_index[name], description


@pytest.mark.parametrize(("mode", "context", "output_mode", "in_channels", "out_channels"), [
    ("2.5d", 2, "softmax", 20, 4), ("2.5d", 1, "regions", 12, 3), ("2d", 2, "softmax", 4, 4), ("3d", 2, "regions", 4, 3),
])  # fmt: skip
def test_network_data_format_fits_the_network(mode, context, output_mode, in_channels, out_channels):
    network = build_network(mode, context=context, output_mode=output_mode, channels=(4, 8, 16, 32), strides=(2, 2, 2), num_res_units=0).eval()
    described = network_data_format(mode, context, output_mode, spatial_divisor(network))
    image, pred = described["inputs"]["image"], described["outputs"]["pred"]
    assert image["num_channels"] == in_channels and pred["num_channels"] == len(pred["channel_def"]) == out_channels
    smallest = [int(size.split("*")[0]) for size in image["spatial_shape"]]
    with torch.no_grad():
        output = network(torch.rand(1, in_channels, *smallest))
    assert output.shape == (1, out_channels, *smallest)


def test_torchscript_export_reproduces_pytorch_and_embeds_metadata(run_dir):
    result = export_model(run_dir, "torchscript")
    assert result.path == run_dir / "models" / "model.ts" and result.max_abs_difference <= 1e-5
    extra = {"metadata.json": "", "config.json": ""}
    scripted = torch.jit.load(str(result.path), map_location="cpu", _extra_files=extra)
    metadata, config = json.loads(extra["metadata.json"]), json.loads(extra["config.json"])
    assert metadata["network_data_format"]["inputs"]["image"]["num_channels"] == 4 * (2 * TINY_NETWORK["context"] + 1)
    assert metadata["version"] and config["channels"] == TINY_NETWORK["channels"]
    assert spatial_divisor(scripted) == 2  # kept through scripting: inference pads to it
    for shape in ((1, 12, 16, 22), (5, 12, 8, 40)):
        inputs = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
        with torch.no_grad():
            np.testing.assert_allclose(scripted(inputs).numpy(), _pytorch_logits(run_dir, inputs), atol=1e-5)
    assert not list((run_dir / "models").glob(".export-*"))  # no scratch left behind


def test_onnx_export_from_the_cli_reproduces_pytorch_with_dynamic_shapes(run_dir, tmp_path):
    import onnx
    import onnxruntime

    out = tmp_path / "exported.onnx"
    result = CliRunner().invoke(main, ["export", "--model", str(run_dir), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "onnx model ->" in result.output and out.is_file()
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"] and [o.name for o in session.get_outputs()] == ["logits"]
    for shape in ((1, 12, 16, 22), (3, 12, 30, 8)):  # batch and spatial sizes other than the export's example
        inputs = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
        actual = session.run(None, {"image": inputs.numpy()})[0]
        np.testing.assert_allclose(actual, _pytorch_logits(run_dir, inputs), atol=1e-4)
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["metadata.json"])["network_data_format"]["outputs"]["pred"]["num_channels"] == 4
    assert json.loads(props["config.json"])["mode"] == "2.5d"


@pytest.mark.slow
def test_exported_torchscript_runs_the_inference_config(run_dir, case_dir, tmp_path):
    """A bundle folder with only models/model.ts segments like the PyTorch weights, via load_model and via the config."""
    with_weights = write_bundle_dir(tmp_path / "bundle", weights=run_dir / "models" / "model.pt")
    export_model(with_weights, "torchscript")  # from a bundle folder: configs/inference.yaml
    scripted_only = write_bundle_dir(tmp_path / "scripted")
    (scripted_only / "models").mkdir()
    os.replace(with_weights / "models" / "model.ts", scripted_only / "models" / "model.ts")
    expected = np.asarray(load_model(run_dir).segment(case_dir).dataobj)
    assert len(np.unique(expected)) > 1

    model = load_model(scripted_only)
    assert isinstance(model.network, torch.jit.ScriptModule)
    np.testing.assert_array_equal(np.asarray(model.segment(case_dir).dataobj), expected)

    command = [
        sys.executable, "-m", "monai.bundle", "run", "inference",
        "--config_file", str(scripted_only / "configs" / "inference.yaml"), "--bundle_root", str(scripted_only),
        "--input", str(case_dir), "--output_dir", str(tmp_path / "predictions"), "--progress", "False",
        "--network_def", "$torch.jit.load(@model_dir + '/model.ts')", "--checkpoint", "$None",
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    written = nib.load(tmp_path / "predictions" / f"{case_dir.name}_seg.nii.gz")
    np.testing.assert_array_equal(np.asarray(written.dataobj), expected)


def test_wrapped_checkpoints_export(run_dir, tmp_path):
    """DDP-prefixed weights (a multi-GPU run) export like plain ones."""
    folder = write_run_dir(tmp_path / "ddp")
    state = torch.load(run_dir / "models" / "model.pt", weights_only=True)
    torch.save({f"module.{key}": value for key, value in state.items()}, folder / "models" / "model.pt")
    result = export_model(folder, "torchscript", out=tmp_path / "ddp.ts")
    inputs = torch.randn(2, 12, 16, 16)
    with torch.no_grad():
        np.testing.assert_allclose(torch.jit.load(str(result.path))(inputs).numpy(), _pytorch_logits(run_dir, inputs), atol=1e-5)


def test_export_errors_name_the_problem(run_dir, tmp_path):
    with pytest.raises(ConfigError, match="unknown export format 'tflite'"):
        export_model(run_dir, "tflite")
    empty = write_run_dir(tmp_path / "no_weights")
    (empty / "models" / "model.pt").unlink()
    with pytest.raises(ConfigError, match="checkpoint not found"):
        export_model(empty, "torchscript")
    other = write_run_dir(tmp_path / "other", channels=[4, 8], strides=[2])
    shutil.copy(run_dir / "models" / "model.pt", other / "models" / "model.pt")  # weights of another network
    result = CliRunner().invoke(main, ["export", "--model", str(other)])
    assert result.exit_code == 1 and result.output.startswith("error: ") and "do not fit the network" in result.output
    assert not (other / "models" / "model.ts").exists()
    result = CliRunner().invoke(main, ["export", "--model", str(tmp_path)])
    assert result.exit_code == 1 and "neither a run folder" in result.output


@pytest.mark.slow
def test_model_zoo_ckpt_export_command_on_a_bundle_folder(run_dir, tmp_path):
    """The documented `python -m monai.bundle ckpt_export` command gives the same TorchScript model as `brats-pipeline export`."""
    bundle = write_bundle_dir(tmp_path / "bundle", weights=run_dir / "models" / "model.pt")
    command = [
        sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(bundle / "models" / "model.ts"),
        "--ckpt_file", str(bundle / "models" / "model.pt"), "--meta_file", str(REPO / "bundles" / "brats_segmentation" / "configs" / "metadata.json"),
        "--config_file", str(bundle / "configs" / "inference.yaml"),
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    ours = export_model(bundle, "torchscript", out=tmp_path / "ours.ts")
    inputs = torch.randn(2, 12, 24, 16)
    with torch.no_grad():
        zoo = torch.jit.load(str(bundle / "models" / "model.ts"))(inputs)
        np.testing.assert_allclose(zoo.numpy(), torch.jit.load(str(ours.path))(inputs).numpy(), atol=1e-6)
        np.testing.assert_allclose(zoo.numpy(), _pytorch_logits(run_dir, inputs), atol=1e-5)


# ---- tasks ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("task", "channels", "output_mode", "inputs", "outputs"),
    [
        ("whole-tumour", ["flair"], None, ["FLAIR"], ["background", "WT"]),
        ("brats2024-post-treatment", None, None, ["T1", "T1ce", "T2", "FLAIR"], ["background", "NETC", "SNFH", "ET", "RC"]),
        ("brats-glioma", ["t1ce", "flair"], "regions", ["T1ce", "FLAIR"], ["tumour core (TC = NEC + ET)", "whole tumour (WT = NEC + ED + ET)", "enhancing tumour (ET)"]),
        ("meningioma-rt", None, None, ["T1ce"], ["background", "GTV"]),
    ],
)
@pytest.mark.parametrize("mode", ["2.5d", "3d"])
def test_metadata_of_a_task_describes_its_network_and_passes_the_schema(task, channels, output_mode, inputs, outputs, mode, request):
    import jsonschema

    from pipeline.tasks.task import resolve_task

    spec = resolve_task(task, channels).to_dict()
    network = build_network(mode, context=1, output_mode=output_mode, task=spec, channels=(4, 8), strides=(2,), num_res_units=0).eval()
    described = network_data_format(mode, 1, output_mode, spatial_divisor(network), task=spec)
    image, pred = described["inputs"]["image"], described["outputs"]["pred"]
    offsets = ["z-1", "z", "z+1"] if mode == "2.5d" else [None]
    assert list(image["channel_def"].values()) == [f"{name}, slice {o}" if o else name for o in offsets for name in inputs]
    assert list(pred["channel_def"].values()) == outputs and pred["num_channels"] == len(outputs)
    assert pred["format"] == ("multilabel" if output_mode == "regions" else "segmentation")
    smallest = [int(size.split("*")[0]) for size in image["spatial_shape"]]
    with torch.no_grad():  # what monai.bundle verify_net_in_out checks
        assert network(torch.rand(1, image["num_channels"], *smallest)).shape == (1, pred["num_channels"], *smallest)
    metadata = json.loads((REPO / "bundles" / "brats_segmentation" / "configs" / "metadata.json").read_text())
    metadata["network_data_format"] = described
    schema = request.getfixturevalue("bundle_schema")  # after the checks above: skips here without the schema
    jsonschema.validate(metadata, json.loads(schema.read_text()))


def _bundle_with_metadata(bundle_dir: Path, **settings) -> Path:
    write_bundle_dir(bundle_dir, **{**TINY_NETWORK, **settings})
    shutil.copy(REPO / "bundles" / "brats_segmentation" / "configs" / "metadata.json", bundle_dir / "configs" / "metadata.json")
    return bundle_dir


def test_bundle_export_installs_the_weights_records_their_hash_and_loading_checks_it(run_dir, case_dir, tmp_path):
    import hashlib

    bundle = _bundle_with_metadata(tmp_path / "bundle")
    result = CliRunner().invoke(main, ["export", "--model", str(run_dir), "--format", "bundle", "--out", str(bundle)])
    assert result.exit_code == 0, result.output
    weights = bundle / "models" / "model.pt"
    assert weights.read_bytes() == (run_dir / "models" / "model.pt").read_bytes()
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert metadata["model_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert list(metadata)[:2] == ["schema", "version"]  # the file keeps its own key order
    labels = np.asarray(load_model(bundle).segment(case_dir).dataobj)
    np.testing.assert_array_equal(labels, np.asarray(load_model(run_dir).segment(case_dir).dataobj))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # damaged: same size, other bytes
    with pytest.raises(ConfigError, match="SHA-256 differs") as error:
        load_model(bundle)
    assert str(weights) in str(error.value)


def test_bundle_export_refuses_a_bundle_whose_network_differs(run_dir, tmp_path):
    bundle = _bundle_with_metadata(tmp_path / "bundle", channels=[8, 32])
    before = (bundle / "configs" / "metadata.json").read_bytes()
    with pytest.raises(ConfigError):
        export_model(run_dir, "bundle", out=bundle)
    assert not (bundle / "models" / "model.pt").exists() and (bundle / "configs" / "metadata.json").read_bytes() == before
