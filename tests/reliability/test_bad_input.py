"""Bad input through the command line: one clear line, exit status 1, nothing half-written, sources untouched."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from case_writers import case_file, write_msd_dataset
from cli_runs import TINY_TRAINING, cli, train_args
from failure_checks import assert_one_line_error, checksums, files_under, leftover_temporaries
from corruptions import IMAGE_CORRUPTIONS, SEG_CORRUPTIONS, damage, rewrite, voxels

from pipeline.core.io import file_sha256

DAMAGED_CASE = "BraTS2021_00001"


def _damaged(root: Path, name: str, monkeypatch: pytest.MonkeyPatch, case_id: str = DAMAGED_CASE) -> tuple[Path, str, dict[str, str]]:
    path, pattern = damage(root / case_id, name, monkeypatch)
    return path, pattern, checksums(root)


def _case_of_split(datalist: Path, split: str) -> str:
    return json.loads(datalist.read_text())[split][0]["case_id"]


# ----------------------------------------------------------------------------- datalist


@pytest.mark.parametrize("corruption", [*IMAGE_CORRUPTIONS, *SEG_CORRUPTIONS])
def test_datalist_refuses_a_damaged_case(corruption: str, cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, pattern, before = _damaged(cohort, corruption, monkeypatch)
    out = tmp_path / "lists" / "out.json"
    result = cli("datalist", "--data-root", cohort, "--out", out, "--no-progress")
    assert result.exit_code == 1
    assert_one_line_error(result.output, path, pattern)
    assert not out.exists() and not leftover_temporaries(out.parent)
    assert checksums(cohort) == before


def test_debug_shows_the_traceback(cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, pattern, _ = _damaged(cohort, "missing_modality", monkeypatch)
    result = cli("--debug", "datalist", "--data-root", cohort, "--out", tmp_path / "out.json", "--no-progress")
    assert result.exit_code == 1
    assert "Traceback" in result.output and f"error: {path}: " in result.output


def test_unknown_extra_files_are_warnings(cohort: Path, tmp_path: Path) -> None:
    notes = cohort / DAMAGED_CASE / "notes.txt"
    notes.write_text("scanned twice\n")
    stray = cohort / "README.pdf"
    stray.write_bytes(b"%PDF-1.4\n")
    before = checksums(cohort)
    out = tmp_path / "out.json"
    result = cli("datalist", "--data-root", cohort, "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert f"{notes}: not one of {DAMAGED_CASE}'s modality or seg files; ignored" in result.output
    assert f"{stray}: not a case file; ignored" in result.output
    listed = json.loads(out.read_text())
    assert sum(len(listed[split]) for split in ("training", "validation", "test")) == 4
    assert checksums(cohort) == before


def test_duplicate_case_id_is_refused(cohort: Path, tmp_path: Path) -> None:
    (cohort / "HGG").mkdir()
    (cohort / "LGG").mkdir()
    shutil.move(cohort / DAMAGED_CASE, cohort / "HGG" / DAMAGED_CASE)
    shutil.copytree(cohort / "HGG" / DAMAGED_CASE, cohort / "LGG" / DAMAGED_CASE)
    before = checksums(cohort)
    out = tmp_path / "out.json"
    result = cli("datalist", "--data-root", cohort, "--out", out, "--no-progress")
    assert result.exit_code == 1
    assert_one_line_error(result.output, cohort / "LGG" / DAMAGED_CASE, rf"{DAMAGED_CASE} appears twice")
    assert not out.exists() and checksums(cohort) == before


def test_empty_data_root_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out.json"
    result = cli("datalist", "--data-root", empty, "--out", out, "--no-progress")
    assert result.exit_code == 1
    assert_one_line_error(result.output, empty, "empty")
    assert not out.exists()


def _msd_root(cohort: Path, root: Path, channels: int) -> Path:
    """An MSD Task01 folder made from the cohort's cases, with ``channels`` channels per 4D image."""
    from pipeline.tasks.modalities import MSD_CHANNELS

    order = sorted(MSD_CHANNELS, key=MSD_CHANNELS.get)
    case_dirs = sorted(p for p in cohort.iterdir() if p.is_dir())
    training = {}
    for number, case_dir in enumerate(case_dirs, start=1):
        stacked = np.stack([voxels(case_file(case_dir, m)) for m in order][:channels], axis=-1)
        seg = voxels(case_file(case_dir, "seg"))
        training[f"BRATS_{number:03d}"] = (stacked, np.select([seg == 2, seg == 1, seg == 4], [1, 2, 3], 0).astype(np.uint8))
    return write_msd_dataset(root, training, affine=nib.load(case_file(case_dirs[0], "t1")).affine)


def test_msd_image_with_the_wrong_channel_count_is_refused(cohort: Path, tmp_path: Path) -> None:
    root = _msd_root(cohort, tmp_path / "Task01_BrainTumour", channels=3)
    before = checksums(root)
    out = tmp_path / "out.json"
    result = cli("datalist", "--data-root", root, "--out", out, "--no-progress")
    assert result.exit_code == 1
    assert_one_line_error(result.output, root / "imagesTr" / "BRATS_001.nii.gz", r"4 channels")
    assert not out.exists() and checksums(root) == before


def test_predict_refuses_an_msd_image_with_the_wrong_channel_count(cohort: Path, trained_run: Path, tmp_path: Path) -> None:
    root = _msd_root(cohort, tmp_path / "Task01_BrainTumour", channels=3)
    before = checksums(root)
    image, out = root / "imagesTr" / "BRATS_001.nii.gz", tmp_path / "predictions"
    result = cli("predict", "--model", trained_run, "--input", image, "--out", out, "--no-progress")
    assert result.exit_code == 1
    assert_one_line_error(result.output, image, r"channel")
    assert not files_under(out) and checksums(root) == before


def test_msd_image_with_four_channels_is_accepted(cohort: Path, tmp_path: Path) -> None:
    """The same MSD folder with the right channel count passes: the refusal above is about the channels."""
    root = _msd_root(cohort, tmp_path / "Task01_BrainTumour", channels=4)
    result = cli("datalist", "--data-root", root, "--out", tmp_path / "out.json", "--no-progress")
    assert result.exit_code == 0, result.output


# ----------------------------------------------------------------------------- datalist under a task


def _refused_datalist(root: Path, out: Path, path: Path, pattern: str, *options: str | Path) -> None:
    """``datalist`` under ``options`` fails with one line naming ``path``, writes nothing and leaves the data as it was."""
    before = checksums(root)
    result = cli("datalist", "--data-root", root, "--out", out, "--no-progress", *options)
    assert result.exit_code == 1
    assert_one_line_error(result.output, path, pattern)
    assert not out.exists() and not leftover_temporaries(out.parent) and checksums(root) == before


def test_a_missing_channel_of_the_task_is_refused(cohort: Path, tmp_path: Path) -> None:
    flair = case_file(cohort / DAMAGED_CASE, "flair")
    flair.unlink()
    _refused_datalist(cohort, tmp_path / "out.json", flair, r"^: flair image missing$", "--task", "whole-tumour", "--channels", "flair")
    result = cli("datalist", "--data-root", cohort, "--out", tmp_path / "t1.json", "--no-progress", "--task", "whole-tumour", "--channels", "t1")
    assert result.exit_code == 0, result.output  # a channel the task does not use is not required


def test_a_label_outside_the_tasks_classes_is_refused(cohort: Path, tmp_path: Path) -> None:
    task_file = tmp_path / "edema.json"
    payload = {"name": "edema", "channels": ["flair"], "classes": ["ED"], "labels": {"brats2017": {"ED": 2}}, "structures": {"ED": ["ED"]}}
    task_file.write_text(json.dumps(payload))
    seg = case_file(cohort / "BraTS2021_00000", "seg")
    _refused_datalist(cohort, tmp_path / "out.json", seg, r"labels \[1, 4\] are not in the brats2017 convention of task edema \[0, 2\]", "--task", task_file)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [("{not json", "cannot read task file"), ('{"name": "x", "channels": ["flair"]}', "malformed task: missing key 'classes'")],
)
def test_a_malformed_task_file_is_refused(text: str, pattern: str, cohort: Path, tmp_path: Path) -> None:
    task_file = tmp_path / "task.json"
    task_file.write_text(text)
    _refused_datalist(cohort, tmp_path / "out.json", task_file, pattern, "--task", task_file)


def test_ped_labels_need_the_task_that_names_their_scheme(tmp_path: Path) -> None:
    from pipeline.synth import generate_cohort

    root = tmp_path / "ped"
    (first, _) = generate_cohort(root, cases=2, seed=0, size="tiny", progress=False, task="brats2024-ped")
    seg = first / f"{first.name}-seg.nii.gz"
    _refused_datalist(root, tmp_path / "out.json", seg, r"BraTS-PED segmentations are not read.*--task brats2024-ped$")
    result = cli("datalist", "--data-root", root, "--out", tmp_path / "out.json", "--no-progress", "--task", "brats2024-ped")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out.json").read_text())["label_convention"] == "brats2024-ped"


# ----------------------------------------------------------------------------- preprocess


def _assert_cache_has_no_partial_case(cache: Path, bad_case: str) -> None:
    assert not files_under(cache / bad_case), f"partial cache entry {bad_case}"
    assert not leftover_temporaries(cache)
    for case_dir in (p for p in cache.iterdir() if p.is_dir()) if cache.exists() else ():
        meta = json.loads((case_dir / "meta.json").read_text())  # every entry present is complete
        assert meta["complete"] is True and (case_dir / "image.npy").is_file()


@pytest.mark.parametrize("corruption", [*IMAGE_CORRUPTIONS, *SEG_CORRUPTIONS])
def test_preprocess_refuses_a_case_damaged_after_listing(
    corruption: str, cohort: Path, cohort_datalist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, pattern, before = _damaged(cohort, corruption, monkeypatch)
    cache = tmp_path / "cache"
    result = cli("preprocess", "--datalist", cohort_datalist, "--cache", cache, "--no-progress")
    assert result.exit_code == 1
    assert_one_line_error(result.output, path, pattern)
    _assert_cache_has_no_partial_case(cache, DAMAGED_CASE)
    assert checksums(cohort) == before


@pytest.mark.parametrize("corruption", ["truncated_gz", "seg_unknown_labels"])
def test_preprocess_workers_report_a_damaged_case_the_same_way(
    corruption: str, cohort: Path, cohort_datalist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, pattern, before = _damaged(cohort, corruption, monkeypatch)
    cache = tmp_path / "cache"
    result = cli("preprocess", "--datalist", cohort_datalist, "--cache", cache, "--workers", "2", "--no-progress")
    assert result.exit_code == 1
    assert_one_line_error(result.output, path, pattern)
    _assert_cache_has_no_partial_case(cache, DAMAGED_CASE)
    assert checksums(cohort) == before


def _edit_datalist(datalist: Path, edit: str) -> tuple[Path, str]:
    payload = json.loads(datalist.read_text())
    first = payload["training"][0]
    if edit == "missing_key":
        del payload["label_convention"]
        pattern = "missing key.*label_convention"
    elif edit == "entry_without_image":
        del first["image"]
        pattern = "needs 'case_id' and 'image'"
    elif edit == "unknown_split":
        payload["holdout"] = payload.pop("test")
        payload["test"] = []
        pattern = "unknown split.*holdout"
    elif edit == "path_escaping_root":
        first["image"][0] = "../../../etc/passwd"
        pattern = "escapes the data root"
    elif edit == "absolute_path":
        first["label"] = "/etc/passwd"
        pattern = "escapes the data root"
    elif edit == "duplicate_case_id":
        payload["validation"][0]["case_id"] = first["case_id"]
        pattern = f"{first['case_id']} appears twice"
    elif edit == "case_id_escaping_output":
        first["case_id"] = "../../evil"
        pattern = "not a safe file name"
    elif edit == "not_json":
        datalist.write_text(datalist.read_text()[:-20])
        return datalist, "not valid JSON"
    else:
        raise AssertionError(edit)
    datalist.write_text(json.dumps(payload, indent=2))
    return datalist, pattern


DATALIST_EDITS = (
    "missing_key",
    "entry_without_image",
    "unknown_split",
    "path_escaping_root",
    "absolute_path",
    "duplicate_case_id",
    "case_id_escaping_output",
    "not_json",
)


@pytest.mark.parametrize("edit", DATALIST_EDITS)
def test_preprocess_refuses_a_bad_datalist(edit: str, cohort: Path, cohort_datalist: Path, tmp_path: Path) -> None:
    datalist, pattern = _edit_datalist(cohort_datalist, edit)
    before = checksums(cohort)
    cache = tmp_path / "out" / "cache"
    result = cli("preprocess", "--datalist", datalist, "--cache", cache, "--no-progress")
    assert result.exit_code == 1
    assert_one_line_error(result.output, datalist, pattern)
    assert not files_under(tmp_path / "out") and not (tmp_path / "evil").exists()
    assert checksums(cohort) == before


# ----------------------------------------------------------------------------- train


@pytest.mark.parametrize("edit", ["missing_key", "unknown_split", "path_escaping_root", "case_id_escaping_output"])
def test_train_refuses_a_bad_datalist(edit: str, pristine_datalist: Path, pristine_cache: Path, tmp_path: Path) -> None:
    datalist, pattern = _edit_datalist(Path(shutil.copy(pristine_datalist, tmp_path / "bad.json")), edit)
    out = tmp_path / "run"
    result = cli(*train_args(datalist, pristine_cache, out))
    assert result.exit_code == 1
    assert_one_line_error(result.output, datalist, pattern)
    assert not files_under(out)


@pytest.mark.parametrize("problem", ["case_not_cached", "old_format", "truncated_array"])
def test_train_refuses_a_damaged_cache(problem: str, pristine_datalist: Path, pristine_cache: Path, tmp_path: Path) -> None:
    cache = Path(shutil.copytree(pristine_cache, tmp_path / "cache"))
    case_id = _case_of_split(pristine_datalist, "training")
    out = tmp_path / "run"
    if problem == "case_not_cached":
        shutil.rmtree(cache / case_id)
        where, pattern = cache, f"case {case_id} .* is not in the cache"
    elif problem == "old_format":
        meta_path = cache / case_id / "meta.json"
        meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "format_version": 0}))
        where, pattern = cache / case_id, r"cache format 0 is not 1 \(an old or foreign cache\); run preprocess again"
    else:
        where = cache / case_id / "image.npy"
        where.write_bytes(where.read_bytes()[: where.stat().st_size // 2])
        pattern = "cannot"
    result = cli(*train_args(pristine_datalist, cache, out))
    assert result.exit_code == 1
    assert_one_line_error(result.output, where, pattern)
    if problem in ("case_not_cached", "old_format"):  # found before the run starts: nothing written
        assert not files_under(out)
    assert not leftover_temporaries(out)


def _checkpoint_of_another_network(path: Path) -> None:
    from pipeline.networks import build_network

    network = build_network("2d", channels=(4, 8, 32), strides=(2, 2), num_res_units=0)
    torch.save(network.state_dict(), path)


def _run_copy(trained_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


@pytest.mark.parametrize("problem", ["other_network", "other_config", "truncated", "not_a_checkpoint", "no_resume"])
def test_train_refusal_leaves_the_run_directory_as_it_was(
    problem: str, trained_run: Path, pristine_datalist: Path, pristine_cache: Path, tmp_path: Path
) -> None:
    """A refused training run writes nothing: not its config, provenance, logs or TensorBoard events, and no checkpoint."""
    run = _run_copy(trained_run, tmp_path)
    latest = run / "models" / "latest.pt"
    settings, resume = list(TINY_TRAINING), ["--resume"]
    if problem == "other_network":
        state = torch.load(latest, weights_only=True)
        from pipeline.networks import build_network

        state["network"] = build_network("2d", channels=(4, 8, 32), strides=(2, 2), num_res_units=0).state_dict()
        torch.save(state, latest)
        pattern = "does not match the configured network"
    elif problem == "other_config":
        settings = [s for s in TINY_TRAINING if not s.startswith("channels")] + ["channels=[4, 8, 32]"]
        pattern = "does not match the configured network"
    elif problem == "truncated":
        latest.write_bytes(latest.read_bytes()[:1000])
        pattern = "not a loadable checkpoint"
    elif problem == "not_a_checkpoint":
        latest.write_text("not a checkpoint")
        pattern = "not a loadable checkpoint"
    else:
        resume = []
        pattern = r"already holds a checkpoint; resume it \(--resume\)"
    before = checksums(run)
    result = cli(*train_args(pristine_datalist, pristine_cache, run, epochs=2, settings=settings), *resume)
    assert result.exit_code == 1
    assert_one_line_error(result.output, latest, pattern)
    assert checksums(run) == before
    assert not leftover_temporaries(run)


# ----------------------------------------------------------------------------- predict and evaluate


@pytest.mark.parametrize("corruption", list(IMAGE_CORRUPTIONS))
def test_predict_refuses_a_damaged_case(corruption: str, cohort: Path, trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, pattern, before = _damaged(cohort, corruption, monkeypatch)
    out = tmp_path / "predictions"
    result = cli("predict", "--model", trained_run, "--input", cohort / DAMAGED_CASE, "--out", out, "--no-progress")
    assert result.exit_code == 1
    assert_one_line_error(result.output, path, pattern)
    assert not files_under(out)
    assert checksums(cohort) == before


@pytest.mark.parametrize("names", [[], ["--submission-names"], ["--probabilities"]])
def test_predict_never_overwrites_its_input(names: list[str], cohort: Path, trained_run: Path) -> None:
    """With --out pointing at the case folder, <case>_seg.nii.gz would be the ground truth itself: refused before anything is written."""
    case = cohort / DAMAGED_CASE
    before = checksums(cohort)
    result = cli("predict", "--model", trained_run, "--input", case, "--out", case, "--no-progress", *names)
    if names == ["--submission-names"]:  # <case>.nii.gz is no input file: allowed, written beside the inputs
        assert result.exit_code == 0, result.output
        assert {k: v for k, v in checksums(cohort).items() if k in before} == before
        return
    assert result.exit_code == 1
    assert_one_line_error(result.output, case_file(case, "seg"), "input")
    assert checksums(cohort) == before


def test_predict_over_a_data_root_checks_every_output_first(cohort: Path, trained_run: Path) -> None:
    out = cohort / "BraTS2021_00003"  # the predictions of every case would land in one case's folder
    before = checksums(cohort)
    result = cli("predict", "--model", trained_run, "--input", cohort, "--out", out, "--no-progress")
    assert result.exit_code == 1
    assert_one_line_error(result.output, case_file(out, "seg"), "input")
    assert checksums(cohort) == before  # not even the other cases' predictions were written


def test_predict_refuses_an_empty_input_folder(trained_run: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "predictions"
    result = cli("predict", "--model", trained_run, "--input", empty, "--out", out, "--no-progress")
    assert result.exit_code == 1
    assert_one_line_error(result.output, empty, "empty")
    assert not files_under(out)


@pytest.mark.parametrize("corruption", list(SEG_CORRUPTIONS))
def test_evaluate_refuses_damaged_ground_truth(
    corruption: str, cohort: Path, cohort_datalist: Path, trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case_id = _case_of_split(cohort_datalist, "test")
    path, pattern, before = _damaged(cohort, corruption, monkeypatch, case_id=case_id)
    out = tmp_path / "evaluation"
    result = cli("evaluate", "--model", trained_run, "--datalist", cohort_datalist, "--out", out, "--no-progress", "--no-overlays")
    assert result.exit_code == 1
    assert_one_line_error(result.output, path, pattern)
    assert not files_under(out)
    assert checksums(cohort) == before


@pytest.mark.parametrize("problem", ["other_network", "truncated", "not_a_checkpoint"])
@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_bad_weights_are_refused(
    command: str, problem: str, trained_run: Path, pristine_cohort: Path, pristine_datalist: Path, tmp_path: Path
) -> None:
    run = _run_copy(trained_run, tmp_path)
    weights = run / "models" / "model.pt"
    if problem == "other_network":
        _checkpoint_of_another_network(weights)
        pattern = "do not fit the network"
    elif problem == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        pattern = "not a readable weights-only checkpoint"
    else:
        weights.write_bytes(b"\x00" * 64)
        pattern = "not a readable weights-only checkpoint"
    weights_sha = file_sha256(weights)
    out = tmp_path / "out"
    if command == "predict":
        result = cli("predict", "--model", run, "--input", pristine_cohort / DAMAGED_CASE, "--out", out, "--no-progress")
    else:
        result = cli("evaluate", "--model", run, "--datalist", pristine_datalist, "--out", out, "--no-progress", "--no-overlays")
    assert result.exit_code == 1
    assert_one_line_error(result.output, weights, pattern)
    assert not files_under(out) and file_sha256(weights) == weights_sha


# ----------------------------------------------------------------------------- unusable output folders


@pytest.mark.parametrize("command", ["datalist", "preprocess", "train", "predict", "evaluate"])
def test_output_folder_blocked_by_a_file(
    command: str, pristine_cohort: Path, pristine_datalist: Path, pristine_cache: Path, trained_run: Path, tmp_path: Path
) -> None:
    blocking = tmp_path / "results"
    blocking.write_text("a file where the output folder should go\n")
    out = blocking / "inside"
    if command == "datalist":
        args = ["datalist", "--data-root", pristine_cohort, "--out", out / "list.json", "--no-progress"]
    elif command == "preprocess":
        args = ["preprocess", "--datalist", pristine_datalist, "--cache", out, "--no-progress"]
    elif command == "train":
        args = train_args(pristine_datalist, pristine_cache, out)
    elif command == "predict":
        args = ["predict", "--model", trained_run, "--input", pristine_cohort / DAMAGED_CASE, "--out", out, "--no-progress"]
    else:
        args = ["evaluate", "--model", trained_run, "--datalist", pristine_datalist, "--out", out, "--no-progress", "--no-overlays"]
    result = cli(*args)
    assert result.exit_code == 1
    assert_one_line_error(result.output, out, f"{blocking} is a file")
    assert blocking.read_text() == "a file where the output folder should go\n"


def test_operating_system_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An OSError no stage turned into a pipeline error still ends as one line naming the file (a traceback with --debug)."""
    import pipeline.datasets.datalist

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/mnt/archive/BraTS2021_00001")

    monkeypatch.setattr(pipeline.datasets.datalist, "build_datalist", denied)
    result = cli("datalist", "--data-root", tmp_path, "--out", tmp_path / "list.json")
    assert result.exit_code == 1
    assert_one_line_error(result.output, "/mnt/archive/BraTS2021_00001", "Permission denied")
    assert "Traceback" in cli("--debug", "datalist", "--data-root", tmp_path, "--out", tmp_path / "list.json").output


# ----------------------------------------------------------------------------- full disk


def _full_disk_on(monkeypatch: pytest.MonkeyPatch, name_part: str) -> None:
    """Make flushing any atomically written file whose name contains ``name_part`` fail with ENOSPC, as a full disk does."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if name_part in os.path.basename(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see which file a descriptor writes")
@pytest.mark.parametrize(
    "command, failing",
    [
        ("datalist", "out.json"),
        ("preprocess", "image.npy"),
        ("preprocess", "meta.json"),
        ("train", "latest.pt"),
        ("predict", "_seg.nii.gz"),
        ("evaluate", "metrics.csv"),
    ],
)
def test_full_disk_leaves_no_partial_file(
    command: str,
    failing: str,
    pristine_cohort: Path,
    pristine_datalist: Path,
    pristine_cache: Path,
    trained_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "out"
    before = checksums(pristine_cohort)
    _full_disk_on(monkeypatch, failing)
    if command == "datalist":
        args = ["datalist", "--data-root", pristine_cohort, "--out", out / "out.json", "--no-progress"]
    elif command == "preprocess":
        args = ["preprocess", "--datalist", pristine_datalist, "--cache", out, "--no-progress"]
    elif command == "train":
        args = train_args(pristine_datalist, pristine_cache, out, settings=TINY_TRAINING)
    elif command == "predict":
        args = ["predict", "--model", trained_run, "--input", pristine_cohort / DAMAGED_CASE, "--out", out, "--no-progress"]
    else:
        args = ["evaluate", "--model", trained_run, "--datalist", pristine_datalist, "--out", out, "--no-progress", "--no-overlays"]
    result = cli(*args)
    assert result.exit_code == 1
    line = assert_one_line_error(result.output, out, "No space left on device")
    failed = Path(line.removeprefix("error: ").split(": ", 1)[0])
    assert failing in failed.name and not failed.exists()
    assert not leftover_temporaries(out)
    if command == "preprocess":
        _assert_cache_has_no_partial_case(out, "none")
    assert checksums(pristine_cohort) == before


# ----------------------------------------------------------------------------- valid edge case: no tumour


@pytest.mark.slow
def test_empty_segmentation_works_end_to_end(cohort: Path, tmp_path: Path) -> None:
    """A case without tumour (all-zero seg) is valid: datalist -> preprocess -> train -> evaluate, scored by the empty-case convention."""
    import pandas as pd

    from pipeline.evaluation.metrics import EMPTY_HD95_MM
    from pipeline.datasets.datalist import assign_folds

    folds = assign_folds(sorted(p.name for p in cohort.iterdir()), folds=2, test_fraction=0.25, seed=0)
    test_case = next(case for case, fold in folds.items() if fold == -1)
    training_case = next(case for case, fold in folds.items() if fold == 1)
    for case_id in (test_case, training_case):
        seg = case_file(cohort / case_id, "seg")
        rewrite(seg, np.zeros_like(voxels(seg)))
    before = checksums(cohort)

    datalist, cache, run, evaluation = tmp_path / "list.json", tmp_path / "cache", tmp_path / "run", tmp_path / "eval"
    result = cli("datalist", "--data-root", cohort, "--out", datalist, "--folds", "2", "--test-fraction", "0.25", "--no-progress")
    assert result.exit_code == 0, result.output
    assert json.loads(datalist.read_text())["test"][0]["case_id"] == test_case
    result = cli("preprocess", "--datalist", datalist, "--cache", cache, "--no-progress")
    assert result.exit_code == 0, result.output
    meta = json.loads((cache / test_case / "meta.json").read_text())
    assert meta["has_label"] and not any(meta["foreground_per_slice"])
    result = cli(*train_args(datalist, cache, run))
    assert result.exit_code == 0, result.output
    result = cli("evaluate", "--model", run, "--datalist", datalist, "--out", evaluation, "--no-progress", "--no-overlays")
    assert result.exit_code == 0, result.output

    row = pd.read_csv(evaluation / "metrics.csv").set_index("case_id").loc[test_case]
    predicted = np.asarray(nib.load(evaluation / "predictions" / f"{test_case}_seg.nii.gz").dataobj)  # BraTS 2017 labels 0/1/2/4
    masks = {"NEC": predicted == 1, "ED": predicted == 2, "ET": predicted == 4, "WT": predicted > 0, "TC": np.isin(predicted, (1, 4))}
    for structure, mask in masks.items():
        if mask.any():  # tumour predicted where there is none
            assert row[f"dice_{structure}"] == 0.0 and row[f"hd95_{structure}"] == pytest.approx(EMPTY_HD95_MM), structure
        else:  # both empty: a perfect score, not NaN
            assert row[f"dice_{structure}"] == 1.0 and row[f"hd95_{structure}"] == 0.0, structure
    assert checksums(cohort) == before


@pytest.mark.slow
def test_bundle_run_refuses_to_overwrite_a_run(trained_run: Path, pristine_datalist: Path, pristine_cache: Path, tmp_path: Path) -> None:
    """`python -m monai.bundle run training` makes the same checks before it lays out the run directory."""
    import subprocess
    import sys

    from cli_runs import REPO, subprocess_env

    from pipeline.training.workflow import TRAIN_CONFIG, WORKFLOW_NAME

    run = _run_copy(trained_run, tmp_path)
    before = {k: v for k, v in checksums(run).items() if not k.startswith(("tensorboard/", "logs/"))}
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--workflow_name", WORKFLOW_NAME, "--config_file", str(TRAIN_CONFIG), "--datalist", str(pristine_datalist),
               "--dataset_dir", str(pristine_cache), "--output_dir", str(run), "--epochs", "1", "--mode", "2d"]
    completed = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert completed.returncode != 0
    assert "already holds a checkpoint; resume it (--resume)" in completed.stdout + completed.stderr
    assert {k: v for k, v in checksums(run).items() if not k.startswith(("tensorboard/", "logs/"))} == before


# ----------------------------------------------------------------------------- 2D layouts

KAGGLE_BAD = "TCGA_AB_0001_20000101"


def _kaggle_damage(root: Path, damage: str) -> tuple[Path, str]:
    """Damage the first of two Kaggle patients; returns the file the error must name and a pattern of the reason."""
    from planar_cases import write_image

    prefix = root / KAGGLE_BAD / KAGGLE_BAD
    if damage == "slice_without_mask":
        Path(f"{prefix}_3_mask.tif").unlink()
        return Path(f"{prefix}_3.tif"), "slice 3 has no mask"
    if damage == "mask_without_slice":
        Path(f"{prefix}_3.tif").unlink()
        return Path(f"{prefix}_3_mask.tif"), "mask of slice 3 has no image"
    if damage == "gap":
        Path(f"{prefix}_3.tif").unlink()
        Path(f"{prefix}_3_mask.tif").unlink()
        return root / KAGGLE_BAD, r"slice number\(s\) 3 missing"
    if damage == "slice_size":
        write_image(Path(f"{prefix}_5.tif"), np.ones((20, 16, 3), np.uint8))
        return Path(f"{prefix}_5.tif"), "slice 20x16 differs"
    if damage == "mask_values":
        write_image(Path(f"{prefix}_4_mask.tif"), np.full((16, 16), 3, np.uint8))
        return Path(f"{prefix}_4_mask.tif"), r"labels \[3\] are not in the mask255 convention"
    Path(f"{prefix}_2.tif").write_bytes(b"II*\x00 truncated")
    return Path(f"{prefix}_2.tif"), "cannot read image"


def _pairs_damage(root: Path, damage: str) -> tuple[Path, str]:
    from planar_cases import write_image

    image, mask = root / "images" / "b.png", root / "masks" / "b.png"
    if damage == "image_without_mask":
        mask.unlink()
        return image, "image without a mask"
    if damage == "mask_without_image":
        image.unlink()
        return mask, "mask without an image"
    if damage == "mask_size":
        write_image(mask, np.zeros((12, 20), np.uint8))
        return mask, "mask 12x20 differs from image b.png's 20x12"
    if damage == "unreadable":
        image.write_bytes(b"\x89PNG\r\n\x1a\n broken")
        return image, "cannot read image"
    if damage == "empty":
        mask.write_bytes(b"")
        return mask, "file is empty"
    write_image(mask, np.arange(240, dtype=np.uint8).reshape(20, 12))
    return mask, r"labels \[2, 3, 4, 5, 6"


def _assert_refused_then_skipped(root: Path, path: Path, pattern: str, kept: list[str], out: Path) -> None:
    """datalist: one line naming ``path``, exit 1, nothing written, source untouched; with --skip-bad only ``kept`` are listed."""
    before = checksums(root)
    result = cli("datalist", "--data-root", root, "--out", out, "--no-progress")
    assert result.exit_code == 1
    assert_one_line_error(result.output, path, pattern)
    assert not out.exists() and not leftover_temporaries(out.parent) and checksums(root) == before
    skipped = cli("datalist", "--data-root", root, "--out", out, "--no-progress", "--skip-bad", "--test-fraction", "0")
    assert skipped.exit_code == 0, skipped.output
    listed = json.loads(out.read_text())
    assert sorted(e["case_id"] for s in ("training", "validation", "test") for e in listed[s]) == kept
    assert checksums(root) == before


@pytest.mark.parametrize("damage", ["slice_without_mask", "mask_without_slice", "gap", "slice_size", "mask_values", "unreadable_tiff"])
def test_datalist_refuses_a_bad_kaggle_patient_and_skip_bad_leaves_it_out(damage: str, tmp_path: Path) -> None:
    from planar_cases import kaggle_root

    root = kaggle_root(tmp_path / "kaggle_3m", [(KAGGLE_BAD, 6), ("TCGA_AB_0002_20000102", 3)])
    path, pattern = _kaggle_damage(root, damage)
    _assert_refused_then_skipped(root, path, pattern, ["TCGA_AB_0002_20000102"], tmp_path / "lists" / "lgg.json")


@pytest.mark.parametrize("damage", ["image_without_mask", "mask_without_image", "mask_size", "unreadable", "empty", "not_binary"])
def test_datalist_refuses_a_bad_image_pair_and_skip_bad_leaves_it_out(damage: str, tmp_path: Path) -> None:
    from planar_cases import image_pairs

    root = image_pairs(tmp_path / "pairs")
    path, pattern = _pairs_damage(root, damage)
    _assert_refused_then_skipped(root, path, pattern, ["a", "c"], tmp_path / "lists" / "pairs.json")


def test_preprocess_refuses_a_kaggle_slice_damaged_after_listing(tmp_path: Path) -> None:
    from planar_cases import kaggle_root

    root = kaggle_root(tmp_path / "kaggle_3m", [(KAGGLE_BAD, 4)])
    datalist = tmp_path / "lgg.json"
    assert cli("datalist", "--data-root", root, "--out", datalist, "--no-progress", "--test-fraction", "0").exit_code == 0
    path, pattern = _kaggle_damage(root, "mask_values")
    before = checksums(root)
    cache = tmp_path / "cache"
    result = cli("preprocess", "--datalist", datalist, "--cache", cache, "--no-progress")
    assert result.exit_code == 1
    assert_one_line_error(result.output, path, pattern)
    assert not (cache / KAGGLE_BAD / "meta.json").exists() and checksums(root) == before
