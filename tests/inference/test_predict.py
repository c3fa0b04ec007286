"""The predict command: any input form, exact input geometry, world-space consistency, options, real cases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from nibabel.orientations import apply_orientation, io_orientation
from case_writers import LAYOUTS, write_case, write_datalist, write_msd_case
from prediction_cases import assert_same_geometry, write_bundle_dir, write_run_dir

from pipeline.cli.main import main
from pipeline.inference.writers import parse_colour_table
from pipeline.inference.predict import predict, resolve_cases

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run_dir(tmp_path_factory.mktemp("predict") / "run")


@pytest.fixture(scope="module")
def layouts_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same case stored in every layout, one data root per layout."""
    root = tmp_path_factory.mktemp("layouts")
    for layout in LAYOUTS:
        write_case(root / layout, layout=layout)
    return root


def _canonical(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Voxels in the closest RAS order and the matching affine: the world-space view of a file."""
    image = nib.load(path)
    ornt = io_orientation(image.affine)
    return apply_orientation(np.asarray(image.dataobj), ornt), nib.as_closest_canonical(image).affine


@pytest.fixture(scope="module")
def layout_predictions(run_dir: Path, layouts_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("layout_predictions")
    for layout in LAYOUTS:
        predict(run_dir, layouts_root / layout / "BraTS2021_00001", out / layout, progress=False)
    return out


@pytest.mark.parametrize("layout", LAYOUTS)
def test_prediction_has_exactly_the_input_geometry(layout_predictions, layouts_root, layout):
    output = layout_predictions / layout / "BraTS2021_00001_seg.nii.gz"
    for modality in ("t1", "flair", "seg"):
        assert_same_geometry(output, layouts_root / layout / "BraTS2021_00001" / f"BraTS2021_00001_{modality}.nii.gz")
    image = nib.load(output)
    assert image.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(image.dataobj))) <= {0, 1, 2, 4}


def test_same_case_in_another_voxel_order_gives_the_same_segmentation_in_world_space(layout_predictions):
    reference, reference_affine = _canonical(layout_predictions / "ras" / "BraTS2021_00001_seg.nii.gz")
    assert len(np.unique(reference)) == 4  # the untrained network is not trivially constant
    for layout in ("lps", "permuted"):
        voxels, affine = _canonical(layout_predictions / layout / "BraTS2021_00001_seg.nii.gz")
        np.testing.assert_allclose(affine, reference_affine, atol=1e-5)
        np.testing.assert_array_equal(voxels, reference, err_msg=layout)
    # the oblique storage holds the LPS voxels under a rotated affine: same voxels, rotated world
    oblique = np.asarray(nib.load(layout_predictions / "oblique" / "BraTS2021_00001_seg.nii.gz").dataobj)
    lps = np.asarray(nib.load(layout_predictions / "lps" / "BraTS2021_00001_seg.nii.gz").dataobj)
    np.testing.assert_array_equal(oblique, lps)


def test_colour_table_and_manifest(layout_predictions):
    folder = layout_predictions / "lps"
    table = parse_colour_table((folder / "brats_brats2017.ctbl").read_text())
    assert {value: name for value, (name, _) in table.items()} == {0: "background", 1: "NCR/NET", 2: "ED", 4: "ET"}
    manifest = json.loads((folder / "predictions.json").read_text())
    assert manifest["cases"][0]["case_id"] == "BraTS2021_00001" and manifest["model"]["mode"] == "2.5d"


def test_inputs_datalist_data_root_msd_and_2023_naming(run_dir, tmp_path):
    root = tmp_path / "data"
    write_case(root, "BraTS2021_00001", layout="lps")
    write_case(root, "BraTS2021_00002", layout="ras", seed=1, with_label=False)
    datalist = write_datalist(tmp_path / "list.json", root, {"BraTS2021_00001": "test", "BraTS2021_00002": "unlabelled"})
    assert [r.case_id for r in resolve_cases(datalist)] == ["BraTS2021_00001", "BraTS2021_00002"]
    assert [r.case_id for r in resolve_cases(root)] == ["BraTS2021_00001", "BraTS2021_00002"]
    summary = predict(run_dir, datalist, tmp_path / "from_list", progress=False)
    assert sorted(summary.segmentations) == ["BraTS2021_00001", "BraTS2021_00002"]
    assert_same_geometry(summary.segmentations["BraTS2021_00002"], root / "BraTS2021_00002" / "BraTS2021_00002_t1.nii.gz")

    new = write_case(tmp_path / "gli", "BraTS-GLI-00007-000", layout="lps", with_label=False, naming="brats2023")
    renamed = new.rename(tmp_path / "gli" / "new_case")  # a folder not named after its case
    summary = predict(run_dir, renamed, tmp_path / "gli_out", submission_names=True, progress=False)
    output = summary.segmentations["BraTS-GLI-00007-000"]
    assert output.name == "BraTS-GLI-00007-000.nii.gz"
    assert set(np.unique(np.asarray(nib.load(output).dataobj))) <= {0, 1, 2, 3}
    assert (tmp_path / "gli_out" / "brats_brats2023.ctbl").is_file()
    assert_same_geometry(output, renamed / "BraTS-GLI-00007-000-t1n.nii.gz")

    msd_image = write_msd_case(tmp_path / "Task01_BrainTumour")
    summary = predict(run_dir, msd_image, tmp_path / "msd_out", progress=False)
    output = summary.segmentations["BRATS_001"]
    assert_same_geometry(output, msd_image)
    assert nib.load(output).ndim == 3 and (tmp_path / "msd_out" / "brats_msd.ctbl").is_file()
    # the same voxels as the BraTS-2021 copy of the case (both stored LPS), in MSD's labels
    msd_labels = np.asarray(nib.load(output).dataobj)
    brats = np.asarray(nib.load(tmp_path / "from_list" / "BraTS2021_00001_seg.nii.gz").dataobj)
    np.testing.assert_array_equal(msd_labels, np.select([brats == 1, brats == 2, brats == 4], [2, 1, 3], 0))


def test_label_convention_and_probabilities(run_dir, layouts_root, tmp_path):
    from pipeline.inference.model import load_model
    from pipeline.inference.postprocess import PostProcessing

    case = layouts_root / "lps" / "BraTS2021_00001"
    model = load_model(run_dir)
    model.postprocessing = PostProcessing(task=model.task)  # none: every label is the argmax of the written probabilities
    summary = predict(model, case, tmp_path / "out", label_convention="internal", probabilities=True, progress=False)
    labels = np.asarray(nib.load(summary.segmentations["BraTS2021_00001"]).dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    probabilities = nib.load(summary.probabilities["BraTS2021_00001"])
    assert probabilities.shape == (*labels.shape, 4)
    np.testing.assert_array_equal(probabilities.affine, nib.load(case / "BraTS2021_00001_t1.nii.gz").affine)
    values = probabilities.get_fdata()
    np.testing.assert_allclose(values.sum(-1), 1.0, atol=4 * 0.5 / 255)
    chosen = np.take_along_axis(values, labels[..., None].astype(np.intp), axis=-1)[..., 0]
    assert (values.max(-1) - chosen).max() <= 1 / 255 + 1e-6  # the argmax, to 8-bit precision
    manifest = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert manifest["cases"][0]["probability_channels"] == ["background", "NEC", "ED", "ET"]


def test_cli_predict_and_errors(run_dir, layouts_root, tmp_path):
    case = layouts_root / "ras" / "BraTS2021_00001"
    result = CliRunner().invoke(main, ["predict", "--model", str(run_dir), "--input", str(case), "--out", str(tmp_path / "out"), "--tta", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "1 case(s) segmented" in result.output
    assert json.loads((tmp_path / "out" / "predictions.json").read_text())["model"]["tta"] is True
    assert_same_geometry(tmp_path / "out" / "BraTS2021_00001_seg.nii.gz", case / "BraTS2021_00001_t2.nii.gz")

    (tmp_path / "not_a_model").mkdir()
    result = CliRunner().invoke(main, ["predict", "--model", str(tmp_path / "not_a_model"), "--input", str(case), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and result.output.startswith("error: ") and "neither a run folder" in result.output
    empty = tmp_path / "empty_input"
    empty.mkdir()
    result = CliRunner().invoke(main, ["predict", "--model", str(run_dir), "--input", str(empty), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "error: " in result.output
    result = CliRunner().invoke(main, ["predict", "--model", str(run_dir), "--input", str(case), "--out", str(tmp_path / "x"), "--device", "cuda:9"])
    assert result.exit_code == 1 and "device" in result.output


@pytest.mark.parametrize("layout", ["ras", "lps"])
def test_cli_predict_with_an_ensemble_writes_uncertainty_maps_on_the_input_grid(run_dir, layouts_root, tmp_path, layout):
    other = write_run_dir(tmp_path / "other", seed=1)
    case = layouts_root / layout / "BraTS2021_00001"
    out = tmp_path / "out"
    args = ["predict", "--model", str(run_dir), "--model", str(other), "--input", str(case), "--out", str(out), "--tta", "--uncertainty", "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    for name in ("uncertainty", "disagreement"):
        path = out / f"BraTS2021_00001_{name}.nii.gz"
        assert_same_geometry(path, case / "BraTS2021_00001_t1.nii.gz")
        values = np.asarray(nib.load(path).dataobj)
        assert values.dtype == np.float32 and values.min() >= 0 and 0 < values.max() <= 1
    manifest = json.loads((out / "predictions.json").read_text())
    assert [member["source"] for member in manifest["model"]["ensemble"]] == [str(run_dir), str(other)]
    entry = manifest["cases"][0]
    assert entry["uncertainty_passes"] == 8  # 4 mirrored passes per member
    assert entry["uncertainty_maps"] == ["BraTS2021_00001_uncertainty.nii.gz", "BraTS2021_00001_disagreement.nii.gz"]
    assert 0 < entry["uncertainty_scores"]["uncertainty_entropy_WT"] <= 1 and entry["uncertainty_scores"]["uncertainty_disagreement_WT"] > 0


@pytest.mark.slow
def test_monai_bundle_run_inference_of_a_checkpoint_list_with_uncertainty(run_dir, layouts_root, tmp_path):
    other = write_run_dir(tmp_path / "other", seed=1)
    weights = [str(run_dir / "models" / "model.pt"), str(other / "models" / "model.pt")]
    bundle = write_bundle_dir(tmp_path / "bundle", checkpoint=weights)
    case = layouts_root / "lps" / "BraTS2021_00001"
    command = [
        sys.executable, "-m", "monai.bundle", "run", "inference",
        "--config_file", str(bundle / "configs" / "inference.yaml"), "--bundle_root", str(bundle),
        "--input", str(case), "--output_dir", str(tmp_path / "out"), "--progress", "False", "--uncertainty", "True",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    manifest = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [member["source"] for member in manifest["model"]["ensemble"]] == weights
    assert set(manifest["cases"][0]["uncertainty_scores"]) == {"uncertainty_entropy_WT", "uncertainty_disagreement_WT"}
    assert_same_geometry(tmp_path / "out" / "BraTS2021_00001_disagreement.nii.gz", case / "BraTS2021_00001_t1.nii.gz")


@pytest.mark.slow
def test_monai_bundle_run_inference_matches_predict(run_dir, layouts_root, layout_predictions, tmp_path):
    bundle = write_bundle_dir(tmp_path / "bundle", weights=run_dir / "models" / "model.pt")
    case = layouts_root / "lps" / "BraTS2021_00001"
    command = [
        sys.executable, "-m", "monai.bundle", "run", "inference",
        "--config_file", str(bundle / "configs" / "inference.yaml"),
        "--bundle_root", str(bundle), "--input", str(case), "--output_dir", str(tmp_path / "out"), "--progress", "False",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    produced = np.asarray(nib.load(tmp_path / "out" / "BraTS2021_00001_seg.nii.gz").dataobj)
    expected = np.asarray(nib.load(layout_predictions / "lps" / "BraTS2021_00001_seg.nii.gz").dataobj)
    # Same code, another process: only near-tied voxels of the untrained network may flip with
    # floating-point summation order (thread count, deterministic-algorithm settings).
    assert produced.shape == expected.shape and np.mean(produced != expected) < 1e-3


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.parametrize("case_id", ["BraTS2021_00006", "Brats18_2013_2_1", "BraTS-GLI-00001-000"])
def test_real_cases_come_back_with_exactly_their_geometry(real_brats_dir, run_dir, tmp_path, case_id):
    summary = predict(run_dir, real_brats_dir / case_id, tmp_path, progress=False)
    output = summary.segmentations[case_id]
    images = sorted(p for p in (real_brats_dir / case_id).glob("*.nii.gz") if not p.name.endswith("seg.nii.gz"))
    assert len(images) == 4
    for source in images:
        assert_same_geometry(output, source)
    for truth in (real_brats_dir / case_id).glob("*seg.nii.gz"):  # its headers may differ (Brats18: qform code 1, not 2)
        np.testing.assert_array_equal(nib.load(output).affine, nib.load(truth).affine)
    image = nib.load(output)
    assert image.shape == (240, 240, 155) and image.get_data_dtype() == np.uint8
    expected = {0, 1, 2, 3} if case_id.startswith("BraTS-GLI") else {0, 1, 2, 4}
    assert set(np.unique(np.asarray(image.dataobj))) <= expected
