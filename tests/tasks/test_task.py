"""Tasks: the built-in ones, task files, label round trips per convention, structures and regions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.tasks import labels
from pipeline.core.errors import ConfigError
from pipeline.tasks.task import DEFAULT_TASK, TASKS, get_task, load_task, resolve_task, task_from_dict


def test_the_default_task_is_the_brats_glioma_labels_module() -> None:
    """Nothing changes for existing data: the glioma task's conventions, structures and regions are labels.py's."""
    for name in ("brats2017", "brats2023", "msd", "internal"):
        mine, theirs = DEFAULT_TASK.convention(name), labels.get_convention(name)
        assert dict(mine.to_internal_map) == dict(theirs.to_internal_map) and mine.from_internal_map == theirs.from_internal_map
        assert dict(mine.optional_labels) == dict(theirs.optional_labels)
    seg = np.random.default_rng(0).integers(0, 4, (6, 7, 5)).astype(np.uint8)
    masks, reference = DEFAULT_TASK.structure_masks(seg), labels.region_masks(seg)
    assert list(masks) == list(labels.SCORED_STRUCTURES) and all(np.array_equal(masks[k], reference[k]) for k in reference)
    assert np.array_equal(DEFAULT_TASK.labels_to_regions(seg), labels.labels_to_regions(seg))
    assert DEFAULT_TASK.channels == ("t1", "t1ce", "t2", "flair") and DEFAULT_TASK.out_channels == 4
    assert DEFAULT_TASK.with_target("regions").out_channels == 3


@pytest.mark.parametrize("task", list(TASKS.values()), ids=list(TASKS))
def test_every_convention_of_every_task_round_trips(task) -> None:
    rng = np.random.default_rng(1)
    internal = rng.integers(0, task.num_classes, (8, 9, 4)).astype(np.uint8)
    for name in task.conventions:
        convention = task.convention(name)
        written = convention.from_internal(internal)
        assert set(np.unique(written)) <= set(convention.to_internal_map)
        assert np.array_equal(convention.to_internal(written), internal), name
    assert task_from_dict(json.loads(json.dumps(task.to_dict()))) == task


@pytest.mark.parametrize("task", [t for t in TASKS.values() if t.regions], ids=[n for n, t in TASKS.items() if t.regions])
def test_nested_regions_decode_exactly(task) -> None:
    internal = np.random.default_rng(2).integers(0, task.num_classes, (5, 6, 7)).astype(np.uint8)
    assert np.array_equal(task.regions_to_labels(task.labels_to_regions(internal)), internal)
    probabilities = task.labels_to_regions(internal).astype(np.float32) * 0.8 + 0.1
    assert np.array_equal(task.with_target("regions").decode(probabilities), internal)


def test_the_2024_schemes_are_scored_as_the_challenge_scores_them() -> None:
    post, ped = get_task("brats2024-post-treatment"), get_task("brats2024-ped")
    convention = post.convention("brats2023")
    seg = convention.to_internal(np.array([0, 1, 2, 3, 4]))
    masks = post.structure_masks(seg)
    assert masks["RC"].tolist() == [False, False, False, False, True] and not masks["WT"][4]  # RC scored on its own, not in WT
    assert masks["TC"].tolist() == [False, True, False, True, False] and masks["WT"].tolist() == [False, True, True, True, False]
    masks = ped.structure_masks(ped.convention("brats2024-ped").to_internal(np.array([0, 1, 2, 3, 4])))
    assert masks["TC"].tolist() == [False, True, True, True, False] and masks["WT"].tolist() == [False, True, True, True, True]
    assert masks["ET"].tolist() == [False, True, False, False, False]


def test_whole_tumour_merges_every_tumour_label_and_writes_the_first() -> None:
    task = resolve_task("whole-tumour", ["flair"])
    assert task.channels == ("flair",) and task.num_channels == 1 and task.out_channels == 2
    convention = task.convention("brats2017")
    assert convention.to_internal(np.array([0, 1, 2, 4])).tolist() == [0, 1, 1, 1]
    assert convention.from_internal(np.array([0, 1])).tolist() == [0, 1]
    with pytest.raises(ValueError, match="labels \\[3\\]"):
        convention.to_internal(np.array([0, 3]))


def test_channel_subsets_keep_their_order_and_refuse_unknown_channels() -> None:
    assert resolve_task(None, ["t2", "flair"]).channels == ("t2", "flair")
    with pytest.raises(ConfigError, match="choose distinct channels"):
        resolve_task(None, ["dwi"])
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        get_task("nope")


def test_a_users_task_file_declares_a_new_label_scheme(tmp_path: Path) -> None:
    payload = {
        "name": "my-lesions",
        "channels": ["flair", "t1ce"],
        "classes": ["oedema", "core"],
        "labels": {"mine": {"oedema": 5, "core": [6, 7]}},
        "structures": {"lesion": ["oedema", "core"], "core": ["core"]},
        "target": "regions",
        "regions": ["lesion", "core"],
    }
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(payload))
    task = resolve_task(tmp_path / "task.yaml")
    assert task.name == "my-lesions" and task.out_channels == 2
    assert task.convention("mine").to_internal(np.array([0, 5, 6, 7])).tolist() == [0, 1, 2, 2]
    assert task.regions_to_labels(np.array([[1, 1, 0], [0, 1, 0]])).tolist() == [1, 2, 0]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"structures": {"WT": ["NEC", "XX"]}}, "structure WT names unknown classes \\['XX'\\]"),
        ({"labels": {"brats2017": {"NEC": 1, "ED": 1, "ET": 4}}}, "value 1 is given to both NEC and ED"),
        ({"labels": {"brats2017": {"NEC": 1, "ED": 2}}}, "gives no value to \\['ET'\\]"),
        ({"target": "sigmoid"}, "target must be one of"),
        ({"regions": ["XX"]}, "region 'XX' is not one of the structures"),
        ({"classes": ["NEC", "NEC", "ET"]}, "classes must be distinct"),
        ({"labels": {"brats2017": {"NEC": 1, "ED": 2, "ET": 300}}}, "label values must be integers 1-255"),
        ({"colour": {}}, "unknown keys \\['colour'\\]"),
    ],
)
def test_a_malformed_task_file_is_one_line_naming_the_file(tmp_path: Path, change: dict, problem: str) -> None:
    payload = {**DEFAULT_TASK.to_dict(), **change}
    payload.pop("background_values", None) if "labels" in change else None
    path = tmp_path / "task.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(ConfigError, match=problem) as raised:
        load_task(path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def test_a_task_file_missing_a_key_or_unreadable(tmp_path: Path) -> None:
    payload = DEFAULT_TASK.to_dict()
    del payload["classes"]
    (tmp_path / "a.json").write_text(json.dumps(payload))
    with pytest.raises(ConfigError, match="missing key 'classes'"):
        load_task(tmp_path / "a.json")
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read task file"):
        load_task(tmp_path / "b.json")


def test_the_2d_tasks_declare_their_masks_postprocessing_and_padding() -> None:
    kaggle, gray, rgb = get_task("kaggle-lgg"), get_task("image-mask-2d"), get_task("image-mask-2d-rgb")
    assert kaggle.channels == ("pre", "flair", "post") and [kaggle.channel_name(c) for c in kaggle.channels] == ["pre-contrast", "FLAIR", "post-contrast"]
    mask = kaggle.convention("mask255")
    assert mask.to_internal(np.array([0, 1, 255])).tolist() == [0, 1, 1]  # 0/255 and 0/1 masks both read
    assert mask.from_internal(np.array([0, 1])).tolist() == [0, 255]  # written as 0/255
    assert kaggle.postprocessing == {"keep_largest": ("tumour",)} and kaggle.to_dict()["postprocessing"] == {"keep_largest": ["tumour"]}
    assert gray.channels == ("image",) and rgb.num_channels == 3 and gray.planar_size == rgb.planar_size == (512, 512) and gray.planar_fit == "pad"
    assert task_from_dict(gray.to_dict()).planar_size == (512, 512) and task_from_dict({**gray.to_dict(), "planar_fit": "resize"}).planar_fit == "resize"


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [({"postprocessing": {"smooth": ["WT"]}}, "postprocessing step 'smooth'"), ({"postprocessing": {"keep_largest": ["ET"]}}, "must name classes"), ({"planar_size": [0, 5]}, "planar_size"), ({"planar_fit": "crop"}, "planar_fit")],
)
def test_malformed_postprocessing_or_padding_is_refused(extra: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        task_from_dict({**get_task("whole-tumour").to_dict(), **extra})


# ---- every built-in task end to end, from its synthetic layout through the CLI -------------------

END_TO_END = [
    ("brats-glioma", None, "2.5d"),
    ("whole-tumour", "flair", "2d"),
    ("whole-tumour", "flair", "2.5d"),
    ("whole-tumour", "flair", "3d"),
    ("brats2024-post-treatment", None, "2.5d"),
    ("brats2024-ped", None, "2.5d"),
    ("meningioma-rt", None, "2.5d"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "channels", "mode"), END_TO_END, ids=[f"{n}-{c or 'all'}-{m}" for n, c, m in END_TO_END])
def test_a_built_in_task_runs_end_to_end_from_the_cli(name: str, channels: str | None, mode: str, tmp_path: Path) -> None:
    """synth --task -> datalist --task -> preprocess -> train -> predict -> evaluate: the task's channels, labels and structures throughout."""
    import nibabel as nib
    import pandas as pd
    from click.testing import CliRunner

    from pipeline.cli.main import main
    from pipeline.datasets.datalist import load_datalist
    from tiny_training import TINY_NETWORK_AND_BUDGET

    def run(*args: str) -> None:
        result = CliRunner().invoke(main, [*args], catch_exceptions=False)
        assert result.exit_code == 0, result.output[-2000:]

    cohort, datalist, cache, out = tmp_path / "cohort", tmp_path / "list.json", tmp_path / "cache", tmp_path / "run"
    run("synth", "--out", str(cohort), "--cases", "5", "--size", "tiny", "--task", name, "--no-progress")
    run("datalist", "--data-root", str(cohort), "--out", str(datalist), "--task", name, *(("--channels", channels) if channels else ()),
        "--folds", "2", "--test-fraction", "0.2", "--no-progress")  # fmt: skip
    listing = load_datalist(datalist)
    task = listing.task
    assert task.name.startswith(name) and (channels is None or task.channels == (channels,))
    run("preprocess", "--datalist", str(datalist), "--cache", str(cache), "--no-progress")
    settings = [item for s in (*TINY_NETWORK_AND_BUDGET, "patch_size=[16, 16, 8]", "progress=false") for item in ("--set", s)]
    run("train", "--datalist", str(datalist), "--cache", str(cache), "--mode", mode, "--epochs", "1", "--out", str(out), *settings)
    stored = json.loads((out / "inference.json").read_text())["task"]
    assert resolve_task(stored) == task  # the run folder carries its task

    record = listing.cases("test")[0]
    run("predict", "--model", str(out), "--input", str(record.images[0].parent), "--out", str(tmp_path / "pred"), "--no-progress")
    seg = nib.load(next((tmp_path / "pred").glob(f"{record.case_id}*.nii.gz")))
    source = nib.load(record.images[0])
    assert seg.shape == source.shape and np.allclose(seg.affine, source.affine)
    written = set(np.unique(np.asarray(seg.dataobj)).tolist())
    assert written <= set(task.convention(record.label_convention).to_internal_map)  # the release's own label values
    run("predict", "--model", str(out), "--input", str(record.images[0].parent), "--out", str(tmp_path / "internal"),
        "--label-convention", "internal", "--no-progress")  # fmt: skip
    internal = nib.load(next((tmp_path / "internal").glob(f"{record.case_id}*.nii.gz")))
    assert set(np.unique(np.asarray(internal.dataobj)).tolist()) <= set(range(task.num_classes))

    run("evaluate", "--model", str(out), "--datalist", str(datalist), "--out", str(tmp_path / "eval"), "--no-overlays", "--no-progress")
    metrics = pd.read_csv(tmp_path / "eval" / "metrics.csv")
    assert {f"dice_{s}" for s in task.structures} <= set(metrics.columns)
    assert not {f"dice_{s}" for s in ("NEC", "TC") if s not in task.structures} & set(metrics.columns)
    assert metrics[[f"dice_{s}" for s in task.structures]].apply(lambda c: c.between(0, 1)).all().all()


def test_a_task_declares_its_metric_set():
    from pipeline.tasks.task import METRIC_SETS, task_from_dict

    assert (get_task("brats-glioma").metrics, get_task("kaggle-lgg").metrics, get_task("image-mask-2d-rgb").metrics) == ("volume", "volume-voxels", "image")
    assert get_task("kaggle-lgg").to_dict()["metrics"] == "volume-voxels" and "metrics" not in get_task("brats-glioma").to_dict()
    assert task_from_dict(get_task("image-mask-2d").to_dict()) == get_task("image-mask-2d") and set(METRIC_SETS) == {"volume", "volume-voxels", "image"}
    with pytest.raises(ConfigError, match="metrics must be one of"):
        task_from_dict({**get_task("kaggle-lgg").to_dict(), "metrics": "slices"})
