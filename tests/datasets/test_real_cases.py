"""The real BraTS cases in ../shared/data/real_brats: three releases' naming in one folder, one case unlabelled."""

import json

import pytest
from click.testing import CliRunner

from pipeline.cli.main import main
from pipeline.datasets.datalist import load_datalist
from pipeline.datasets import discover, discover_case, validate_case

pytestmark = pytest.mark.real_data

EXPECTED = {
    "BraTS-GLI-00001-000": ("brats2023-gli", "brats2023", False),
    "BraTS2021_00006": ("brats2021", "brats2017", True),
    "Brats18_2013_2_1": ("brats2018", "brats2017", True),
}


def test_the_real_folder_is_read_case_by_case(real_brats_dir):
    dataset = discover(real_brats_dir)
    assert dataset.release == "mixed" and dataset.label_convention == "brats2017"
    assert {r.case_id: (dataset.releases[r.case_id], r.label_convention, r.label is not None) for r in dataset.records} == EXPECTED
    assert dataset.problems == {}
    assert f"{real_brats_dir.resolve() / 'README.md'}: not a case file; ignored" in dataset.warnings


def test_every_real_case_passes_validation(real_brats_dir):
    for record in discover(real_brats_dir).records:
        assert validate_case(record) == [], record.case_id


def test_real_cases_one_by_one(real_brats_dir):
    for case_id, (_, convention, labelled) in EXPECTED.items():
        record = discover_case(real_brats_dir / case_id)
        assert record.case_id == case_id and record.label_convention == convention
        assert (record.label is not None) == labelled
        assert all(p.is_file() for p in record.images)


def test_datalist_command_on_the_real_cases(real_brats_dir, tmp_path):
    out = tmp_path / "real.json"
    result = CliRunner().invoke(main, ["datalist", "--data-root", str(real_brats_dir), "--out", str(out), "--seed", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert payload["data_root"] == str(real_brats_dir.resolve())
    assert payload["release"] == "mixed" and payload["num_folds"] == 2
    assert [e["case_id"] for e in payload["unlabelled"]] == ["BraTS-GLI-00001-000"]
    assert payload["unlabelled"][0]["label_convention"] == "brats2023"
    assert payload["unlabelled"][0]["image"][3] == "BraTS-GLI-00001-000/BraTS-GLI-00001-000-t2f.nii.gz"
    datalist = load_datalist(out)
    labelled = datalist.cases("all")
    assert sorted(r.case_id for r in labelled) == ["BraTS2021_00006", "Brats18_2013_2_1"]
    assert all(r.label.is_file() and r.label_convention == "brats2017" for r in labelled)
    assert datalist.cases("unlabelled")[0].label_convention == "brats2023"
