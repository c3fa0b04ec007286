"""Determinism and provenance: the same seed gives the same bytes; every run records what made it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
from cli_runs import REPO, TINY_TRAINING, cli, train_args
from failure_checks import files_under, same_files
from monai.bundle import ConfigParser

from pipeline.core.io import file_sha256


def _datalist(root: Path, out: Path, seed: int) -> Path:
    result = cli("datalist", "--data-root", root, "--out", out, "--folds", "2", "--test-fraction", "0.25", "--seed", seed, "--no-progress")
    assert result.exit_code == 0, result.output
    return out


def test_same_seed_same_split_file(pristine_cohort: Path, tmp_path: Path) -> None:
    first = _datalist(pristine_cohort, tmp_path / "a" / "split.json", 0)
    second = _datalist(pristine_cohort, tmp_path / "b" / "split.json", 0)
    assert first.read_bytes() == second.read_bytes()
    folds = {seed: {e["case_id"]: e["fold"] for s in ("training", "validation", "test") for e in json.loads(
        _datalist(pristine_cohort, tmp_path / f"seed{seed}" / "split.json", seed).read_text())[s]} for seed in range(4)}
    assert len({tuple(sorted(f.items())) for f in folds.values()}) > 1  # the seed does drive the split


def test_same_input_same_cache_bytes(pristine_datalist: Path, pristine_cache: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    result = cli("preprocess", "--datalist", pristine_datalist, "--cache", cache, "--workers", "2", "--no-progress")
    assert result.exit_code == 0, result.output
    assert [p.relative_to(cache) for p in files_under(cache)] == [p.relative_to(pristine_cache) for p in files_under(pristine_cache)]
    same_files(pristine_cache, cache)  # two workers in spawned processes, or one in this process: the same bytes


def _evaluate(run: Path, datalist: Path, out: Path) -> dict:
    result = cli("evaluate", "--model", run, "--datalist", datalist, "--split", "all", "--out", out, "--no-progress", "--no-overlays")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    summary.pop("seconds", None)
    return summary


@pytest.mark.slow
def test_same_seed_same_training_weights_and_metrics(pristine_datalist: Path, pristine_cache: Path, trained_run: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    result = cli(*train_args(pristine_datalist, pristine_cache, again))
    assert result.exit_code == 0, result.output
    for name in ("model.pt", "latest.pt"):
        first, second = (torch.load(run / "models" / name, weights_only=True) for run in (trained_run, again))
        weights = (first, second) if name == "model.pt" else (first["network"], second["network"])
        assert weights[0].keys() == weights[1].keys()
        assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0]), name
    assert torch.load(again / "models" / "latest.pt", weights_only=True)["best_metric"] == torch.load(
        trained_run / "models" / "latest.pt", weights_only=True
    )["best_metric"]
    other_seed = tmp_path / "other_seed"
    assert cli(*train_args(pristine_datalist, pristine_cache, other_seed, settings=[*TINY_TRAINING, "seed=1"])).exit_code == 0
    changed = torch.load(other_seed / "models" / "latest.pt", weights_only=True)["network"]
    assert any(not torch.equal(changed[k], v) for k, v in torch.load(again / "models" / "latest.pt", weights_only=True)["network"].items())

    first = _evaluate(trained_run, pristine_datalist, tmp_path / "eval_a")
    second = _evaluate(again, pristine_datalist, tmp_path / "eval_b")
    assert (tmp_path / "eval_a" / "metrics.csv").read_bytes() == (tmp_path / "eval_b" / "metrics.csv").read_bytes()
    assert {k: v for k, v in first.items() if k != "model"} == {k: v for k, v in second.items() if k != "model"}


def test_run_directory_records_config_versions_commit_and_datalist_hash(trained_run: Path, pristine_datalist: Path, pristine_cache: Path) -> None:
    provenance = json.loads((trained_run / "provenance.json").read_text())
    for package in ("python", "torch", "monai", "numpy", "nibabel", "brats-pipeline"):
        assert provenance["versions"][package], package
    assert provenance["versions"]["torch"] == torch.__version__
    assert provenance["datalist_sha256"] == file_sha256(pristine_datalist)
    assert Path(provenance["datalist"]) == pristine_datalist.resolve()
    assert provenance["seed"] == 0
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if head.returncode == 0:
        assert re.fullmatch(r"[0-9a-f]{40}(\+uncommitted)?", provenance["git_commit"])
    else:
        assert provenance["git_commit"] is None

    config = json.loads((trained_run / "config.json").read_text())  # every override resolved into the stored config
    assert config["mode"] == "2d" and config["epochs"] == 1 and config["channels"] == [4, 8, 16] and config["deterministic"] is True
    assert Path(config["datalist"]) == pristine_datalist.resolve() and Path(config["dataset_dir"]) == pristine_cache.resolve()
    network = ConfigParser(config).get_parsed_content("network_def")
    network.load_state_dict(torch.load(trained_run / "models" / "model.pt", weights_only=True))  # the config rebuilds the trained network
