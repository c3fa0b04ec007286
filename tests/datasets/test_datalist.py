import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from case_writers import CaseWriter, tumour, write_nifti
from click.testing import CliRunner

from pipeline.cli.main import main
from pipeline.datasets.datalist import SPLITS, assign_folds, build_datalist, datalist_task, load_datalist
from pipeline.datasets.records import CaseRecord
from pipeline.tasks.task import DEFAULT_TASK, TASKS, resolve_task
from pipeline.core.errors import ConfigError, InputError

IMAGES = ["c1/c1_t1.nii.gz", "c1/c1_t1ce.nii.gz", "c1/c1_t2.nii.gz", "c1/c1_flair.nii.gz"]


def _entry(case_id, fold=None, label=True, **extra):
    entry = {"case_id": case_id, "image": [p.replace("c1", case_id) for p in IMAGES], **extra}
    if label:
        entry["label"] = f"{case_id}/{case_id}_seg.nii.gz"
    if fold is not None:
        entry["fold"] = fold
    return entry


def _payload(**changes):
    payload = {
        "name": "demo",
        "release": "brats2021",
        "label_convention": "brats2017",
        "data_root": "../data",
        "modalities": ["t1", "t1ce", "t2", "flair"],
        "num_folds": 3,
        "seed": 0,
        "test_fraction": 0.2,
        "training": [_entry("a1", 1), _entry("a2", 2)],
        "validation": [_entry("b1", 0)],
        "test": [_entry("t1", -1)],
        "unlabelled": [_entry("u1", label=False)],
    }
    payload.update(changes)
    return payload


def _write(tmp_path: Path, payload) -> Path:
    path = tmp_path / "lists" / "demo.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(payload) if not isinstance(payload, str) else payload)
    return path


def _error(tmp_path, payload) -> str:
    path = _write(tmp_path, payload)
    with pytest.raises(ConfigError) as caught:
        load_datalist(path)
    assert caught.value.where == str(path)
    assert "\n" not in str(caught.value)
    return caught.value.problem


def test_a_good_list_loads(tmp_path):
    datalist = load_datalist(_write(tmp_path, _payload()))
    assert datalist.data_root == (tmp_path / "data").resolve()
    assert datalist.name == "demo" and datalist.num_folds == 3 and datalist.label_convention == "brats2017"
    assert [r.case_id for r in datalist.cases("all")] == ["a1", "a2", "b1", "t1"]
    (unlabelled,) = datalist.cases("unlabelled")
    assert unlabelled.label is None and unlabelled.split == "unlabelled"
    a1 = datalist.cases("training")[0]
    assert a1.images[0] == datalist.data_root / "a1" / "a1_t1.nii.gz"
    assert a1.label == datalist.data_root / "a1" / "a1_seg.nii.gz"
    assert a1.fold == 1 and a1.split == "training" and a1.label_convention == "brats2017"
    train, val = datalist.fold_split(1)
    assert [r.case_id for r in val] == ["a1"] and [r.case_id for r in train] == ["a2", "b1"]
    assert len(datalist.sha256) == 64


@pytest.mark.parametrize("fold", [0, 1, 2])
def test_each_fold_validates_its_own_cases_and_trains_on_the_rest(tmp_path, fold):
    datalist = load_datalist(_write(tmp_path, _payload(training=[_entry("a1", 1), _entry("a2", 2), _entry("a3", 0)])))
    train, val = datalist.fold_split(fold)
    assert [r.case_id for r in val] == [r.case_id for r in datalist.cases("training") + datalist.cases("validation") if r.fold == fold]
    assert all(r.fold != fold for r in train)
    assert {r.case_id for r in train} | {r.case_id for r in val} == {"a1", "a2", "a3", "b1"}  # never the test or unlabelled cases
    assert not {r.case_id for r in train} & {r.case_id for r in val}


def test_an_absolute_data_root(tmp_path):
    assert load_datalist(_write(tmp_path, _payload(data_root=str(tmp_path / "x")))).data_root == tmp_path / "x"


@pytest.mark.parametrize("key", ["data_root", "label_convention", "training", "validation", "test"])
def test_missing_keys(tmp_path, key):
    payload = _payload()
    del payload[key]
    assert _error(tmp_path, payload) == f"data list is missing key(s): {key}"


def test_unknown_split(tmp_path):
    assert _error(tmp_path, _payload(holdout=[_entry("h1")])).startswith("unknown split(s) holdout")


def test_unknown_split_choice_and_fold(tmp_path):
    datalist = load_datalist(_write(tmp_path, _payload()))
    with pytest.raises(ConfigError, match="unknown split 'train'"):
        datalist.cases("train")
    with pytest.raises(ConfigError, match="fold 3 does not exist; this data list has 3 folds"):
        datalist.fold_split(3)


@pytest.mark.parametrize(
    "bad_path",
    ["../outside/x.nii.gz", "a1/../../x.nii.gz", "/etc/passwd", ""],
)
@pytest.mark.parametrize("field", ["image", "label"])
def test_paths_escaping_the_data_root(tmp_path, bad_path, field):
    entry = _entry("a1", 1)
    if field == "image":
        entry["image"][2] = bad_path
    else:
        entry["label"] = bad_path
    problem = _error(tmp_path, _payload(training=[entry]))
    assert problem.startswith(f"training[0] (a1) {field}: ")
    assert "escapes the data root" in problem or "expected a path string" in problem


@pytest.mark.parametrize("case_id", ["../a1", "a/b", ".hidden", "", "a 1", 7, None])
def test_unsafe_case_ids(tmp_path, case_id):
    entry = _entry("a1", 1)
    entry["case_id"] = case_id
    assert _error(tmp_path, _payload(training=[entry])) == f"training[0]: case id {case_id!r} is not a safe file name"


def test_duplicate_case_ids(tmp_path):
    assert _error(tmp_path, _payload(test=[_entry("a2", -1)])) == "case a2 appears twice (training and test)"
    assert _error(tmp_path, _payload(training=[_entry("a1", 1), _entry("a1", 2)])) == "case a1 appears twice (training and training)"


def test_labelled_splits_need_a_label(tmp_path):
    problem = _error(tmp_path, _payload(test=[_entry("t1", -1, label=False)]))
    assert problem == "test[0] (t1): missing 'label' (cases without one belong in 'unlabelled')"
    empty_label = _entry("t1", -1)
    empty_label["label"] = ""
    assert "expected a path string" in _error(tmp_path, _payload(test=[empty_label]))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"label_convention": "brats2099"}, "unknown label convention 'brats2099'"),
        ({"label_convention": ["brats2017"]}, "label_convention must be a name"),
        ({"modalities": ["flair", "t1", "t1ce", "t2"]}, "modalities must be ['t1', 't1ce', 't2', 'flair']"),
        ({"num_folds": "five"}, "num_folds must be an integer"),
        ({"data_root": 3}, "data_root must be a path string"),
        ({"training": {"a1": 1}}, "'training' must be a list"),
        ({"training": [{"case_id": "a1"}]}, "training[0]: each entry needs 'case_id' and 'image'"),
        ({"training": [_entry("a1", fold="1")]}, "training[0] (a1): fold must be an integer"),
        ({"training": [{**_entry("a1", 1), "image": IMAGES[:3]}]}, "training[0] (a1): expected 4 image path(s), got 3"),
        ({"training": [{**_entry("a1", 1), "label_convention": "nope"}]}, "training[0] (a1): unknown label convention 'nope'"),
    ],
)
def test_malformed_contents(tmp_path, changes, message):
    assert message in _error(tmp_path, _payload(**changes))


def test_not_json_or_not_an_object(tmp_path):
    assert _error(tmp_path, "{not json").startswith("not valid JSON")
    assert _error(tmp_path, "[1, 2]") == "a data list must be a JSON object"
    with pytest.raises(ConfigError, match="cannot read data list"):
        load_datalist(tmp_path / "absent.json")


def test_msd_entries_with_channel_indices(tmp_path):
    entry = {"case_id": "BRATS_001", "image": ["imagesTr/BRATS_001.nii.gz"], "label": "labelsTr/BRATS_001.nii.gz", "fold": 0, "channel_indices": [1, 2, 3, 0]}
    record = load_datalist(_write(tmp_path, _payload(label_convention="msd", validation=[entry]))).cases("validation")[0]
    assert record.channel_indices == (1, 2, 3, 0) and len(record.images) == 1
    assert "channel_indices must be 4 channel numbers" in _error(tmp_path, _payload(validation=[{**entry, "channel_indices": [1, 2]}]))
    assert "expected 1 image path(s), got 4" in _error(tmp_path, _payload(validation=[{**entry, "image": IMAGES}]))


def test_an_entry_level_label_convention_overrides_the_top_level_one(tmp_path):
    payload = _payload(unlabelled=[_entry("u1", label=False, label_convention="brats2023")])
    datalist = load_datalist(_write(tmp_path, payload))
    assert datalist.label_convention == "brats2017"
    assert datalist.cases("unlabelled")[0].label_convention == "brats2023"
    assert datalist.cases("training")[0].label_convention == "brats2017"


def test_a_list_written_before_tasks_holds_the_glioma_task(tmp_path):
    path = _write(tmp_path, _payload())
    assert load_datalist(path).task == DEFAULT_TASK
    assert datalist_task(path) == DEFAULT_TASK.to_dict()


def test_a_stored_task_is_read_back_and_decides_the_entries(tmp_path):
    task = resolve_task("whole-tumour", ["flair"])
    entry = {"case_id": "a1", "image": ["a1/a1_flair.nii.gz"], "label": "a1/a1_seg.nii.gz", "fold": 0}
    path = _write(tmp_path, _payload(task=task.to_dict(), modalities=["flair"], training=[], validation=[entry], test=[], unlabelled=[]))
    datalist = load_datalist(path)
    assert datalist.task == task and datalist_task(path) == task.to_dict()
    (record,) = datalist.cases("validation")
    assert record.channels == ("flair",) and record.images == (datalist.data_root / "a1" / "a1_flair.nii.gz",)
    assert "expected 1 image path(s), got 4" in _error(tmp_path, _payload(task=task.to_dict(), modalities=["flair"]))
    assert "modalities must be ['flair'] (task whole-tumour[flair]'s channels, in order)" in _error(tmp_path, _payload(task=task.to_dict()))


@pytest.mark.parametrize(
    "task, message",
    [
        ({"name": "x"}, "malformed task: missing key 'channels'"),
        ({**DEFAULT_TASK.to_dict(), "classes": ["NEC", "NEC"]}, "malformed task: classes must be distinct"),
        ("brats-glioma", "malformed task: a task is a mapping"),
    ],
)
def test_a_malformed_stored_task_is_one_line_naming_the_list(tmp_path, task, message):
    assert message in _error(tmp_path, _payload(task=task))
    with pytest.raises(ConfigError, match=message):
        datalist_task(_write(tmp_path, _payload(task=task)))


def test_a_convention_the_task_does_not_read_is_refused(tmp_path):
    task = TASKS["brats2024-ped"].to_dict()
    assert "unknown label convention 'brats2017'; task brats2024-ped reads brats2024-ped, internal" in _error(tmp_path, _payload(task=task))


def test_to_entry_round_trips_and_writes_a_differing_convention(tmp_path):
    root = tmp_path / "data"
    record = CaseRecord("u1", tuple(root / p.replace("c1", "u1") for p in IMAGES), None, "unlabelled", label_convention="brats2023")
    assert record.to_entry(root) == _entry("u1", label=False)
    assert record.to_entry(root, default_convention="brats2023") == _entry("u1", label=False)
    assert record.to_entry(root, default_convention="brats2017") == _entry("u1", label=False, label_convention="brats2023")


# ---- writing a data list: patient-level folds (the datalist command) ----

CASE_IDS = [f"BraTS2021_{n:05d}" for n in range(0, 60, 3)]


@pytest.fixture
def root(tmp_path):
    """Twelve labelled BraTS 2021 cases and two unlabelled ones, inside ``tmp_path/data``."""
    writer = CaseWriter()
    data = tmp_path / "data" / "release"
    for number in range(12):
        writer.legacy(data, f"BraTS2021_{number * 7:05d}", seed=number)
    for number in (90, 91):
        writer.legacy(data, f"BraTS2021_{number:05d}", labels=None)
    return data


def test_assign_folds_is_stable_and_ignores_input_order():
    first = assign_folds(CASE_IDS, folds=5, test_fraction=0.2, seed=3)
    assert assign_folds(list(reversed(CASE_IDS)), folds=5, test_fraction=0.2, seed=3) == first
    assert assign_folds(CASE_IDS, folds=5, test_fraction=0.2, seed=4) != first


def test_assign_folds_follows_the_documented_recipe():
    ordered = sorted(CASE_IDS)
    shuffled = [ordered[i] for i in np.random.default_rng(7).permutation(len(ordered))]
    assignment = assign_folds(CASE_IDS, folds=3, test_fraction=0.25, seed=7)
    assert [assignment[c] for c in shuffled] == [-1] * 5 + [i % 3 for i in range(15)]


@pytest.mark.parametrize(
    "n, folds, fraction, n_test, n_folds",
    [(20, 5, 0.2, 4, 5), (8, 2, 0.25, 2, 2), (10, 5, 0.0, 0, 5), (2, 5, 0.2, 0, 2), (3, 5, 0.5, 2, 1), (1, 5, 0.9, 0, 1), (0, 5, 0.2, 0, 0)],
)
def test_assign_folds_sizes(n, folds, fraction, n_test, n_folds):
    assignment = assign_folds(CASE_IDS[:n], folds=folds, test_fraction=fraction, seed=0)
    values = list(assignment.values())
    assert values.count(-1) == n_test
    assert sorted({v for v in values if v >= 0}) == list(range(n_folds))
    sizes = [values.count(f) for f in range(n_folds)]
    assert not sizes or max(sizes) - min(sizes) <= 1


def test_build_datalist_writes_the_documented_format(root, tmp_path):
    out = tmp_path / "data_lists" / "release.json"
    payload = build_datalist(root, out, folds=3, test_fraction=0.25, seed=0, progress=False)
    assert json.loads(out.read_text()) == payload
    assert payload["name"] == "release" and payload["release"] == "brats2021" and payload["label_convention"] == "brats2017"
    assert payload["data_root"] == "../data/release"  # inside the JSON folder's parent: stored relative
    assert payload["modalities"] == ["t1", "t1ce", "t2", "flair"]
    assert (payload["num_folds"], payload["seed"], payload["test_fraction"]) == (3, 0, 0.25)
    assert [len(payload[s]) for s in ("training", "validation", "test", "unlabelled")] == [6, 3, 3, 2]
    assert all(e["fold"] == 0 for e in payload["validation"])
    assert all(e["fold"] in (1, 2) for e in payload["training"])
    assert all(e["fold"] == -1 for e in payload["test"])
    assert all("fold" not in e and "label" not in e for e in payload["unlabelled"])
    entry = payload["training"][0]
    case = entry["case_id"]
    assert entry["image"] == [f"{case}/{case}_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")]
    assert entry["label"] == f"{case}/{case}_seg.nii.gz"
    assert "label_convention" not in entry
    for split in ("training", "validation", "test", "unlabelled"):
        assert [e["case_id"] for e in payload[split]] == sorted(e["case_id"] for e in payload[split])


def test_no_patient_in_two_sets_and_every_case_placed(root, tmp_path):
    payload = build_datalist(root, tmp_path / "l.json", folds=4, test_fraction=0.2, seed=11, progress=False)
    ids = [e["case_id"] for s in ("training", "validation", "test", "unlabelled") for e in payload[s]]
    assert len(ids) == len(set(ids)) == 14
    assert set(ids) == {p.name for p in root.iterdir()}


def test_the_written_file_loads_back(root, tmp_path):
    out = tmp_path / "lists" / "release.json"
    build_datalist(root, out, folds=3, test_fraction=0.25, seed=0, progress=False)
    datalist = load_datalist(out)
    assert datalist.data_root == root.resolve()
    assert datalist.num_folds == 3 and datalist.name == "release"
    records = [r for s in ("training", "validation", "test", "unlabelled") for r in datalist.cases(s)]
    assert all(p.is_file() for r in records for p in r.images)
    assert all(r.label.is_file() for r in datalist.cases("all"))
    train, val = datalist.fold_split(0)
    assert {r.case_id for r in val} == {r.case_id for r in datalist.cases("validation")}
    assert len(train) == 6


def test_same_input_and_seed_give_a_byte_identical_file(root, tmp_path):
    build_datalist(root, tmp_path / "a.json", seed=5, progress=False)
    build_datalist(root, tmp_path / "a2.json", seed=5, progress=False, workers=2)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "a2.json").read_bytes().replace(b'"a2"', b'"a"')
    build_datalist(root, tmp_path / "a.json", seed=5, progress=False)  # rewriting gives the same bytes
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "a2.json").read_bytes().replace(b'"a2"', b'"a"')
    build_datalist(root, tmp_path / "c.json", seed=6, progress=False)
    assert json.loads((tmp_path / "a.json").read_text())["test"] != json.loads((tmp_path / "c.json").read_text())["test"]


def test_adding_an_unlabelled_case_does_not_move_labelled_ones(root, tmp_path):
    before = build_datalist(root, tmp_path / "a.json", seed=0, progress=False)
    CaseWriter().legacy(root, "BraTS2021_00095", labels=None)
    after = build_datalist(root, tmp_path / "b.json", seed=0, progress=False)
    for split in ("training", "validation", "test"):
        assert after[split] == before[split]


def test_data_root_outside_the_json_parent_is_stored_absolute(root, tmp_path):
    out = tmp_path / "a" / "b" / "c" / "list.json"
    assert build_datalist(root, out, progress=False)["data_root"] == str(root.resolve())
    assert load_datalist(out).data_root == root.resolve()


def test_a_bad_case_stops_everything_and_nothing_is_written(root, tmp_path):
    bad_t1 = root / "BraTS2021_00014" / "BraTS2021_00014_t1.nii.gz"
    bad_seg = root / "BraTS2021_00035" / "BraTS2021_00035_seg.nii.gz"
    write_nifti(bad_t1, np.zeros((8, 8, 6), dtype=np.int16))
    write_nifti(bad_seg, tumour((1, 3)))
    out = tmp_path / "lists" / "x.json"
    out.parent.mkdir()
    out.write_text("previous")
    with pytest.raises(InputError) as caught:
        build_datalist(root, out, progress=False)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{bad_t1}: image is entirely zero"
    assert lines[1].startswith(f"{bad_seg}: labels [3] are not in the brats2017 convention")
    assert lines[2] == "2 problem(s) in 2 of 14 case(s); nothing was written (--skip-bad leaves bad cases out)"
    assert out.read_text() == "previous"
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.json"]  # no temporary file left behind


def test_skip_bad_leaves_bad_cases_out_with_warnings(root, tmp_path, caplog):
    bad = root / "BraTS2021_00014" / "BraTS2021_00014_t2.nii.gz"
    bad.write_text("not nifti")
    with caplog.at_level(logging.WARNING):
        payload = build_datalist(root, tmp_path / "l.json", skip_bad=True, progress=False)
    ids = {e["case_id"] for s in ("training", "validation", "test", "unlabelled") for e in payload[s]}
    assert "BraTS2021_00014" not in ids and len(ids) == 13
    assert any(m.startswith(f"warning: {bad}: not a readable NIfTI file") and m.endswith("(case BraTS2021_00014 left out)") for m in caplog.messages)


def test_discovery_warnings_are_logged(root, tmp_path, caplog):
    (root / "survival_info.csv").write_text("x")
    with caplog.at_level(logging.WARNING):
        build_datalist(root, tmp_path / "l.json", progress=False)
    assert f"warning: {root.resolve() / 'survival_info.csv'}: not a case file; ignored" in caplog.messages


def test_all_cases_bad_with_skip_bad_is_an_error(tmp_path):
    CaseWriter().legacy(tmp_path / "d", "BraTS2021_00001", labels=(0, 9))
    with pytest.raises(InputError, match=r"no usable case left: all 1 case\(s\) are bad"):
        build_datalist(tmp_path / "d", tmp_path / "l.json", skip_bad=True, progress=False)
    assert not (tmp_path / "l.json").exists()


def test_resection_cavity_needs_the_opt_in(tmp_path):
    writer = CaseWriter()
    data = tmp_path / "d"
    writer.brats2023(data, "BraTS-GLI-02001-100", labels=(0, 1, 2, 3, 4))
    writer.brats2023(data, "BraTS-GLI-02002-100")
    with pytest.raises(InputError, match=r"label 4 \(the BraTS 2024 resection cavity\) .*\(--map-resection-cavity\)"):
        build_datalist(data, tmp_path / "l.json", progress=False)
    payload = build_datalist(data, tmp_path / "l.json", allow_resection_cavity=True, progress=False)
    assert payload["release"] == "brats2023-gli" and payload["label_convention"] == "brats2023"
    assert len(payload["training"]) + len(payload["validation"]) + len(payload["test"]) == 2


def test_a_mixed_root_gets_per_entry_conventions_that_load_back(tmp_path):
    writer = CaseWriter()
    data = tmp_path / "d"
    for n in range(3):
        writer.legacy(data, f"BraTS2021_{n:05d}")
    writer.brats2023(data, "BraTS-MEN-00001-000")
    writer.brats2023(data, "BraTS-GLI-00001-000", labels=None)
    out = tmp_path / "l.json"
    payload = build_datalist(data, out, folds=2, test_fraction=0.0, progress=False)
    assert payload["release"] == "mixed" and payload["label_convention"] == "brats2017"
    entries = {e["case_id"]: e for s in ("training", "validation", "test", "unlabelled") for e in payload[s]}
    assert entries["BraTS-MEN-00001-000"]["label_convention"] == "brats2023"
    assert entries["BraTS-GLI-00001-000"]["label_convention"] == "brats2023"
    assert "label_convention" not in entries["BraTS2021_00000"]
    datalist = load_datalist(out)
    conventions = {r.case_id: r.label_convention for s in ("training", "validation", "unlabelled") for r in datalist.cases(s)}
    assert conventions["BraTS-MEN-00001-000"] == conventions["BraTS-GLI-00001-000"] == "brats2023"
    assert conventions["BraTS2021_00001"] == "brats2017"


def test_msd_data_list_keeps_channel_indices(tmp_path):
    root = CaseWriter().msd(tmp_path / "Task01_BrainTumour", train=(1, 2, 3, 4), test=(5,))
    out = tmp_path / "msd.json"
    payload = build_datalist(root, out, folds=2, test_fraction=0.25, progress=False)
    assert payload["release"] == "msd-task01" and payload["label_convention"] == "msd"
    entry = payload["training"][0] if payload["training"] else payload["validation"][0]
    assert entry["image"] == [f"imagesTr/{entry['case_id']}.nii.gz"] and entry["channel_indices"] == [1, 2, 3, 0]
    assert entry["label"] == f"labelsTr/{entry['case_id']}.nii.gz"
    assert [e["image"] for e in payload["unlabelled"]] == [["imagesTs/BRATS_005.nii.gz"]]
    record = load_datalist(out).cases("unlabelled")[0]
    assert record.channel_indices == (1, 2, 3, 0) and record.label_convention == "msd"


def test_the_task_is_stored_and_each_entry_holds_its_channels(root, tmp_path):
    out = tmp_path / "lists" / "flair.json"
    payload = build_datalist(root, out, folds=3, test_fraction=0.25, progress=False, task="whole-tumour", channels=["flair"])
    task = resolve_task("whole-tumour", ["flair"])
    assert payload["task"] == task.to_dict() and payload["modalities"] == ["flair"]
    for entry in payload["training"] + payload["unlabelled"]:
        assert entry["image"] == [f"{entry['case_id']}/{entry['case_id']}_flair.nii.gz"]
    datalist = load_datalist(out)
    assert datalist.task == task and all(r.channels == ("flair",) for r in datalist.cases("all"))
    glioma = build_datalist(root, tmp_path / "lists" / "glioma.json", folds=3, test_fraction=0.25, progress=False)
    assert glioma["task"] == DEFAULT_TASK.to_dict() and {s: [e["case_id"] for e in glioma[s]] for s in SPLITS} == {s: [e["case_id"] for e in payload[s]] for s in SPLITS}


def test_msd_entries_hold_the_channels_of_the_task(tmp_path):
    root = CaseWriter().msd(tmp_path / "Task01_BrainTumour", train=(1, 2), test=())
    payload = build_datalist(root, tmp_path / "msd.json", folds=1, test_fraction=0.0, progress=False, task="whole-tumour", channels=["t2", "flair"])
    entries = payload["training"] + payload["validation"]
    assert [e["channel_indices"] for e in entries] == [[3, 0], [3, 0]]  # T2w and FLAIR inside FLAIR, T1w, t1gd, T2w
    assert load_datalist(tmp_path / "msd.json").cases("all")[0].channel_indices == (3, 0)


def test_a_users_task_file_given_by_path(root, tmp_path):
    task_file = tmp_path / "lesion.yaml"
    task_file.write_text(
        yaml.safe_dump(
            {
                "name": "lesion",
                "channels": ["flair", "t2"],
                "classes": ["core", "oedema"],
                "labels": {"brats2017": {"core": [1, 4], "oedema": 2}},
                "structures": {"lesion": ["core", "oedema"], "core": ["core"]},
            }
        )
    )
    out = tmp_path / "lesion.json"
    result = _run("--data-root", root, "--out", out, "--task", task_file)
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("task lesion)\n")
    datalist = load_datalist(out)
    assert datalist.task.to_dict() == resolve_task(task_file).to_dict() and datalist.cases("all")[0].images[0].name.endswith("_flair.nii.gz")


def test_fewer_cases_than_folds_gives_fewer_folds_with_a_warning(tmp_path, caplog):
    writer = CaseWriter()
    for n in range(3):
        writer.legacy(tmp_path / "d", f"BraTS2021_{n:05d}")
    with caplog.at_level(logging.WARNING):
        payload = build_datalist(tmp_path / "d", tmp_path / "l.json", folds=5, test_fraction=0.0, progress=False)
    assert payload["num_folds"] == 3
    assert any("only 3 labelled case(s) outside the test set, so 3 fold(s) instead of 5" in m for m in caplog.messages)


@pytest.mark.parametrize(
    "options, where",
    [({"folds": 0}, "--folds"), ({"test_fraction": 1.0}, "--test-fraction"), ({"test_fraction": -0.1}, "--test-fraction"), ({"workers": 0}, "--workers")],
)
def test_bad_options(root, tmp_path, options, where):
    with pytest.raises(ConfigError) as caught:
        build_datalist(root, tmp_path / "l.json", progress=False, **options)
    assert caught.value.where == where
    assert not (tmp_path / "l.json").exists()


# ----------------------------------------------------------------------------- the datalist command


def _run(*args):
    return CliRunner().invoke(main, ["datalist", *map(str, args), "--no-progress"])


def test_datalist_command_writes_a_loadable_list(legacy_root, tmp_path):
    out = tmp_path / "lists" / "brats.json"
    result = _run("--data-root", legacy_root, "--out", out, "--folds", 3, "--test-fraction", 0.3, "--seed", 4)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{out}: 4 training, 3 validation, 3 test, 1 unlabelled (brats2021, 3 folds, task brats-glioma)\n"
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


def test_task_and_channels_options(legacy_root, tmp_path):
    out = tmp_path / "wt.json"
    result = _run("--data-root", legacy_root, "--out", out, "--task", "whole-tumour", "--channels", "t2, flair")
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["modalities"] == ["t2", "flair"]
    for args, message in [
        (["--task", "nope"], "error: --task: unknown task 'nope'; built-in: brats-glioma, whole-tumour"),
        (["--channels", "flair,dwi"], "error: --channels: choose distinct channels of task brats-glioma"),
        (["--task", "meningioma-rt", "--channels", "flair"], "error: --channels: choose distinct channels of task meningioma-rt (t1ce)"),
    ]:
        refused = _run("--data-root", legacy_root, "--out", tmp_path / "l.json", *args)
        assert refused.exit_code == 1 and refused.stderr.startswith(message) and len(refused.stderr.splitlines()) == 1
    assert not (tmp_path / "l.json").exists()


def test_help_lists_the_built_in_tasks():
    result = CliRunner().invoke(main, ["datalist", "--help"], terminal_width=200)
    assert result.exit_code == 0 and f"Built-in: {', '.join(TASKS)}." in " ".join(result.output.split())


def test_bad_options_are_usage_errors(legacy_root, tmp_path):
    for option, value in [("--folds", 0), ("--test-fraction", 1), ("--workers", 0)]:
        result = _run("--data-root", legacy_root, "--out", tmp_path / "l.json", option, value)
        assert result.exit_code == 2 and option in result.stderr
    assert not (tmp_path / "l.json").exists()


# ----------------------------------------------------------------------------- 2D layouts


def test_a_kaggle_root_is_listed_with_its_own_task_one_case_per_patient(tmp_path):
    from planar_cases import kaggle_root

    root = kaggle_root(tmp_path / "kaggle_3m", [(f"TCGA_AB_{n:04d}_20000101", 2 + n) for n in range(5)])
    out = tmp_path / "lists" / "lgg.json"
    result = _run("--data-root", root, "--out", out, "--folds", 2, "--test-fraction", 0.2)
    assert result.exit_code == 0, result.output
    assert "task kaggle-lgg" in result.output and "kaggle-lgg, 2 folds" in result.output
    payload = json.loads(out.read_text())
    assert payload["task"]["name"] == "kaggle-lgg" and payload["modalities"] == ["pre", "flair", "post"] and payload["label_convention"] == "mask255"
    entry = payload["validation"][0]
    assert entry["layout"] == "kaggle-lgg" and entry["image"] == [entry["case_id"]] and entry["label"] == entry["case_id"] and entry["channel_indices"] == [0, 1, 2]
    loaded = load_datalist(out)
    records = loaded.cases("all")
    assert loaded.task == TASKS["kaggle-lgg"] and len(records) == 5 and {r.layout for r in records} == {"kaggle-lgg"}
    assert {r.case_id: r.fold for r in records} == assign_folds([r.case_id for r in records], 2, 0.2, 0)  # folds by patient


def test_image_folders_are_listed_one_case_per_image_and_flair_of_kaggle_on_request(tmp_path):
    from planar_cases import image_pairs, kaggle_root

    out = tmp_path / "pairs.json"
    payload = build_datalist(image_pairs(tmp_path / "pairs", side_by_side=True, value=1), out, folds=1, test_fraction=0.0, progress=False)
    assert payload["task"]["name"] == "image-mask-2d" and [e["case_id"] for e in payload["validation"]] == ["a", "b", "c"]
    assert payload["validation"][0] == {"case_id": "a", "image": ["a.png"], "label": "a_mask.png", "fold": 0, "layout": "image-2d"}
    assert [r.images[0].name for r in load_datalist(out).cases("all")] == ["a.png", "b.png", "c.png"]
    flair = build_datalist(kaggle_root(tmp_path / "lgg"), tmp_path / "flair.json", folds=1, test_fraction=0.0, progress=False, channels=["flair"])
    assert flair["task"]["name"] == "kaggle-lgg[flair]" and flair["validation"][0]["channel_indices"] == [1]


def test_a_data_list_entry_of_an_unknown_layout_is_refused(tmp_path):
    path = tmp_path / "list.json"
    path.write_text(json.dumps(_payload(training=[_entry("a1", 1, layout="dicom")])))
    with pytest.raises(ConfigError, match="unknown layout 'dicom'"):
        load_datalist(path)


def test_a_brats_task_on_a_kaggle_root_is_one_clear_line(tmp_path):
    from planar_cases import kaggle_root

    result = _run("--data-root", kaggle_root(tmp_path / "lgg"), "--out", tmp_path / "l.json", "--task", "brats-glioma")
    assert result.exit_code == 1 and "use --task kaggle-lgg" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "l.json").exists()


@pytest.mark.real_data
def test_the_real_kaggle_patients_and_png_pairs(kaggle_lgg_dir, png_pairs_dir, tmp_path):
    from planar_cases import REAL_SLICES

    from pipeline.datasets.kaggle_lgg import list_slices

    lgg = build_datalist(kaggle_lgg_dir, tmp_path / "lgg.json", progress=False)
    records = load_datalist(tmp_path / "lgg.json").cases("all")
    assert lgg["task"]["name"] == "kaggle-lgg" and {r.case_id: len(list_slices(r.images[0])[0]) for r in records} == REAL_SLICES
    pairs = build_datalist(png_pairs_dir, tmp_path / "png.json", progress=False)
    assert pairs["task"]["name"] == "image-mask-2d" and sum(len(pairs[s]) for s in ("training", "validation", "test")) == 60
