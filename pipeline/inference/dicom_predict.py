"""Segment a DICOM study end to end: its series, prepared, segmented, and the labels back on the original series.

:func:`predict_dicom_study` runs four stages, each timed:

1. ``read``: the series of each channel the model takes (:func:`pipeline.datasets.dicom.read_study`;
   ``series`` overrides the guess from the tags);
2. ``prepare``: each contrast registered rigidly to the reference (T1ce when the model takes it),
   resampled onto the reference's 1 mm grid, the brain extracted
   (:func:`pipeline.preprocessing.raw_scans.prepare_scans`), written as a BraTS-style case folder
   ``OUT/prepared/<case_id>/`` (NIfTI per channel, brain mask, ITK transform files);
3. ``segment``: the model on that case like on any NIfTI case: ``OUT/<case_id>_seg.nii.gz`` on the
   prepared grid (and probabilities or uncertainty maps when asked for);
4. ``native``: the labels resampled (nearest neighbour, through each contrast's registration) onto
   the grid of each series asked for (default: the reference's), written as
   ``OUT/<case_id>_<channel>_native_seg.nii.gz`` and, with ``dicom_seg``, as a DICOM Segmentation
   ``OUT/<case_id>_<channel>_seg.dcm`` referencing that series (:mod:`pipeline.inference.dicom_seg`).

:func:`holds_dicom` tells a DICOM study folder from a NIfTI case folder with the standard library
only, so the rest of ``predict`` runs without the ``dicom`` extra.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from pipeline.core.errors import ConfigError
from pipeline.core.io import save_sitk
from pipeline.datasets.dicom import read_study, require_dicom_extra
from pipeline.inference.dicom_seg import write_dicom_seg
from pipeline.inference.model import case_record, output_convention
from pipeline.inference.writers import (
    probability_filename,
    segmentation_filename,
    write_probabilities,
    write_segmentation,
)
from pipeline.preprocessing.raw_scans import prepare_scans, to_native, write_prepared
from pipeline.tasks import written_convention

__all__ = ["DicomCasePrediction", "holds_dicom", "predict_dicom_study", "reference_channel", "series_choices"]

#: Files looked at, at most, to tell whether a folder holds a DICOM study.
_FILES_SAMPLED = 64


def holds_dicom(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder with DICOM files (Part 10 ``DICM`` marker) under it and no NIfTI file in it."""
    folder = Path(path)
    if not folder.is_dir() or any(p.name.endswith((".nii", ".nii.gz")) for p in folder.iterdir()):
        return False
    for number, candidate in enumerate(p for p in folder.rglob("*") if p.is_file()):
        if number >= _FILES_SAMPLED:
            return False
        try:
            with open(candidate, "rb") as handle:
                handle.seek(128)
                if handle.read(4) == b"DICM":
                    return True
        except OSError:
            continue
    return False


def series_choices(values: Sequence[str]) -> dict[str, str]:
    """``--series`` values (``CHANNEL=<SeriesInstanceUID|folder>``, repeatable) as channel -> choice."""
    choices: dict[str, str] = {}
    for value in values:
        channel, separator, choice = value.partition("=")
        if not separator or not channel.strip() or not choice.strip():
            raise ConfigError("--series", f"{value!r}: expected CHANNEL=<SeriesInstanceUID|folder>, e.g. t1ce=1.2.840.113619.2.5")
        if channel.strip() in choices:
            raise ConfigError("--series", f"{channel.strip()} is chosen twice")
        choices[channel.strip()] = choice.strip()
    return choices


def reference_channel(channels: Sequence[str]) -> str:
    """The contrast the others are registered to: T1ce when the model takes it (BraTS' own choice), else its first channel."""
    return "t1ce" if "t1ce" in channels else channels[0]


@dataclass
class DicomCasePrediction:
    """What :func:`predict_dicom_study` wrote for one study, and how long each stage took."""

    case_id: str
    series: dict[str, str]
    prepared: dict[str, Path]
    prediction: Any
    segmentation: Path
    probabilities: Path | None
    convention: str
    native: dict[str, Path] = field(default_factory=dict)
    dicom_seg: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def predict_dicom_study(
    model: Any,
    folder: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    series: Mapping[str, str] | None = None,
    native_series: Sequence[str] = (),
    dicom_seg: bool = False,
    register: bool = True,
    skull_strip: bool = True,
    label_convention: str = "auto",
    probabilities: bool = False,
    uncertainty: bool = False,
    submission_names: bool = False,
) -> DicomCasePrediction:
    """Segment the DICOM study in ``folder`` with ``model`` (a :class:`pipeline.inference.model.SegmentationModel`) into ``out_dir``.

    Args:
        model: the loaded model; its task's channels are the series read.
        folder: the study folder (one patient, one study; series in any sub-folders).
        out_dir: where everything goes (created).
        series: channel -> SeriesInstanceUID or folder of that series, overriding the guess.
        native_series: the channels whose series' grids the labels are written on (default: the reference's).
        dicom_seg: also write each native-grid result as a DICOM Segmentation.
        register: register each contrast to the reference (off: the scanner's coordinates are trusted).
        skull_strip: extract the brain (off: the scans are already skull-stripped).
        label_convention: the label convention of the NIfTI files (``auto``: the prepared case's own).
        probabilities: also write probability maps (prepared grid).
        uncertainty: also compute the uncertainty maps (prepared grid).
        submission_names: name the prepared-grid segmentation ``<case_id>.nii.gz`` (BraTS portals).

    Raises:
        ConfigError: a native series not among the model's channels, or the ``dicom`` extra missing.
        InputError: the study cannot be read (see :mod:`pipeline.datasets.dicom`) or prepared.
    """
    require_dicom_extra()
    task = model.task
    reference = reference_channel(task.channels)
    wanted = tuple(dict.fromkeys(native_series or (reference,)))
    unknown = [channel for channel in wanted if channel not in task.channels]
    if unknown:
        raise ConfigError("--native-series", f"{', '.join(unknown)}: the model's channels are {', '.join(task.channels)}")
    out = Path(out_dir)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    study = read_study(folder, task.channels, series)
    case_id = _case_id(Path(folder))
    seconds["read"], clock = time.perf_counter() - clock, time.perf_counter()

    prepared = prepare_scans(study.volumes, reference=reference, register=register, skull_strip=skull_strip)
    prepared_files = write_prepared(prepared, out / "prepared" / case_id)
    seconds["prepare"], clock = time.perf_counter() - clock, time.perf_counter()

    record = case_record([prepared_files[channel] for channel in task.channels], task)
    prediction = model.predict_case(record, probabilities=probabilities, uncertainty=uncertainty)
    convention = output_convention(record, label_convention, task)
    written = written_convention(task, convention)
    segmentation = write_segmentation(prediction.labels, prediction.reference, out / segmentation_filename(case_id, submission_names), written)
    probability_path = None
    if prediction.probabilities is not None:
        probability_path = write_probabilities(prediction.probabilities, prediction.reference, out / probability_filename(case_id))
    seconds["segment"], clock = time.perf_counter() - clock, time.perf_counter()

    # The prediction's voxels are the prepared reference's, in the order SimpleITK wrote them.
    labels = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(prediction.labels, dtype=np.uint8).transpose(2, 1, 0)))
    labels.CopyInformation(prepared.volumes[reference])
    result = DicomCasePrediction(case_id, {c: s.uid for c, s in study.series.items()}, prepared_files, prediction, segmentation, probability_path, convention)
    for channel in wanted:
        native = to_native(labels, study.volumes[channel], None if channel == reference else prepared.transforms[channel])
        in_file_labels = sitk.GetImageFromArray(written.from_internal(sitk.GetArrayFromImage(native)).astype(np.uint8))
        in_file_labels.CopyInformation(native)
        result.native[channel] = save_sitk(out / f"{case_id}_{channel}_native_seg.nii.gz", in_file_labels)
        if dicom_seg:
            seg_started = time.perf_counter()
            result.dicom_seg[channel] = write_dicom_seg(out / f"{case_id}_{channel}_seg.dcm", native, study.series[channel], task)
            seconds["dicom_seg"] = seconds.get("dicom_seg", 0.0) + time.perf_counter() - seg_started
    seconds["native"] = time.perf_counter() - clock - seconds.get("dicom_seg", 0.0)
    result.seconds = {stage: round(value, 3) for stage, value in seconds.items()}
    return result


def _case_id(folder: Path) -> str:
    """The study folder's name, made safe for file names."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", folder.resolve().name).strip("._") or "dicom_study"
