"""The ``prepare`` command: raw scans in, a prepared case folder out that ``predict --input`` reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import SimpleITK as sitk
from click.testing import CliRunner

from pipeline.cli.main import main


def test_prepare_command_writes_a_case_that_predict_reads(tmp_path: Path, case_dir: Path, run_dir: Path) -> None:
    prepared = tmp_path / "new_patient"
    result = CliRunner().invoke(main, ["prepare", "--input", str(case_dir), "--out", str(prepared), "--skip-registration", "--skip-skull-strip"])
    assert result.exit_code == 0, result.output
    assert "7 files (resampled only, 1 mm on the t1ce grid); next: brats-pipeline predict --input" in result.output
    assert (prepared / "new_patient_flair_to_t1ce.tfm").is_file() and not (prepared / "new_patient_brain_mask.nii.gz").exists()

    result = CliRunner().invoke(main, ["predict", "--model", str(run_dir), "--input", str(prepared), "--out", str(tmp_path / "preds"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output  # the mask and transforms beside the contrasts are not taken for stray files
    (segmentation,) = (tmp_path / "preds").glob("*.nii.gz")
    written = sitk.ReadImage(str(segmentation))
    reference = sitk.ReadImage(str(prepared / "new_patient_t1ce.nii.gz"))
    assert written.GetSize() == reference.GetSize() and written.GetOrigin() == pytest.approx(reference.GetOrigin())


def test_prepare_command_takes_four_files_and_a_reference_and_refuses_other_counts(tmp_path: Path, case_dir: Path) -> None:
    files = [str(next(case_dir.glob(f"*_{c}.nii.gz"))) for c in ("t1", "t1ce", "t2", "flair")]
    arguments = [argument for path in files for argument in ("--input", path)]
    result = CliRunner().invoke(main, ["prepare", *arguments, "--out", str(tmp_path / "p"), "--reference", "t1", "--skip-registration", "--skip-skull-strip"])
    assert result.exit_code == 0, result.output
    assert "on the t1 grid" in result.output and (tmp_path / "p" / "p_t1ce_to_t1.tfm").is_file()
    result = CliRunner().invoke(main, ["prepare", *arguments[:4], "--out", str(tmp_path / "q")])
    assert result.exit_code == 1 and result.output.startswith("error: --input: give one case folder or the four contrast files")
    assert not (tmp_path / "q").exists()
    result = CliRunner().invoke(main, ["prepare", *arguments, "--out", str(tmp_path / "r"), "--reference", "pd"])
    assert result.exit_code == 2 and "'pd' is not one of" in result.output
