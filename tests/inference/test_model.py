"""Loading models from run and bundle folders, checkpoint errors, and segmenting from Python."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from prediction_cases import CONFIGS, TINY_NETWORK, assert_same_geometry, write_bundle_dir, write_run_dir

import pipeline
from pipeline.inference.model import SegmentationModel, SegmentationResult, case_record, load_model, segment
from pipeline.core.errors import ConfigError, InputError
from pipeline.inference.inferers import EnsembleInferer
from pipeline.inference.postprocess import PostProcessing


def test_load_model_from_a_run_folder(run_dir):
    model = load_model(run_dir)
    assert isinstance(model, SegmentationModel)
    assert model.inferer.mode == "2.5d" and model.inferer.context == TINY_NETWORK["context"]
    assert model.inferer.sw_batch_size == TINY_NETWORK["sw_batch_size"] and model.inferer.tta is False
    assert model.postprocessing == PostProcessing(min_component_voxels={"WT": 20, "TC": 200, "ET": 200}, keep_largest=["WT"], fill_core_holes="slices")  # inference.yaml's (train.yaml sets none)
    assert load_model(run_dir, tta=True).inferer.tta is True
    saved = torch.load(run_dir / "models" / "model.pt", weights_only=True)
    for key, value in model.network.state_dict().items():
        assert torch.equal(value, saved[key])


def test_segment_returns_the_case_geometry_and_convention(run_dir, case_dir):
    model = load_model(run_dir)
    image = model.segment(case_dir)
    reference = case_dir / "BraTS2021_00001_flair.nii.gz"
    assert isinstance(image, nib.Nifti1Image)
    assert_same_geometry(image, case_dir / "BraTS2021_00001_t1.nii.gz")
    assert image.shape == nib.load(reference).shape and image.get_data_dtype() == np.uint8
    labels = np.asarray(image.dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2, 4} and len(np.unique(labels)) > 1
    internal = model.segment(case_dir, label_convention="internal")
    np.testing.assert_array_equal(np.asarray(internal.dataobj), np.where(labels == 4, 3, labels))


@pytest.mark.slow
def test_segment_takes_four_files_and_the_lazy_package_export(run_dir, case_dir):
    files = [case_dir / f"BraTS2021_00001_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")]
    record = case_record(files)
    assert record.case_id == "BraTS2021_00001" and record.label_convention == "brats2017" and record.label is None
    from_files = pipeline.segment(files, model=run_dir)
    from_folder = segment(case_dir, model=load_model(run_dir))
    np.testing.assert_array_equal(np.asarray(from_files.dataobj), np.asarray(from_folder.dataobj))
    assert pipeline.load_model is load_model
    with pytest.raises(InputError, match="expected 4 modality files"):
        case_record(files[:3])


def test_import_pipeline_stays_light():
    code = "import sys, pipeline; print('torch' in sys.modules, 'monai' in sys.modules, callable(pipeline.load_model))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False", "True"]


def test_load_model_from_a_bundle_folder_and_torchscript(run_dir, case_dir, tmp_path):
    bundle = write_bundle_dir(tmp_path / "bundle", weights=run_dir / "models" / "model.pt")
    from_bundle = load_model(bundle)
    assert from_bundle.postprocessing == PostProcessing.from_config(yaml.safe_load((CONFIGS / "inference.yaml").read_text())["postprocessing"])
    expected = np.asarray(load_model(run_dir).segment(case_dir).dataobj)
    np.testing.assert_array_equal(np.asarray(from_bundle.segment(case_dir).dataobj), expected)

    scripted = write_bundle_dir(tmp_path / "scripted")
    (scripted / "models").mkdir()
    torch.jit.script(from_bundle.network).save(str(scripted / "models" / "model.ts"))
    model = load_model(scripted)
    assert isinstance(model.network, torch.jit.ScriptModule)
    np.testing.assert_array_equal(np.asarray(model.segment(case_dir).dataobj), expected)


@pytest.fixture(scope="module")
def other_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second run of the same configuration with other weights (another fold, say)."""
    return write_run_dir(tmp_path_factory.mktemp("api_other") / "run", seed=1)


def test_load_model_of_several_folders_averages_their_probabilities(run_dir, other_run_dir, case_dir, tmp_path):
    model = load_model([run_dir, other_run_dir])
    assert isinstance(model.inferer, EnsembleInferer) and model.inferer.names == [str(run_dir), str(other_run_dir)]
    first = load_model(run_dir).predict_case(case_dir, probabilities=True)
    second = load_model(other_run_dir).predict_case(case_dir, probabilities=True)
    assert not np.allclose(first.probabilities, second.probabilities, atol=1e-3)
    both = model.predict_case(case_dir, probabilities=True)
    np.testing.assert_allclose(both.probabilities, (first.probabilities + second.probabilities) / 2, atol=1e-6)
    # a list of one folder is that folder's model, bit for bit
    alone = load_model([run_dir]).predict_case(case_dir, probabilities=True)
    assert np.array_equal(alone.probabilities, first.probabilities) and np.array_equal(alone.labels, first.labels)

    regions = write_run_dir(tmp_path / "regions", output_mode="regions")
    with pytest.raises(ConfigError) as error:
        load_model([run_dir, regions])
    assert str(error.value).startswith(f"{regions}: outputs regions probabilities") and "\n" not in str(error.value)


def test_bundle_checkpoint_list_is_an_ensemble(run_dir, other_run_dir, case_dir, tmp_path):
    weights = [str(run_dir / "models" / "model.pt"), str(other_run_dir / "models" / "model.pt")]
    bundle = write_bundle_dir(tmp_path / "bundle", checkpoint=weights)
    from_bundle = load_model(bundle).predict_case(case_dir, probabilities=True)
    from_runs = load_model([run_dir, other_run_dir]).predict_case(case_dir, probabilities=True)
    np.testing.assert_allclose(from_bundle.probabilities, from_runs.probabilities, atol=1e-6)
    one = load_model(write_bundle_dir(tmp_path / "one", checkpoint=weights[:1])).predict_case(case_dir, probabilities=True)
    assert np.array_equal(one.probabilities, load_model(run_dir).predict_case(case_dir, probabilities=True).probabilities)
    with pytest.raises(ConfigError, match=r"missing\.pt: checkpoint not found"):
        load_model(write_bundle_dir(tmp_path / "missing", checkpoint=[weights[0], str(tmp_path / "missing.pt")]))


def test_segment_with_uncertainty_returns_the_maps_on_the_input_grid(run_dir, other_run_dir, case_dir):
    result = segment(case_dir, model=[run_dir, other_run_dir], uncertainty=True)
    assert isinstance(result, SegmentationResult)
    for image in (result.image, result.uncertainty, result.disagreement):
        assert_same_geometry(image, case_dir / "BraTS2021_00001_t1.nii.gz")
    for image in (result.uncertainty, result.disagreement):
        values = np.asarray(image.dataobj)
        assert values.dtype == np.float32 and values.min() >= 0 and 0 < values.max() <= 1
    assert set(result.scores) == {"uncertainty_entropy_WT", "uncertainty_disagreement_WT"}
    plain = segment(case_dir, model=[run_dir, other_run_dir])
    assert isinstance(plain, nib.Nifti1Image)
    np.testing.assert_array_equal(np.asarray(plain.dataobj), np.asarray(result.image.dataobj))
    single = load_model(run_dir).segment(case_dir, uncertainty=True)  # one pass: entropy only
    assert single.disagreement is None and set(single.scores) == {"uncertainty_entropy_WT"}


def test_checkpoint_errors_name_the_file(run_dir, tmp_path):
    with pytest.raises(ConfigError, match="model folder not found"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="neither a run folder"):
        load_model(tmp_path / "empty")

    no_weights = write_run_dir(tmp_path / "no_weights")
    (no_weights / "models" / "model.pt").unlink()
    with pytest.raises(ConfigError, match=r"model\.pt: checkpoint not found"):
        load_model(no_weights)

    corrupt = write_run_dir(tmp_path / "corrupt")
    (corrupt / "models" / "model.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConfigError) as error:
        load_model(corrupt)
    assert str(corrupt / "models" / "model.pt") in str(error.value) and "not a readable" in str(error.value)

    wider = write_run_dir(tmp_path / "wider", channels=[12, 24])
    mismatched = write_run_dir(tmp_path / "mismatched")
    (mismatched / "models" / "model.pt").write_bytes((wider / "models" / "model.pt").read_bytes())
    with pytest.raises(ConfigError, match="shape mismatch"):
        load_model(mismatched)

    missing_keys = write_run_dir(tmp_path / "missing_keys")
    state = torch.load(run_dir / "models" / "model.pt", weights_only=True)
    torch.save({k: v for i, (k, v) in enumerate(state.items()) if i > 0}, missing_keys / "models" / "model.pt")
    with pytest.raises(ConfigError, match="missing key"):
        load_model(missing_keys)


def test_bad_device_is_a_config_error(run_dir):
    with pytest.raises(ConfigError, match="device"):
        load_model(run_dir, device="tpu:7")


def test_a_model_writes_only_its_own_tasks_conventions() -> None:
    from pipeline.inference.model import OUTPUT_CONVENTIONS, check_output_convention
    from pipeline.core.errors import ConfigError
    from pipeline.tasks.task import DEFAULT_TASK, get_task

    assert "brats2024-ped" in OUTPUT_CONVENTIONS and check_output_convention("brats2024-ped", get_task("brats2024-ped")) == "brats2024-ped"
    with pytest.raises(ConfigError, match="task brats-glioma does not write 'brats2024-ped'; choose one of auto, brats2017"):
        check_output_convention("brats2024-ped", DEFAULT_TASK)
