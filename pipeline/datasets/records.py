"""A case record: one patient's image and label files, as discovery finds them and data lists store them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.modalities import MODALITIES

__all__ = ["CaseRecord"]


@dataclass(frozen=True)
class CaseRecord:
    """One patient: absolute paths of its images and of its label, if any.

    ``images`` holds one file per entry of ``channels`` (the task's input channels, in its
    order), or one 4D file whose ``channel_indices`` give each channel's position in it.
    """

    case_id: str
    images: tuple[Path, ...]
    label: Path | None
    split: str
    fold: int | None = None
    channel_indices: tuple[int, ...] | None = None
    label_convention: str = "brats2017"
    channels: tuple[str, ...] = MODALITIES

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
