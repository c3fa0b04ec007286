"""The bundle's shipped pretrained model: the weights are small, their hash is the recorded one, they fit the bundle's
network, and they segment real BraTS cases through the command line and through ``monai.bundle run inference``."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.core.paths import BUNDLE_DIR, REPO_ROOT
from pipeline.inference.model import SegmentationModel, load_model

WEIGHTS = BUNDLE_DIR / "models" / "model.pt"
METADATA = BUNDLE_DIR / "configs" / "metadata.json"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
#: A patient that chose the shipped model's checkpoint but never trained it (the other is Brats18_CBICA_AOP_1).
VALIDATION_CASE = SHARED_DATA / "real_brats_train" / "BraTS2021_00000"
#: The unlabelled BraTS 2023 case: never seen in training.
UNSEEN_CASE = SHARED_DATA / "real_brats" / "BraTS-GLI-00001-000"


def _needs(case: Path) -> None:
    if not case.is_dir():
        pytest.skip(f"real BraTS case not found at {case} (the shared data is absent)")


def test_the_weights_are_small_and_their_hash_is_the_recorded_one() -> None:
    assert WEIGHTS.is_file(), "the bundle ships models/model.pt"
    assert WEIGHTS.stat().st_size < 16 * 2**20
    recorded = json.loads(METADATA.read_text())["model_sha256"]
    assert recorded == hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()


def test_the_weights_fit_the_bundle_network() -> None:
    model = load_model(BUNDLE_DIR)  # the hash is checked and the state dict loaded strictly
    assert isinstance(model, SegmentationModel) and model.task.name == "brats-glioma"


@pytest.mark.real_data
@pytest.mark.slow
def test_the_pretrained_model_segments_a_real_patient_from_the_command_line(tmp_path: Path) -> None:
    _needs(VALIDATION_CASE)
    result = CliRunner().invoke(main, ["predict", "--model", str(BUNDLE_DIR), "--input", str(VALIDATION_CASE), "--out", str(tmp_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    truth_image = nib.load(VALIDATION_CASE / "BraTS2021_00000_seg.nii.gz")
    prediction_image = nib.load(tmp_path / "BraTS2021_00000_seg.nii.gz")
    assert prediction_image.shape == truth_image.shape
    np.testing.assert_allclose(prediction_image.affine, truth_image.affine)
    prediction, truth = np.asarray(prediction_image.dataobj), np.asarray(truth_image.dataobj)
    assert set(np.unique(prediction)) <= {0, 1, 2, 4}  # the case's own release convention (BraTS 2021)
    whole_tumour = 2 * np.logical_and(prediction > 0, truth > 0).sum() / ((prediction > 0).sum() + (truth > 0).sum())
    assert whole_tumour > 0.8  # a flipped, shifted or mislabelled output scores far lower


@pytest.mark.real_data
@pytest.mark.slow
def test_monai_bundle_run_inference_segments_an_unseen_2023_case(tmp_path: Path) -> None:
    _needs(UNSEEN_CASE)
    command = [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", str(BUNDLE_DIR / "configs" / "inference.yaml"),
               "--bundle_root", str(BUNDLE_DIR), "--input", str(UNSEEN_CASE), "--output_dir", str(tmp_path), "--progress", "false"]  # fmt: skip
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    source = nib.load(next(UNSEEN_CASE.glob("*-t1c.nii.gz")))
    written = nib.load(tmp_path / "BraTS-GLI-00001-000_seg.nii.gz")
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine)
    labels = np.asarray(written.dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2, 3}  # BraTS 2023 labels
    assert 5_000 < np.count_nonzero(labels) < 500_000  # a tumour of a glioma's size was found (whole-tumour voxels at 1 mm)
