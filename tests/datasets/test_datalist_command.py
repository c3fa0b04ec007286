import json

import numpy as np
from case_writers import write_nifti
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.datalist import load_datalist


def _run(*args):
    return CliRunner().invoke(main, ["datalist", *map(str, args), "--no-progress"])


def test_datalist_command_writes_a_loadable_list(legacy_root, tmp_path):
    out = tmp_path / "lists" / "brats.json"
    result = _run("--data-root", legacy_root, "--out", out, "--folds", 3, "--test-fraction", 0.3, "--seed", 4)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{out}: 4 training, 3 validation, 3 test, 1 unlabelled (brats2021, 3 folds)\n"
    payload = json.loads(out.read_text())
    assert (payload["num_folds"], payload["seed"], payload["test_fraction"]) == (3, 4, 0.3)
    assert len(load_datalist(out).cases("all")) == 10


def test_same_options_give_the_same_file(legacy_root, tmp_path):
    first, second = tmp_path / "a" / "l.json", tmp_path / "b" / "l.json"
    assert _run("--data-root", legacy_root, "--out", first, "--seed", 1).exit_code == 0
    assert _run("--data-root", legacy_root, "--out", second, "--seed", 1, "--workers", 2).exit_code == 0
    assert first.read_bytes() == second.read_bytes()


def test_a_bad_case_fails_with_the_file_named_and_writes_nothing(legacy_root, tmp_path):
    bad = legacy_root / "BraTS2021_00009" / "BraTS2021_00009_flair.nii.gz"
    write_nifti(bad, np.zeros((8, 8, 6), dtype=np.int16))
    out = tmp_path / "lists" / "brats.json"
    result = _run("--data-root", legacy_root, "--out", out)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == f"error: {bad}: image is entirely zero"
    assert "1 problem(s) in 1 of 11 case(s); nothing was written" in result.stderr
    assert "Traceback" not in result.output
    assert not out.exists() and not out.parent.exists()


def test_skip_bad_leaves_the_case_out(legacy_root, tmp_path):
    (legacy_root / "BraTS2021_00009" / "BraTS2021_00009_t1.nii.gz").unlink()
    out = tmp_path / "brats.json"
    result = _run("--data-root", legacy_root, "--out", out, "--skip-bad")
    assert result.exit_code == 0, result.output
    ids = {r.case_id for s in ("all", "unlabelled") for r in load_datalist(out).cases(s)}
    assert "BraTS2021_00009" not in ids and len(ids) == 10


def test_resection_cavity_flag(tmp_path, cases):
    cases.brats2023(tmp_path / "d", "BraTS-MET-00001-000", labels=(0, 3, 4))
    cases.brats2023(tmp_path / "d", "BraTS-MET-00002-000")
    out = tmp_path / "met.json"
    refused = _run("--data-root", tmp_path / "d", "--out", out)
    assert refused.exit_code == 1 and "--map-resection-cavity" in refused.stderr and not out.exists()
    accepted = _run("--data-root", tmp_path / "d", "--out", out, "--map-resection-cavity")
    assert accepted.exit_code == 0, accepted.output
    assert json.loads(out.read_text())["release"] == "brats2023-met"


def test_missing_empty_and_unrecognisable_roots_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "other" / "patient1").mkdir(parents=True)
    for root, message in [
        (tmp_path / "absent", "data root not found"),
        (tmp_path / "empty", "data root is empty"),
        (tmp_path / "other", "no recognisable case found"),
    ]:
        result = _run("--data-root", root, "--out", tmp_path / "l.json")
        assert result.exit_code == 1
        assert result.stderr.startswith(f"error: {root}: {message}") and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "l.json").exists()


def test_bad_options_are_usage_errors(legacy_root, tmp_path):
    for option, value in [("--folds", 0), ("--test-fraction", 1), ("--workers", 0)]:
        result = _run("--data-root", legacy_root, "--out", tmp_path / "l.json", option, value)
        assert result.exit_code == 2 and option in result.stderr
    assert not (tmp_path / "l.json").exists()
