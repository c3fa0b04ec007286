import json
from pathlib import Path

import pytest

from pipeline.datalist import CaseRecord, load_datalist
from pipeline.errors import ConfigError

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


def test_to_entry_round_trips_and_writes_a_differing_convention(tmp_path):
    root = tmp_path / "data"
    record = CaseRecord("u1", tuple(root / p.replace("c1", "u1") for p in IMAGES), None, "unlabelled", label_convention="brats2023")
    assert record.to_entry(root) == _entry("u1", label=False)
    assert record.to_entry(root, default_convention="brats2023") == _entry("u1", label=False)
    assert record.to_entry(root, default_convention="brats2017") == _entry("u1", label=False, label_convention="brats2023")
