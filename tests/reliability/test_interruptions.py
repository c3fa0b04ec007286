"""Interruptions: SIGKILL during preprocessing, training and export, then the same command again.

The rerun resumes and ends with exactly what an uninterrupted run gives (CPU, determinism on).
Every file is written atomically, which a static check of the package also enforces.
"""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from cli_runs import REPO, cli, kill_when_paused, single_threaded, train_args
from failure_checks import files_under, leftover_temporaries, same_files

from pipeline.core.errors import InputError
from pipeline.preprocessing.cache import load_case

# ----------------------------------------------------------------------------- preprocessing


@pytest.mark.slow
@pytest.mark.parametrize("pause_at", ["write:image.npy:3", "write:meta.json:2"])
def test_preprocess_killed_mid_write_resumes_to_the_same_cache(
    pause_at: str, pristine_datalist: Path, pristine_cache: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    args = ["preprocess", "--datalist", pristine_datalist, "--cache", cache, "--no-progress"]
    printed = kill_when_paused(args, pause_at)
    interrupted = Path(printed.split("PAUSED ", 1)[1].split(" written", 1)[0]).parent
    with pytest.raises(InputError):  # the case being written when killed does not pass as complete
        load_case(cache, interrupted.name)
    assert leftover_temporaries(interrupted)  # the kill did leave a temporary file behind

    result = cli(*args)
    assert result.exit_code == 0, result.output
    done = int(pause_at.rsplit(":", 1)[1]) - 1
    assert f"{4 - done} case(s) preprocessed, {done} already cached" in result.output
    same_files(pristine_cache, cache)
    assert sorted(p.relative_to(cache) for p in files_under(cache)) == sorted(p.relative_to(pristine_cache) for p in files_under(pristine_cache))
    assert not leftover_temporaries(cache)


# ----------------------------------------------------------------------------- training

EPOCHS = 2  # 2 iterations per epoch with the tiny settings


@pytest.fixture(scope="module")
def uninterrupted_run(pristine_datalist: Path, pristine_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-epoch tiny training run, single-threaded like the interrupted subprocesses."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    with single_threaded():
        result = cli(*train_args(pristine_datalist, pristine_cache, out, epochs=EPOCHS))
    assert result.exit_code == 0, result.output
    return out


def _assert_same_tensors(first: object, second: object, where: str) -> None:
    if isinstance(first, torch.Tensor):
        assert isinstance(second, torch.Tensor) and torch.equal(first, second), where
    elif isinstance(first, dict):
        assert isinstance(second, dict) and set(first) == set(second), where
        for key in first:
            _assert_same_tensors(first[key], second[key], f"{where}.{key}")
    elif isinstance(first, (list, tuple)):
        assert len(first) == len(second), where  # type: ignore[arg-type]
        for index, (a, b) in enumerate(zip(first, second)):  # type: ignore[call-overload]
            _assert_same_tensors(a, b, f"{where}[{index}]")
    else:
        assert first == second, where


def assert_same_training(run: Path, reference: Path) -> None:
    """The final full state and the best weights of two runs are identical."""
    latest, expected = (torch.load(r / "models" / "latest.pt", weights_only=True) for r in (run, reference))
    assert latest["epoch"] == expected["epoch"] == EPOCHS
    for key in ("network", "optimizer", "lr_scheduler", "iteration", "best_metric", "best_metric_epoch"):
        _assert_same_tensors(latest[key], expected[key], key)
    best, expected_best = (torch.load(r / "models" / "model.pt", weights_only=True) for r in (run, reference))
    _assert_same_tensors(best, expected_best, "model.pt")
    assert not leftover_temporaries(run)


@pytest.mark.slow
@pytest.mark.parametrize(
    "pause_at",
    [
        "iteration:1",  # mid-epoch 1: no checkpoint yet, the same command starts over
        "iteration:3",  # mid-epoch 2: resumes from the epoch-1 checkpoint
        "write:latest.pt:2",  # while writing the epoch-2 checkpoint: resumes from the epoch-1 one
    ],
)
def test_training_killed_resumes_to_the_same_weights(
    pause_at: str, pristine_datalist: Path, pristine_cache: Path, uninterrupted_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = train_args(pristine_datalist, pristine_cache, out, epochs=EPOCHS)
    kill_when_paused(args, pause_at)
    latest = out / "models" / "latest.pt"
    if pause_at == "iteration:1":
        assert not latest.exists()
        rerun = args
    else:
        saved = torch.load(latest, weights_only=True)
        assert saved["epoch"] == 1  # the checkpoint left behind is the complete one of epoch 1
        # the same command resumes by itself; --resume says so explicitly
        rerun = args if pause_at == "iteration:3" else [*args, "--resume"]
    with single_threaded():
        result = cli(*rerun)
    assert result.exit_code == 0, result.output
    assert pause_at == "iteration:1" or "resuming from" in result.output
    assert_same_training(out, uninterrupted_run)


# ----------------------------------------------------------------------------- export


def _predict_args(model: Path, input_path: Path, out: Path) -> list[str]:
    return ["predict", "--model", str(model), "--input", str(input_path), "--out", str(out), "--no-progress"]


@pytest.mark.slow
def test_predict_killed_while_exporting_reruns_to_the_same_files(pristine_cohort: Path, trained_run: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    with single_threaded():
        result = cli(*_predict_args(trained_run, pristine_cohort, reference))
    assert result.exit_code == 0, result.output
    out = tmp_path / "predictions"
    kill_when_paused(_predict_args(trained_run, pristine_cohort, out), "write:_seg.nii.gz:3")
    written = sorted(p.name for p in out.glob("*_seg.nii.gz"))
    assert len(written) == 2 and leftover_temporaries(out)  # two complete files, the third one only as a temporary
    for name in written:  # what was renamed into place is complete
        assert np.array_equal(np.asarray(nib.load(out / name).dataobj), np.asarray(nib.load(reference / name).dataobj))

    with single_threaded():
        result = cli(*_predict_args(trained_run, pristine_cohort, out))
    assert result.exit_code == 0, result.output
    segmentations = sorted(p.name for p in reference.glob("*_seg.nii.gz"))
    assert len(segmentations) == 4
    same_files(reference, out, [*segmentations, *(p.name for p in reference.glob("*.ctbl"))])
    manifests = [json.loads((folder / "predictions.json").read_text()) for folder in (reference, out)]
    for manifest in manifests:
        for entry in manifest["cases"]:
            entry.pop("seconds")
    assert manifests[0]["cases"] == manifests[1]["cases"]
    assert not leftover_temporaries(out)


# ----------------------------------------------------------------------------- atomic writes

#: Calls that write a file. Outside :mod:`pipeline.core.io` each must write into the temporary path of
#: a ``with atomic_path(...) as tmp`` block. Logs (logging.FileHandler, TensorBoard's SummaryWriter)
#: are append-only records, not results, and are not checked.
_WRITING_ATTRIBUTES = {
    "save",
    "savez",
    "savez_compressed",
    "savefig",
    "savetxt",
    "to_csv",
    "to_json",
    "to_parquet",
    "to_pickle",
    "to_filename",
    "to_file",
    "write_text",
    "write_bytes",
    "tofile",
    "dump",
    "imwrite",
    "imsave",
    "WriteImage",
}
#: Functions of these modules that create or move files.
_WRITING_MODULE_FUNCTIONS = {"shutil": {"copy", "copy2", "copyfile", "copytree", "move"}, "os": {"rename", "replace"}}


def _writes_in(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, call) of every file write in ``tree`` that is not inside a ``with atomic_path(...) as <name>`` block."""
    problems: list[tuple[int, str]] = []

    def visit(node: ast.AST, inside_atomic: bool) -> None:
        if isinstance(node, (ast.With, ast.AsyncWith)):
            # atomic_path's temporary file, or a private scratch folder that is deleted afterwards
            inside_atomic = inside_atomic or any(
                isinstance(item.context_expr, ast.Call)
                and getattr(item.context_expr.func, "id", getattr(item.context_expr.func, "attr", None)) in ("atomic_path", "TemporaryDirectory")
                for item in node.items
            )
        if isinstance(node, ast.Call) and not inside_atomic:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "open":
                mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
                if isinstance(func, ast.Attribute) and not isinstance(func.value, ast.Name):
                    mode = node.args[0] if node.args else mode  # Path(...).open(mode)
                if mode is not None and not (isinstance(mode, ast.Constant) and set(str(mode.value)) <= set("rbt")):
                    problems.append((node.lineno, ast.unparse(node)))
            elif isinstance(func, ast.Attribute) and name in _WRITING_ATTRIBUTES:
                problems.append((node.lineno, ast.unparse(node)))
            elif isinstance(func, ast.Attribute) and name in _WRITING_MODULE_FUNCTIONS.get(getattr(func.value, "id", ""), ()):
                problems.append((node.lineno, ast.unparse(node)))
        for child in ast.iter_child_nodes(node):
            visit(child, inside_atomic)

    visit(tree, False)
    return problems


def test_static_check_finds_plain_writes() -> None:
    """The check below does catch the usual ways of writing a file outside an atomic block."""
    code = (
        "np.save(path, array)\ntorch.save(state, path)\nnib.save(image, path)\nopen(path, 'w').write(text)\n"
        "Path(path).write_text(text)\nframe.to_csv(path)\nfigure.savefig(path)\nos.replace(a, b)\n"
        "with atomic_path(path) as tmp:\n    np.save(tmp, array)\nopen(path, 'rb').read()\ntext.replace('a', 'b')\n"
        "with tempfile.TemporaryDirectory() as scratch:\n    torch.save(state, scratch + '/x.pt')\n"
    )
    assert [line for line, _ in _writes_in(ast.parse(code))] == [1, 2, 3, 4, 5, 6, 7, 8]


#: A write that is atomic through its caller (into the caller's scratch folder, renamed into place by
#: the caller) says so on its line: ``# atomic: <how>``.
_ATOMIC_THROUGH_CALLER = re.compile(r"#\s*atomic:\s*\S")


def test_every_output_is_written_atomically() -> None:
    """No module writes outputs with plain open(..., 'w') / np.save / torch.save / nib.save outside pipeline.core.io's atomic writers."""
    offenders = []
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        if path.relative_to(REPO).as_posix() == "pipeline/core/io.py":
            continue
        source = path.read_text()
        lines = source.splitlines()
        for line, call in _writes_in(ast.parse(source, filename=str(path))):
            if not _ATOMIC_THROUGH_CALLER.search(lines[line - 1]):
                offenders.append(f"{path.relative_to(REPO)}:{line}: {call}")
    advice = (
        "write these through pipeline.core.io (atomic_path, write_json, save_npy, save_nifti), or, for a write into "
        "a scratch folder the caller renames into place, say so on the line with '# atomic: <how>':\n"
    )
    assert not offenders, advice + "\n".join(offenders)


def test_atomic_write_keeps_the_old_file_on_failure_and_gives_normal_permissions(tmp_path: Path) -> None:
    from pipeline.core.errors import PipelineError
    from pipeline.core.io import atomic_path, write_json

    target = tmp_path / "summary.json"
    write_json(target, {"version": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"version": 2, "trunc')
        raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"version": 1} and not leftover_temporaries(tmp_path)
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(PipelineError, match="cannot write"):
        write_json(tmp_path / "summary.json" / "inside_a_file.json", {})


def test_atomic_write_leaves_the_temporary_of_a_running_writer(tmp_path: Path) -> None:
    """Two processes writing one file (parts of a run sharing a cache) do not delete each other's temporary; a dead writer's is removed."""
    import subprocess
    import sys

    from pipeline.core.io import write_json

    target = tmp_path / "cache.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stale = tmp_path / f".cache.json.{int(dead.stdout)}.abcd1234.tmp"
    legacy = tmp_path / ".cache.json.efgh5678.tmp"
    running = tmp_path / f".cache.json.{os.getppid()}.ijkl9012.tmp"
    for path in (stale, legacy, running):
        path.write_text("partial")
    write_json(target, {"cases": []})
    assert json.loads(target.read_text()) == {"cases": []}
    assert leftover_temporaries(tmp_path) == [running]
