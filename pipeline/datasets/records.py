"""A case record: one patient's image and label files, as discovery finds them and data lists store them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.core.errors import InputError
from pipeline.tasks.modalities import MODALITIES

__all__ = ["IMAGE_2D", "KAGGLE_LGG", "LAYOUTS", "NIFTI", "PLANAR_LAYOUTS", "CaseRecord", "for_channels", "planar_record"]

#: How a record's files are laid out: NIfTI volumes (BraTS, MSD), a Kaggle LGG patient folder of
#: TIFF slices (``images`` and ``label`` are the folder), or one 2D image and its mask.
NIFTI, KAGGLE_LGG, IMAGE_2D = "nifti", "kaggle-lgg", "image-2d"

#: Every layout a record may have.
LAYOUTS: tuple[str, ...] = (NIFTI, KAGGLE_LGG, IMAGE_2D)

#: The layouts read from 2D image files (no spacing or orientation: unit spacing, identity affine).
PLANAR_LAYOUTS: tuple[str, ...] = (KAGGLE_LGG, IMAGE_2D)


@dataclass(frozen=True)
class CaseRecord:
    """One patient: absolute paths of its images and of its label, if any.

    ``images`` holds one file per entry of ``channels`` (the task's input channels, in its
    order), or one 4D file whose ``channel_indices`` give each channel's position in it. A
    ``kaggle-lgg`` record's image and label are its patient folder (the slices are listed from
    it) and an ``image-2d`` record's are one image file and its mask; ``channel_indices`` then
    give each channel's position among the file's colour components (None: grayscale).
    """

    case_id: str
    images: tuple[Path, ...]
    label: Path | None
    split: str
    fold: int | None = None
    channel_indices: tuple[int, ...] | None = None
    label_convention: str = "brats2017"
    channels: tuple[str, ...] = MODALITIES
    layout: str = NIFTI

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
        if self.layout != NIFTI:
            entry["layout"] = self.layout
        return entry


def for_channels(record: CaseRecord, channels: Sequence[str]) -> CaseRecord:
    """``record`` holding only ``channels``, in that order (a model's task on a case listed with more channels).

    Raises:
        InputError: naming the case's first file when it has no file (or 4D channel) for one of ``channels``.
    """
    channels = tuple(channels)
    if tuple(record.channels) == channels:
        return record
    missing = [channel for channel in channels if channel not in record.channels]
    if missing:
        raise InputError(record.images[0], f"case {record.case_id} has no {missing[0]} image, which the model's task needs ({', '.join(channels)})")
    index = [record.channels.index(channel) for channel in channels]
    if record.channel_indices is not None:
        return replace(record, channel_indices=tuple(record.channel_indices[i] for i in index), channels=channels)
    return replace(record, images=tuple(record.images[i] for i in index), channels=channels)


def planar_record(
    case_id: str, image: Path, label: Path | None, layout: str, channels: Sequence[str], channel_indices: tuple[int, ...] | None, label_convention: str
) -> CaseRecord:
    """The record of a 2D-layout case (a Kaggle patient folder, or an image and its mask), before its split is known."""
    return CaseRecord(
        case_id=case_id,
        images=(image,),
        label=label,
        split="training" if label is not None else "unlabelled",
        channel_indices=channel_indices,
        label_convention=label_convention,
        channels=tuple(channels),
        layout=layout,
    )
