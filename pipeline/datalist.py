"""Reading and checking the Decathlon-style data list files that every stage after discovery uses.

A data list is a JSON file::

    {
      "name": "synthetic", "release": "brats2021", "label_convention": "brats2017",
      "data_root": "../data/synthetic",          # absolute, or relative to the JSON file's folder
      "modalities": ["t1", "t1ce", "t2", "flair"],
      "num_folds": 5, "seed": 0, "test_fraction": 0.2,
      "training":   [{"case_id": ..., "image": [4 paths], "label": path, "fold": k}, ...],
      "validation": [...],                       # the cases of fold 0, the default validation fold
      "test":       [...],                       # held out, "fold": -1
      "unlabelled": [{"case_id": ..., "image": [...]}]   # no ground truth: inference only
    }

Image and label paths are relative to ``data_root``. An MSD entry has one 4D image path and
``"channel_indices"``: the channel of each canonical modality inside that file. An entry may
carry its own ``"label_convention"`` (a data root that mixes releases); it overrides the
top-level one for that case.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.errors import ConfigError
from pipeline.labels import get_convention
from pipeline.modalities import MODALITIES

#: The lists a data list may hold, in the order they are written.
SPLITS: tuple[str, ...] = ("training", "validation", "test", "unlabelled")

#: Names accepted where a command selects cases (``all`` = every labelled case).
SPLIT_CHOICES: tuple[str, ...] = ("training", "validation", "test", "unlabelled", "all")

_REQUIRED_KEYS = ("data_root", "label_convention", "training", "validation", "test")
_SETTING_KEYS = ("name", "release", "label_convention", "data_root", "modalities", "num_folds", "seed", "test_fraction")
_SAFE_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class CaseRecord:
    """One patient: absolute paths of its images (canonical order) and of its label, if any."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None
    split: str
    fold: int | None = None
    channel_indices: tuple[int, ...] | None = None
    label_convention: str = "brats2017"

    def to_entry(self, data_root: Path, default_convention: str | None = None) -> dict:
        """The JSON entry for this case, paths relative to ``data_root``.

        ``label_convention`` is written on the entry when it differs from ``default_convention``
        (the data list's top-level one); with no default it is left out.
        """
        entry: dict = {"case_id": self.case_id, "image": [p.relative_to(data_root).as_posix() for p in self.images]}
        if self.label is not None:
            entry["label"] = self.label.relative_to(data_root).as_posix()
        if self.fold is not None:
            entry["fold"] = self.fold
        if self.channel_indices is not None:
            entry["channel_indices"] = list(self.channel_indices)
        if default_convention is not None and self.label_convention != default_convention:
            entry["label_convention"] = self.label_convention
        return entry


@dataclass(frozen=True)
class Datalist:
    """A loaded, checked data list."""

    path: Path
    data_root: Path
    label_convention: str
    records: dict[str, tuple[CaseRecord, ...]]
    sha256: str
    num_folds: int
    name: str = ""

    def cases(self, split: str) -> list[CaseRecord]:
        """Cases of one split; ``all`` is every labelled case (training, validation and test)."""
        if split not in SPLIT_CHOICES:
            raise ConfigError(self.path, f"unknown split {split!r}; choose one of {', '.join(SPLIT_CHOICES)}")
        if split == "all":
            return [c for s in ("training", "validation", "test") for c in self.records[s]]
        return list(self.records[split])

    def fold_split(self, fold: int) -> tuple[list[CaseRecord], list[CaseRecord]]:
        """Training and validation cases for cross-validation fold ``fold`` (test cases excluded)."""
        pool = self.records["training"] + self.records["validation"]
        if not 0 <= fold < max(self.num_folds, 1):
            raise ConfigError(self.path, f"fold {fold} does not exist; this data list has {self.num_folds} folds")
        return [c for c in pool if c.fold != fold], [c for c in pool if c.fold == fold]


def _resolve_inside(data_root: Path, relative: object, where: Path, what: str) -> Path:
    if not isinstance(relative, str) or not relative:
        raise ConfigError(where, f"{what}: expected a path string, got {relative!r}")
    posix = PurePosixPath(relative)
    if posix.is_absolute() or ".." in posix.parts:
        raise ConfigError(where, f"{what}: path {relative!r} escapes the data root")
    return data_root / Path(*posix.parts)


def _check_convention(name: object, source: Path, where: str) -> str:
    if not isinstance(name, str):
        raise ConfigError(source, f"{where}label_convention must be a name, got {name!r}")
    try:
        get_convention(name)
    except ValueError as err:
        raise ConfigError(source, f"{where}{err}") from None
    return name


def load_datalist(path: str | Path) -> Datalist:
    """Read and check a data list; any problem is a one-line :class:`ConfigError` naming the file."""
    source = Path(path)
    try:
        raw_bytes = source.read_bytes()
    except OSError as err:
        raise ConfigError(source, f"cannot read data list: {err.strerror or err}") from err
    try:
        payload = json.loads(raw_bytes)
    except json.JSONDecodeError as err:
        raise ConfigError(source, f"not valid JSON ({err.msg} at line {err.lineno})") from err
    if not isinstance(payload, dict):
        raise ConfigError(source, "a data list must be a JSON object")
    missing = [key for key in _REQUIRED_KEYS if key not in payload]
    if missing:
        raise ConfigError(source, f"data list is missing key(s): {', '.join(missing)}")
    unknown = [key for key, value in payload.items() if isinstance(value, list) and key not in SPLITS and key not in _SETTING_KEYS]
    if unknown:
        raise ConfigError(source, f"unknown split(s) {', '.join(unknown)}; a data list holds {', '.join(SPLITS)}")
    modalities = payload.get("modalities", list(MODALITIES))
    if modalities != list(MODALITIES):
        raise ConfigError(source, f"modalities must be {list(MODALITIES)} (canonical order), got {modalities}")
    convention = _check_convention(payload["label_convention"], source, "")
    if not isinstance(payload["data_root"], str) or not payload["data_root"]:
        raise ConfigError(source, f"data_root must be a path string, got {payload['data_root']!r}")
    try:
        num_folds = int(payload.get("num_folds", 1) or 1)
    except (TypeError, ValueError):
        raise ConfigError(source, f"num_folds must be an integer, got {payload.get('num_folds')!r}") from None
    data_root = Path(payload["data_root"])
    if not data_root.is_absolute():
        data_root = (source.resolve().parent / data_root).resolve()

    records: dict[str, tuple[CaseRecord, ...]] = {}
    seen: dict[str, str] = {}
    for split in SPLITS:
        entries = payload.get(split, [])
        if not isinstance(entries, list):
            raise ConfigError(source, f"{split!r} must be a list")
        parsed = []
        for index, entry in enumerate(entries):
            where = f"{split}[{index}]"
            if not isinstance(entry, dict) or "case_id" not in entry or "image" not in entry:
                raise ConfigError(source, f"{where}: each entry needs 'case_id' and 'image'")
            case_id = entry["case_id"]
            if not isinstance(case_id, str) or not _SAFE_CASE_ID.match(case_id):
                raise ConfigError(source, f"{where}: case id {case_id!r} is not a safe file name")
            if case_id in seen:
                raise ConfigError(source, f"case {case_id} appears twice ({seen[case_id]} and {split})")
            seen[case_id] = split
            if split != "unlabelled" and "label" not in entry:
                raise ConfigError(source, f"{where} ({case_id}): missing 'label' (cases without one belong in 'unlabelled')")
            images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
            channel_indices = entry.get("channel_indices")
            expected = 1 if channel_indices is not None else len(MODALITIES)
            if len(images) != expected:
                raise ConfigError(source, f"{where} ({case_id}): expected {expected} image path(s), got {len(images)}")
            if channel_indices is not None and (
                not isinstance(channel_indices, list)
                or len(channel_indices) != len(MODALITIES)
                or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in channel_indices)
            ):
                raise ConfigError(source, f"{where} ({case_id}): channel_indices must be {len(MODALITIES)} channel numbers, got {channel_indices!r}")
            fold = entry.get("fold")
            if fold is not None and (not isinstance(fold, int) or isinstance(fold, bool)):
                raise ConfigError(source, f"{where} ({case_id}): fold must be an integer, got {fold!r}")
            label = entry.get("label")
            has_label = split != "unlabelled" or label is not None
            parsed.append(
                CaseRecord(
                    case_id=case_id,
                    images=tuple(_resolve_inside(data_root, p, source, f"{where} ({case_id}) image") for p in images),
                    label=_resolve_inside(data_root, label, source, f"{where} ({case_id}) label") if has_label else None,
                    split=split,
                    fold=fold,
                    channel_indices=tuple(channel_indices) if channel_indices is not None else None,
                    label_convention=_check_convention(entry["label_convention"], source, f"{where} ({case_id}): ")
                    if "label_convention" in entry
                    else convention,
                )
            )
        records[split] = tuple(parsed)
    return Datalist(
        path=source,
        data_root=data_root,
        label_convention=convention,
        records=records,
        sha256=hashlib.sha256(raw_bytes).hexdigest(),
        num_folds=num_folds,
        name=str(payload.get("name", "")),
    )
