"""Security: no arbitrary pickles are loaded, no shell commands are built, case ids cannot escape the output folder."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runs import REPO, cli, train_args
from case_writers import case_file
from failure_checks import assert_one_line_error, checksums, files_under

from pipeline.core.errors import InputError
from pipeline.preprocessing.cache import load_case

PACKAGE = REPO / "pipeline"


class PlantsAFile:
    """Unpickling this object creates a file: what a malicious checkpoint or cache could run instead."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _malicious(marker: Path) -> PlantsAFile:
    payload = PlantsAFile()
    payload.marker = marker
    return payload


def _calls(path: Path) -> list[ast.Call]:
    return [node for node in ast.walk(ast.parse(path.read_text(), filename=str(path))) if isinstance(node, ast.Call)]


def _package_calls() -> list[tuple[Path, ast.Call]]:
    return [(path, call) for path in sorted(PACKAGE.rglob("*.py")) for call in _calls(path)]


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _where(path: Path, call: ast.Call) -> str:
    return f"{path.relative_to(REPO)}:{call.lineno}: {ast.unparse(call)}"


# ----------------------------------------------------------------------------- loading


def test_checkpoints_and_caches_are_never_unpickled_freely() -> None:
    """torch.load always with weights_only=True, np.load never with allow_pickle=True, no pickle/yaml.load/eval/exec."""
    problems = []
    torch_loads = []
    for path, call in _package_calls():
        text = ast.unparse(call.func)
        if text == "torch.load":
            torch_loads.append(path.name)
            flag = _keyword(call, "weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                problems.append(_where(path, call))
        elif text in ("np.load", "numpy.load"):
            flag = _keyword(call, "allow_pickle")
            if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                problems.append(_where(path, call))
        elif text in ("pickle.load", "pickle.loads", "cPickle.load", "dill.load", "joblib.load", "yaml.load", "yaml.unsafe_load", "eval", "exec"):
            problems.append(_where(path, call))
        elif text == "torch.jit.load" and not path.as_posix().endswith(("inference/model.py", "inference/export.py")):
            # TorchScript is code: only a bundle's own model.ts (trusted like its configs) or a just-exported file is loaded
            problems.append(_where(path, call))
    assert torch_loads == ["checkpoints.py"]  # the check does see the checkpoint reader, and every .pt is read through it
    assert not problems, "\n".join(problems)


def test_no_shell_commands() -> None:
    """No shell=True, os.system or os.popen: a path with spaces or ';' is never run as a command."""
    problems = []
    for path, call in _package_calls():
        text = ast.unparse(call.func)
        shell = _keyword(call, "shell")
        if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
            problems.append(_where(path, call))
        if text in ("os.system", "os.popen", "os.execl", "os.execlp", "os.spawnl", "commands.getoutput", "subprocess.getoutput"):
            problems.append(_where(path, call))
        if text.startswith("subprocess.") and call.args and not isinstance(call.args[0], (ast.List, ast.Tuple)):
            problems.append(_where(path, call))  # commands are argument lists, never strings
    assert not problems, "\n".join(problems)


def _pickled_checkpoint(path: Path, marker: Path, as_full_state: bool = False) -> None:
    state: dict = {"weight": torch.zeros(1), "hook": _malicious(marker)}
    torch.save({"network": state, "epoch": 1} if as_full_state else state, path)


def test_malicious_weights_are_refused(trained_run: Path, pristine_cohort: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    marker = tmp_path / "planted"
    weights = run / "models" / "model.pt"
    _pickled_checkpoint(weights, marker)
    torch.load(weights, weights_only=False)  # unpickled freely, the file does run code
    assert marker.exists()
    marker.unlink()
    out = tmp_path / "out"
    result = cli("predict", "--model", run, "--input", pristine_cohort / "BraTS2021_00001", "--out", out, "--no-progress")
    assert result.exit_code == 1
    assert_one_line_error(result.output, weights, "weights-only")
    assert not marker.exists() and not files_under(out)


def test_malicious_training_state_is_refused(trained_run: Path, pristine_datalist: Path, pristine_cache: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    marker = tmp_path / "planted"
    latest = run / "models" / "latest.pt"
    _pickled_checkpoint(latest, marker, as_full_state=True)
    result = cli(*train_args(pristine_datalist, pristine_cache, run, epochs=2), "--resume")
    assert result.exit_code == 1
    assert_one_line_error(result.output, latest, "not a loadable checkpoint")
    assert not marker.exists()


def test_pickled_cache_arrays_are_refused(pristine_cache: Path, pristine_datalist: Path, tmp_path: Path) -> None:
    cache = Path(shutil.copytree(pristine_cache, tmp_path / "cache"))
    marker = tmp_path / "planted"
    case_id = json.loads(pristine_datalist.read_text())["training"][0]["case_id"]
    image = cache / case_id / "image.npy"
    np.save(image, np.array([_malicious(marker)], dtype=object), allow_pickle=True)
    for mmap in (True, False):
        with pytest.raises(InputError, match="cannot read the cached arrays"):
            load_case(cache, case_id, mmap=mmap)
    result = cli(*train_args(pristine_datalist, cache, tmp_path / "run"))
    assert result.exit_code == 1
    assert_one_line_error(result.output, image, "")
    assert not marker.exists()


# ----------------------------------------------------------------------------- output paths


@pytest.mark.parametrize("case_id", ["../../evil", "/tmp/evil", "..", "a/b", ".hidden", "evil\nline"])
@pytest.mark.parametrize("command", ["preprocess", "predict", "evaluate"])
def test_case_ids_cannot_escape_the_output_folder(
    command: str, case_id: str, pristine_datalist: Path, trained_run: Path, tmp_path: Path
) -> None:
    payload = json.loads(pristine_datalist.read_text())
    payload["data_root"] = str(pristine_datalist.parent.joinpath(payload["data_root"]).resolve())
    payload["test"][0]["case_id"] = case_id
    datalist = tmp_path / "lists" / "bad_ids.json"
    datalist.parent.mkdir()
    datalist.write_text(json.dumps(payload))
    out = tmp_path / "a" / "b" / "out"
    if command == "preprocess":
        result = cli("preprocess", "--datalist", datalist, "--cache", out, "--no-progress")
    elif command == "predict":
        result = cli("predict", "--model", trained_run, "--input", datalist, "--out", out, "--no-progress")
    else:
        result = cli("evaluate", "--model", trained_run, "--datalist", datalist, "--out", out, "--no-progress", "--no-overlays")
    assert result.exit_code == 1
    assert_one_line_error(result.output, datalist, "not a safe file name")
    assert not files_under(tmp_path / "a") and not list(tmp_path.glob("**/evil*"))


def test_oddly_named_case_folders(pristine_cohort: Path, trained_run: Path, tmp_path: Path) -> None:
    """A folder that is no release's case name is ignored with a warning; a case folder with odd file names predicts inside --out."""
    root = Path(shutil.copytree(pristine_cohort, tmp_path / "data"))
    shutil.copytree(root / "BraTS2021_00001", root / "BraTS2021_00001; rm -rf ~")
    result = cli("datalist", "--data-root", root, "--out", tmp_path / "list.json", "--no-progress")
    assert result.exit_code == 0, result.output
    odd_folder = root / "BraTS2021_00001; rm -rf ~"
    assert any(line.startswith(f"warning: {odd_folder}: ") and line.endswith("ignored") for line in result.output.splitlines())
    listed = json.loads((tmp_path / "list.json").read_text())
    assert all(";" not in entry["case_id"] for split in ("training", "validation", "test") for entry in listed[split])

    odd = tmp_path / "new scan (copy)"
    odd.mkdir()
    for modality in ("t1", "t1ce", "t2", "flair"):
        shutil.copy(case_file(pristine_cohort / "BraTS2021_00001", modality), odd / f"patient 7 $(id)_{modality}.nii.gz")
    before = checksums(odd)
    out = tmp_path / "preds"
    result = cli("predict", "--model", trained_run, "--input", odd, "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    written = files_under(tmp_path)
    assert {p.name for p in written if p.parent == out} >= {"patient 7 $(id)_seg.nii.gz", "predictions.json"}
    assert all(p.is_relative_to(out) or p.is_relative_to(root) or p.is_relative_to(odd) or p.name == "list.json" for p in written)
    assert checksums(odd) == before


def test_model_configs_run_python_so_they_must_be_trusted(trained_run: Path, tmp_path: Path) -> None:
    """What the documentation warns about: loading a run or bundle folder evaluates the ``$`` expressions of its config.

    Weights are data (weights-only loading); configs are code. This test keeps that warning true:
    if configs ever stop running code, the warning (and this test) can go.
    """
    from pipeline.inference.model import load_model

    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    marker = tmp_path / "ran"
    config = json.loads((run / "inference.json").read_text())  # the run's inference config, which load_model reads
    config["network_def"]["dropout"] = f"$__import__('pathlib').Path({str(marker)!r}).touch() or 0.0"
    (run / "inference.json").write_text(json.dumps(config))
    load_model(run)
    assert marker.exists()
