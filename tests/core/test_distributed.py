"""Sharded runs: which cases a shard holds, --shard of predict/evaluate/preprocess and merge-shards, torchrun inference."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from case_writers import write_case, write_datalist
from click.testing import CliRunner
from prediction_cases import write_run_dir

from pipeline.cli.main import main
from pipeline.datasets.datalist import load_datalist
from pipeline.core.errors import ConfigError, InputError
from pipeline.evaluation.evaluate import evaluate
from pipeline.inference.predict import predict
from pipeline.preprocessing.prepare import preprocess_datalist
from pipeline.core.distributed import Shard, read_shards, shard_file, shard_positions
from pipeline.evaluation.shard_merge import merge_shards

REPO = Path(__file__).resolve().parents[2]

#: Five test cases listed out of id order, stored in four voxel layouts.
CASES = {"BraTS2021_00005": "lps", "BraTS2021_00003": "ras", "BraTS2021_00001": "oblique", "BraTS2021_00004": "permuted", "BraTS2021_00002": "lps"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread, as torchrun gives each process: float sums, hence borderline voxels, depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def datalist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sharding") / "data"
    for seed, (case_id, layout) in enumerate(CASES.items()):
        write_case(root, case_id, layout=layout, seed=seed)
    return write_datalist(root.parent / "list.json", root, {case_id: "test" for case_id in CASES})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run_dir(tmp_path_factory.mktemp("sharding_run") / "run")


@pytest.fixture(scope="module")
def whole(datalist: Path, run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An unsharded evaluation of the five cases, in one process: what sharded runs must reproduce."""
    out = tmp_path_factory.mktemp("whole")
    evaluate(run_dir, datalist, out, overlays=False, progress=False, echo=False)
    return out


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    return {path.name: np.asarray(nib.load(path).dataobj) for path in sorted(folder.glob("*.nii.gz"))}


def _without_seconds(manifest: Path) -> dict:
    payload = json.loads(manifest.read_text())
    for entry in payload["cases"]:
        entry.pop("seconds")
    return payload


# ---- which cases a shard holds -----------------------------------------------------------------
def test_shards_split_the_cases_by_sorted_id_whatever_their_order() -> None:
    ids = [f"case_{n:02d}" for n in (7, 3, 9, 1, 4, 8, 2, 6, 5, 0)]
    shards = [shard_positions(ids, Shard(k, 3)) for k in (1, 2, 3)]
    assert sorted(p for shard in shards for p in shard) == list(range(10))  # every case once
    assert [len(shard) for shard in shards] == [4, 3, 3]
    assert [ids[p] for p in shards[0]] == ["case_03", "case_09", "case_06", "case_00"]  # ids 0, 3, 6, 9 in the list's order
    assert all(shard == sorted(shard) for shard in shards)
    reordered = list(reversed(ids))
    assert {reordered[p] for p in shard_positions(reordered, Shard(1, 3))} == {ids[p] for p in shards[0]}
    assert shard_positions(ids, None) == list(range(10))
    assert shard_positions(ids, Shard(1, 1)) == list(range(10))
    assert shard_positions(ids[:2], Shard(3, 3)) == []  # more shards than cases: some hold none


@pytest.mark.parametrize("text", ["0/4", "5/4", "1/0", "2", "a/b", "-1/2", "1/2/3"])
def test_bad_shard_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="--shard"):
        Shard.parse(text)


@pytest.mark.parametrize("command", ["predict", "evaluate", "preprocess"])
def test_bad_shard_option_is_a_usage_error(command: str, tmp_path: Path) -> None:
    existing = str(REPO / "Makefile")
    args = {
        "predict": ["--model", str(tmp_path), "--input", existing, "--out", str(tmp_path / "out")],
        "evaluate": ["--model", str(tmp_path), "--datalist", existing, "--out", str(tmp_path / "out")],
        "preprocess": ["--datalist", existing, "--cache", str(tmp_path / "cache")],
    }[command]
    result = CliRunner().invoke(main, [command, *args, "--shard", "3/2"])
    assert result.exit_code == 2
    assert "Invalid value for '--shard': 3/2: K must be 1 to N" in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


# ---- --shard and merge-shards ------------------------------------------------------------------
def test_evaluate_shards_merge_into_the_unsharded_reports(datalist: Path, run_dir: Path, whole: Path, tmp_path: Path) -> None:
    sharded = tmp_path / "sharded"
    parts = [evaluate(run_dir, datalist, sharded, overlays=False, progress=False, echo=False, shard=f"{k}/2") for k in (1, 2)]
    assert [sorted(part.metrics["case_id"]) for part in parts] == [["BraTS2021_00001", "BraTS2021_00003", "BraTS2021_00005"], ["BraTS2021_00002", "BraTS2021_00004"]]
    assert not (sharded / "metrics.csv").exists() and not list(sharded.rglob("*.ctbl"))  # a shard writes its cases and its part only
    with pytest.raises(InputError, match="shard\\(s\\) 2 of 2 missing"):
        shard_file(sharded, Shard(2, 2)).rename(tmp_path / "aside.json")
        read_shards(sharded)
    (tmp_path / "aside.json").rename(shard_file(sharded, Shard(2, 2)))

    result = CliRunner().invoke(main, ["merge-shards", "--out", str(sharded)])
    assert result.exit_code == 0, result.output
    assert (sharded / "metrics.csv").read_text() == (whole / "metrics.csv").read_text()  # the list's order, every column
    assert (sharded / "plots" / "dice_per_case.png").is_file()
    summary, expected_summary = (json.loads((folder / "summary.json").read_text()) for folder in (sharded, whole))
    assert summary["shards"] == 2 and summary["metrics"] == expected_summary["metrics"] and summary["model"] == expected_summary["model"]
    assert sorted(p.name for p in (sharded / "predictions").iterdir()) == sorted(p.name for p in (whole / "predictions").iterdir())
    written, expected = _arrays(sharded / "predictions"), _arrays(whole / "predictions")
    assert len(expected) == 5 and written.keys() == expected.keys()
    assert all(np.array_equal(written[name], expected[name]) for name in expected)


def test_shards_of_different_runs_are_not_merged(datalist: Path, run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    evaluate(run_dir, datalist, out, overlays=False, progress=False, echo=False, shard="1/3")
    evaluate(run_dir, datalist, out, overlays=False, progress=False, echo=False, shard="2/3", lesion_wise=True)
    evaluate(run_dir, datalist, out, overlays=False, progress=False, echo=False, shard="3/3")
    with pytest.raises(InputError, match="2-of-3.json: belongs to another run than shard 1"):
        merge_shards(out)
    with pytest.raises(ConfigError, match="--shard: not under torchrun"):  # a rank's shard is its own
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
        try:
            evaluate(run_dir, datalist, out, overlays=False, progress=False, echo=False, shard="1/2")
        finally:
            dist.destroy_process_group()
    result = CliRunner().invoke(main, ["merge-shards", "--out", str(tmp_path)])
    assert result.exit_code == 1 and result.output.strip() == f"error: {tmp_path / 'shards'}: no shard files (K-of-N.json); run predict or evaluate with --shard K/N first"


def test_predict_shards_merge_into_the_unsharded_manifest(datalist: Path, run_dir: Path, tmp_path: Path) -> None:
    predict(run_dir, datalist, tmp_path / "whole", progress=False)
    for k, count in ((1, 3), (2, 2)):
        result = CliRunner().invoke(main, ["predict", "--model", str(run_dir), "--input", str(datalist), "--out", str(tmp_path / "sharded"), "--shard", f"{k}/2", "--no-progress"])
        assert result.exit_code == 0, result.output
        assert f"{count} case(s) segmented" in result.output
    assert not (tmp_path / "sharded" / "predictions.json").exists() and not list((tmp_path / "sharded").glob("*.ctbl"))
    assert merge_shards(tmp_path / "sharded") == tmp_path / "sharded" / "predictions.json"
    assert _without_seconds(tmp_path / "sharded" / "predictions.json") == _without_seconds(tmp_path / "whole" / "predictions.json")
    assert sorted(p.name for p in (tmp_path / "sharded").glob("*.ctbl")) == sorted(p.name for p in (tmp_path / "whole").glob("*.ctbl")) == ["brats_brats2017.ctbl"]
    written, expected = _arrays(tmp_path / "sharded"), _arrays(tmp_path / "whole")
    assert len(expected) == 5 and written.keys() == expected.keys()
    assert all(np.array_equal(written[name], expected[name]) for name in expected)


# ---- preprocessing shards -----------------------------------------------------------------------
@pytest.mark.slow
def test_preprocess_shards_fill_one_cache_and_a_final_run_writes_the_index(tiny_datalist: Path, tiny_cache: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "pipeline", "preprocess", "--datalist", str(tiny_datalist), "--cache", str(cache), "--no-progress", "--shard"]
    running = [subprocess.Popen([*command, f"{k}/2"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for k in (1, 2)]
    outputs = [process.communicate(timeout=120)[0] for process in running]
    assert [process.returncode for process in running] == [0, 0], outputs
    assert all("4 case(s) preprocessed" in output and "without --shard writes the cache index" in output for output in outputs)
    assert not (cache / "cache.json").exists()  # no shard writes the shared index
    ids = [r.case_id for split in load_datalist(tiny_datalist).records.values() for r in split]
    assert sorted(path.name for path in cache.iterdir()) == sorted(ids)

    final = preprocess_datalist(tiny_datalist, cache, progress=False)
    assert final.processed == () and sorted(final.skipped) == sorted(ids)  # only finishes what is missing
    assert json.loads((cache / "cache.json").read_text())["splits"] == json.loads((tiny_cache / "cache.json").read_text())["splits"]
    for case_id in ids:
        assert np.array_equal(np.load(cache / case_id / "image.npy"), np.load(tiny_cache / case_id / "image.npy"))


# ---- torchrun ----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_torchrun_evaluate_writes_what_one_process_writes(datalist: Path, run_dir: Path, whole: Path, tmp_path: Path) -> None:
    """2 gloo processes each score their share of the cases; rank 0 gathers the metrics and writes the same reports."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{_free_port()}",
               "-m", "pipeline", "evaluate", "--model", str(run_dir), "--datalist", str(datalist), "--out", str(tmp_path / "ranks"), "--no-overlays", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180, env=env)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert completed.stdout.count("reports ->") == 1  # rank 0 alone reports
    assert (tmp_path / "ranks" / "metrics.csv").read_text() == (whole / "metrics.csv").read_text()
    written, expected = _arrays(tmp_path / "ranks" / "predictions"), _arrays(whole / "predictions")
    assert len(expected) == 5 and written.keys() == expected.keys()
    assert all(np.array_equal(written[name], expected[name]) for name in expected)
    assert not (tmp_path / "ranks" / "shards").exists()


def test_bundle_evaluating_takes_a_shard(datalist: Path, run_dir: Path, whole: Path, tmp_path: Path) -> None:
    """``evaluate.yaml``'s ``shard`` knob: the bundle workflow's shards merge into the same reports."""
    from monai.bundle import ConfigParser
    from prediction_cases import write_bundle_dir

    bundle = write_bundle_dir(tmp_path / "bundle", weights=run_dir / "models" / "model.pt")
    for k in (1, 2):
        parser = ConfigParser()
        parser.read_config([str(bundle / "configs" / "inference.yaml"), str(REPO / "bundles" / "brats_segmentation" / "configs" / "evaluate.yaml")])
        parser.update({"bundle_root": str(bundle), "datalist": str(datalist), "output_dir": str(tmp_path / "eval"), "shard": f"{k}/2", "overlays": False, "progress": False})
        parser.get_parsed_content("evaluating")
    assert [len(json.loads(shard_file(tmp_path / "eval", Shard(k, 2)).read_text())["items"]) for k in (1, 2)] == [3, 2]
    merge_shards(tmp_path / "eval", echo=False)
    assert (tmp_path / "eval" / "metrics.csv").read_text() == (whole / "metrics.csv").read_text()


def test_local_device_is_this_process_gpu_under_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    from monai.bundle import ConfigParser

    from pipeline.core.distributed import local_device

    assert local_device("cuda") == "cuda" and local_device("cpu") == "cpu"
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert local_device("cuda") == "cuda:3" and local_device("cuda:1") == "cuda:1" and local_device("cpu") == "cpu"
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "brats_segmentation" / "configs" / "inference.yaml"))
    parser["device"] = "$pipeline.core.distributed.local_device('cuda')"  # what the README gives the bundle under torchrun
    parser.get_parsed_content("imports")
    assert parser.get_parsed_content("device") == "cuda:3"


@pytest.mark.slow
def test_torchrun_predict_writes_what_one_process_writes(datalist: Path, run_dir: Path, tmp_path: Path) -> None:
    """2 gloo processes each segment their share; rank 0 writes predictions.json with every case in the input's order."""
    predict(run_dir, datalist, tmp_path / "whole", progress=False)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               "-m", "pipeline", "predict", "--model", str(run_dir), "--input", str(datalist), "--out", str(tmp_path / "ranks"), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180, env=env)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert sorted(line.split(" case(s)")[0] for line in completed.stdout.splitlines() if "case(s) segmented" in line) == ["2", "3"]
    manifest = _without_seconds(tmp_path / "ranks" / "predictions.json")
    assert [entry["case_id"] for entry in manifest["cases"]] == list(CASES)
    assert manifest == _without_seconds(tmp_path / "whole" / "predictions.json")
    written, expected = _arrays(tmp_path / "ranks"), _arrays(tmp_path / "whole")
    assert len(expected) == 5 and written.keys() == expected.keys()
    assert all(np.array_equal(written[name], expected[name]) for name in expected)
