"""The cache layout: atomic write, completeness, format version and the memory-mapped read (pipeline.preprocessing.cache)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import pipeline.preprocessing.cache
from pipeline.preprocessing.cache import (
    FORMAT_VERSION,
    IMAGE_FILE,
    INDEX_FILE,
    LABEL_FILE,
    META_FILE,
    IncompleteEntryError,
    complete_case_ids,
    discard,
    is_current,
    load_case,
    read_meta,
    task_meta,
    write_case,
    write_index,
)
from pipeline.core.errors import InputError
from pipeline.tasks.task import DEFAULT_TASK

SHAPE = (3, 4, 5, 6)  # (Z, C, X, Y)


def _arrays() -> tuple[np.ndarray, np.ndarray, dict]:
    z, c, x, y = SHAPE
    image = np.arange(np.prod(SHAPE), dtype=np.float16).reshape(SHAPE)
    label = (np.arange(z * x * y) % 4).astype(np.uint8).reshape(z, x, y)
    meta = {"case_id": "case", "shape": list(SHAPE), "has_label": True, "foreground_per_slice": np.count_nonzero(label, axis=(1, 2)).tolist()}
    return image, label, meta


def test_write_then_read_memory_mapped(tmp_path: Path) -> None:
    image, label, meta = _arrays()
    write_case(tmp_path / "case", image, label, meta)
    assert sorted(p.name for p in (tmp_path / "case").iterdir()) == [IMAGE_FILE, LABEL_FILE, META_FILE]
    written = json.loads((tmp_path / "case" / META_FILE).read_text())
    assert written["complete"] is True and written["format_version"] == FORMAT_VERSION
    for mmap in (True, False):
        case = load_case(tmp_path, "case", mmap=mmap)
        assert isinstance(case.image, np.memmap) is mmap and isinstance(case.label, np.memmap) is mmap
        assert np.array_equal(case.image, image) and np.array_equal(case.label, label)
        assert case.meta == {**written, "task": task_meta(DEFAULT_TASK)}  # an entry that names no task holds the default one
    assert complete_case_ids(tmp_path) == ["case"]
    assert is_current(tmp_path / "case", {"case_id": "case"}) and not is_current(tmp_path / "case", {"case_id": "other"})


def test_unlabelled_case_has_no_label_file(tmp_path: Path) -> None:
    image, label, meta = _arrays()
    write_case(tmp_path / "case", image, label, meta)
    write_case(tmp_path / "case", image, None, {**meta, "has_label": False, "foreground_per_slice": None})
    assert not (tmp_path / "case" / LABEL_FILE).exists() and load_case(tmp_path, "case").label is None
    with pytest.raises(InputError, match="case has no label"):
        read_meta(tmp_path, "case", require_label=True)


def _exited_pid() -> int:
    """The pid of a process that has already exited."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True).stdout)


def test_discarded_and_missing_entries_are_incomplete(tmp_path: Path) -> None:
    image, label, meta = _arrays()
    write_case(tmp_path / "case", image, label, meta)
    (tmp_path / "case" / ".image.npy.abcd1234.tmp").write_bytes(b"leftover of a killed write")
    (tmp_path / "case" / f".label.npy.{_exited_pid()}.abcd1234.tmp").write_bytes(b"leftover of a killed write")
    running = tmp_path / "case" / f".image.npy.{os.getpid()}.efgh5678.tmp"  # another process writing the entry now
    running.write_bytes(b"being written")
    discard(tmp_path / "case")
    assert sorted(p.name for p in (tmp_path / "case").iterdir()) == sorted([IMAGE_FILE, LABEL_FILE, running.name])
    assert complete_case_ids(tmp_path) == [] and not is_current(tmp_path / "case", {})
    with pytest.raises(IncompleteEntryError, match="meta.json missing"):
        load_case(tmp_path, "case")
    with pytest.raises(IncompleteEntryError, match="meta.json missing"):
        load_case(tmp_path, "never_written")
    with pytest.raises(InputError, match="cache folder not found"):
        complete_case_ids(tmp_path / "missing")


def test_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image, label, meta = _arrays()

    def disk_full(path, payload):  # noqa: ANN001
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline.preprocessing.cache, "write_json", disk_full)
    with pytest.raises(OSError):
        write_case(tmp_path / "case", image, label, meta)
    assert not (tmp_path / "case").exists()


def test_arrays_that_do_not_fit_the_manifest_are_refused(tmp_path: Path) -> None:
    image, label, meta = _arrays()
    write_case(tmp_path / "case", image, label, meta)
    np.save(tmp_path / "case" / IMAGE_FILE, image.astype(np.float32))
    with pytest.raises(InputError, match="expected float16") as caught:
        load_case(tmp_path, "case")
    assert caught.value.where == str(tmp_path / "case" / IMAGE_FILE)
    (tmp_path / "case" / LABEL_FILE).write_bytes(b"not an array")
    np.save(tmp_path / "case" / IMAGE_FILE, image)
    with pytest.raises(InputError, match="cannot read the cached arrays"):
        load_case(tmp_path, "case")


def test_index_lists_the_complete_cases_by_split(tmp_path: Path) -> None:
    image, label, meta = _arrays()
    write_case(tmp_path / "a", image, label, meta)
    write_case(tmp_path / "b", image, None, meta)
    datalist = tmp_path / "list.json"
    datalist.write_text("{}")
    write_index(tmp_path, datalist, "0" * 64, {"training": ["a", "missing"], "test": ["b"], "validation": ["missing"]})
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    assert index["cases"] == ["a", "b"] and index["splits"] == {"training": ["a"], "test": ["b"]}
    assert index["format_version"] == FORMAT_VERSION and index["datalist"] == str(datalist.resolve())


# ----------------------------------------------------------------------------- an old or foreign cache, through every reader


def _read_with_load_case(cache: Path, case_id: str, datalist: Path) -> None:
    load_case(cache, case_id)


def _read_with_training_dataset(cache: Path, case_id: str, datalist: Path) -> None:
    from pipeline.training.loaders import build_train_dataset

    build_train_dataset(cache, [case_id], "2d")


def _read_with_validation_volumes(cache: Path, case_id: str, datalist: Path) -> None:
    from pipeline.training.validation_dice import ValidationVolumes

    ValidationVolumes(cache, [case_id])


def _read_with_fold_selection(cache: Path, case_id: str, datalist: Path) -> None:
    from pipeline.training.workflow import fold_case_ids

    fold_case_ids(datalist, 0, cache)


READERS: dict[str, Callable[[Path, str, Path], None]] = {
    "load_case": _read_with_load_case,
    "training_dataset": _read_with_training_dataset,
    "validation_volumes": _read_with_validation_volumes,
    "fold_case_ids": _read_with_fold_selection,
}


@pytest.mark.parametrize("version", ["missing", 0, FORMAT_VERSION + 1])
def test_an_old_or_foreign_cache_is_the_same_one_line_error_in_every_reader(
    version: object, tiny_cache: Path, tiny_datalist: Path, tmp_path: Path
) -> None:
    from pipeline.datasets.datalist import load_datalist

    cache = Path(shutil.copytree(tiny_cache, tmp_path / "cache"))
    training, validation = load_datalist(tiny_datalist).fold_split(0)
    case_id = training[0].case_id
    meta_path = cache / case_id / META_FILE
    meta = json.loads(meta_path.read_text())
    if version == "missing":
        del meta["format_version"]
    else:
        meta["format_version"] = version
    meta_path.write_text(json.dumps(meta))
    messages = set()
    for name, read in READERS.items():
        with pytest.raises(InputError) as caught:
            read(cache, case_id, tiny_datalist)
        assert not isinstance(caught.value, IncompleteEntryError), name
        messages.add(str(caught.value))
    assert len(messages) == 1, messages
    (message,) = messages
    shown = None if version == "missing" else version
    assert message == f"{cache / case_id}: cache format {shown} is not {FORMAT_VERSION} (an old or foreign cache); run preprocess again"
    assert "\n" not in message
