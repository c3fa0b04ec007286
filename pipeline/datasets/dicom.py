"""DICOM studies as a hospital exports them: find every MR series, tell its contrast, read it with exact geometry.

A study folder (or a folder of series folders) is scanned once, headers only (:func:`find_series`):
every DICOM file is grouped by SeriesInstanceUID, and what cannot make one study is refused with one
line naming the file (no DICOM at all, an unreadable or truncated file, a second patient or study,
a series that is not MR). Each series' contrast is guessed from its own tags (:func:`guess_channel`:
SeriesDescription and ProtocolName first, then echo, repetition and inversion times, and the
contrast agent); :func:`select_series` picks one series per channel the model needs, or refuses
listing every series found, and an explicit choice (``--series t1ce=<SeriesInstanceUID|folder>``)
overrides the guess. Only the chosen series are read (:func:`read_series`), so a localizer or a
diffusion series elsewhere in the study does no harm:

- single-frame series: slices sorted by ImagePositionPatient projected on the slice normal
  (row x column direction), checked to be parallel, one per position, evenly spaced (a missing
  slice shows as a gap) and stacked along the normal (a gantry tilt shears them), then read by
  SimpleITK's ``ImageSeriesReader`` in that order. The voxel grid is the one the headers define:
  origin at the first slice, directions (row, column, normal), spacing (PixelSpacing, slice gap);
- enhanced (multi-frame) MR objects: read by highdicom (``Image.get_volume``), which places each
  frame from its functional groups and refuses frames that do not form one regular stack.

Everything here needs the ``dicom`` extra (pydicom, highdicom); the module imports without it and\n:func:`require_dicom_extra` refuses DICOM work in one line when it is missing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pipeline.core.errors import ConfigError, InputError
from pipeline.tasks.modalities import MODALITIES

try:  # the dicom extra: optional, so the base install stays light (require_dicom_extra says what is missing)
    import highdicom
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.errors import InvalidDicomError
except ImportError:  # pragma: no cover - the extra is part of `make test`
    highdicom = pydicom = None  # type: ignore[assignment]
    Dataset = object  # type: ignore[assignment,misc]
    InvalidDicomError = ValueError  # type: ignore[assignment,misc]

__all__ = [
    "DicomSeries",
    "DicomStudy",
    "find_series",
    "guess_channel",
    "read_series",
    "read_study",
    "require_dicom_extra",
    "select_series",
    "series_listing",
    "slice_positions",
]

#: SOP classes of enhanced (multi-frame) MR objects: Enhanced MR Image, Legacy Converted Enhanced MR Image.
ENHANCED_MR_CLASSES = ("1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.4")
#: Media Storage Directory (a DICOMDIR index): part of an export, holds no image.
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"

#: Tolerances of the geometry checks, in mm (positions) and as direction cosines.
POSITION_TOLERANCE_MM = 0.01
ORIENTATION_TOLERANCE = 1e-4
#: Largest difference between two slice gaps of one series, as a fraction of the gap.
SPACING_TOLERANCE = 0.01


@dataclass(frozen=True)
class DicomSeries:
    """One series of a study, from its headers (pixel data is read by :func:`read_series`).

    Attributes:
        uid: SeriesInstanceUID.
        description: SeriesDescription (or ProtocolName when it has none).
        modality: Modality (``MR``).
        files: its files, by name.
        headers: each file's header without pixel data, in the order of ``files``.
        channel: the contrast guessed from its tags (``t1``, ``t1ce``, ``t2``, ``flair``) or ``None``.
    """

    uid: str
    description: str
    modality: str
    files: tuple[Path, ...]
    headers: tuple[Dataset, ...] = field(repr=False, compare=False)
    channel: str | None = None

    @property
    def multiframe(self) -> bool:
        """Whether the series is an enhanced (multi-frame) object rather than one file per slice."""
        first = self.headers[0]
        return str(first.get("SOPClassUID", "")) in ENHANCED_MR_CLASSES or int(first.get("NumberOfFrames", 1) or 1) > 1

    @property
    def folder(self) -> Path:
        """The deepest folder holding all its files."""
        return Path(os.path.commonpath([str(path.parent) for path in self.files]))

    def label(self) -> str:
        """``<uid> '<description>' (<n> files, guess: <channel>)``, as refusals list a series."""
        return f"{self.uid} '{self.description}' ({len(self.files)} files, guess: {self.channel or 'none'})"


@dataclass(frozen=True)
class DicomStudy:
    """The series chosen for each channel and their volumes (``SimpleITK`` images on each series' own grid)."""

    folder: Path
    series: dict[str, DicomSeries]
    volumes: dict[str, sitk.Image]


def require_dicom_extra(where: str = "--input") -> None:
    """Refuse DICOM work, naming the option, when the ``dicom`` extra (pydicom, highdicom) is not installed."""
    if pydicom is None or highdicom is None:
        raise ConfigError(where, "DICOM input and output need the dicom extra: pip install 'brats-pipeline[dicom]'")


# ----------------------------------------------------------------------------- finding series
def find_series(folder: str | os.PathLike[str]) -> list[DicomSeries]:
    """Every MR series under ``folder`` (searched recursively), from the files' headers.

    Files that are not DICOM (no ``DICM`` marker) and DICOMDIR indexes are passed over.

    Raises:
        InputError: no DICOM file; an unreadable or truncated DICOM file; a file without
            SeriesInstanceUID; files of two patients or two studies; a series that is not MR.
    """
    require_dicom_extra()
    root = Path(folder)
    if not root.is_dir():
        raise InputError(root, "not a folder: give the folder of a DICOM study")
    headers: dict[str, list[tuple[Path, Dataset]]] = {}
    looked_at = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        looked_at += 1
        header = _read_header(path)
        if header is None or str(header.get("SOPClassUID", "")) == _DICOMDIR_CLASS:
            continue
        uid = str(header.get("SeriesInstanceUID", "") or "")
        if not uid:
            raise InputError(path, "damaged or incomplete DICOM file: no SeriesInstanceUID, cannot tell which series it belongs to")
        headers.setdefault(uid, []).append((path, header))
    if not headers:
        raise InputError(root, f"no DICOM files found ({looked_at} files looked at): give the folder of a DICOM study")
    _refuse_mixed(root, headers, "PatientID", "patients")
    _refuse_mixed(root, headers, "StudyInstanceUID", "studies")
    found = []
    for uid, members in sorted(headers.items(), key=lambda item: _series_number(item[1][0][1])):
        path, first = members[0]
        modality = str(first.get("Modality", "") or "")
        description = str(first.get("SeriesDescription", "") or first.get("ProtocolName", "") or "")
        if modality != "MR":
            raise InputError(path, f"series {uid} '{description}' is modality {modality or 'unknown'}, not MR: only MR series are read (move it out of the study folder)")
        found.append(DicomSeries(uid, description, modality, tuple(p for p, _ in members), tuple(h for _, h in members), guess_channel(first)))
    return found


def _read_header(path: Path) -> Dataset | None:
    """The header of a DICOM Part 10 file (``None`` for a file that is not DICOM); a damaged file is refused."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            if handle.read(4) != b"DICM":
                return None
    except OSError as err:
        raise InputError(path, f"cannot read: {err.strerror or err}") from err
    try:
        header = pydicom.dcmread(path)  # pixel data included: a file cut short is caught here, not half-way through reading
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError, TypeError) as err:
        raise InputError(path, f"damaged DICOM file, cannot be read: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
    if "PixelData" not in header and "FloatPixelData" not in header:
        if "Rows" in header:
            raise InputError(path, "damaged DICOM file: an image without pixel data (cut short?)")
        return header
    syntax = getattr(getattr(header, "file_meta", None), "TransferSyntaxUID", None)
    if "PixelData" in header and syntax is not None and not syntax.is_compressed:
        expected = _pixel_bytes(header)
        if expected is not None and len(header.PixelData) < expected:
            raise InputError(path, f"damaged DICOM file: the pixel data is cut short ({len(header.PixelData)} of {expected} bytes)")
    for keyword in ("PixelData", "FloatPixelData"):
        if keyword in header:
            delattr(header, keyword)  # only the header is kept: read_series reads the pixels
    return header


def _pixel_bytes(header: Dataset) -> int | None:
    """Bytes of uncompressed pixel data the header announces (rows x columns x samples x bits x frames), if it says."""
    try:
        frames = int(header.get("NumberOfFrames", 1) or 1)
        return int(header.Rows) * int(header.Columns) * int(header.get("SamplesPerPixel", 1)) * frames * int(header.BitsAllocated) // 8
    except (AttributeError, TypeError, ValueError):
        return None


def _refuse_mixed(root: Path, headers: Mapping[str, list[tuple[Path, Dataset]]], keyword: str, what: str) -> None:
    owners: dict[str, Path] = {}
    for members in headers.values():
        for path, header in members:
            owners.setdefault(str(header.get(keyword, "") or ""), path)
    if len(owners) > 1:
        listing = ", ".join(f"{value or '(empty)'} (e.g. {path})" for value, path in owners.items())
        raise InputError(root, f"files of {len(owners)} {what} ({keyword} {listing}): give the folder of one study of one patient")


def _series_number(header: Dataset) -> tuple[int, str]:
    number = header.get("SeriesNumber", None)
    return (int(number) if number not in (None, "") else 1 << 30, str(header.get("SeriesInstanceUID", "")))


# ----------------------------------------------------------------------------- contrasts
def _words(*texts: object) -> str:
    return " " + re.sub(r"[_\-./,;:()\[\]]+", " ", " ".join(str(t or "") for t in texts).lower()) + " "


#: Series that are no structural contrast the models take (maps, diffusion, perfusion, localizers, reformats).
_NOT_STRUCTURAL = re.compile(r"\b(adc|dwi|dti|trace\w*|swi|swan|perf\w*|dsc|dce|asl|mip|minip|sub|subtract\w*|localizer|localiser|scout|survey|map|fa|b0|b1000|t2\*|t2star|gre|mra|tof)\b")
_FLAIR = re.compile(r"\b(flair|dark ?fluid|tirm|t2f|fluid atten\w*)\b")
_T2 = re.compile(r"\b(t2|t2w|t2 weighted|t2 tse|t2 fse|t2 space)\b")
_T1 = re.compile(r"\b(t1|t1w|t1 weighted|t1n|t1c|t1ce|t1gd|mprage|mp ?rage|spgr|fspgr|bravo|tfl3d1?)\b")
_POST = re.compile(r"(\bpost\b|\bgad\w*|\bgd\b|\bgado\w*|contrast|kontrast|\bce\b|\bt1c\b|\bt1ce\b|\bt1gd\b|\+ ?c\b|\+ ?gd\b|\bmdc\b|\bkm\b)")
_PRE = re.compile(r"(\bpre\b|precontrast|\bnativ\w*|without|\bw ?o\b|\bnon ?contrast)")


def guess_channel(header: Dataset) -> str | None:
    """The contrast of a series (``t1``, ``t1ce``, ``t2``, ``flair``) from its tags, or ``None`` when unsure.

    The names a scanner or technologist gives (SeriesDescription, ProtocolName, SequenceName) decide
    first: FLAIR (``flair``, ``dark-fluid``, Siemens ``tirm``), T2, T1 (``t1``, ``mprage``, ``spgr``, ...);
    a T1 series is post-contrast when its name says so (``post``, ``gd``, ``+c``, ``contrast``, ...) or
    ContrastBolusAgent is set, unless its name says pre-contrast. Maps, diffusion, perfusion,
    localizers and reformats are no channel. A series whose names tell nothing is judged by its
    sequence timing: long inversion and echo (FLAIR), long echo and repetition (T2), short echo
    with short repetition or an MPRAGE-like inversion (T1).
    """
    image_type = [str(v).upper() for v in (header.get("ImageType", None) or [])]
    names = _words(header.get("SeriesDescription"), header.get("ProtocolName"))
    if "LOCALIZER" in image_type or _NOT_STRUCTURAL.search(names):
        return None
    agent = str(header.get("ContrastBolusAgent", "") or "").strip()
    post = (bool(_POST.search(names)) or bool(agent)) and not _PRE.search(names)
    if _FLAIR.search(names):
        return "flair"
    if _T2.search(names):
        return "t2"
    if _T1.search(names + _words(header.get("SequenceName"))):
        return "t1ce" if post else "t1"
    echo, repetition, inversion = (_number(header, keyword) for keyword in ("EchoTime", "RepetitionTime", "InversionTime"))
    if echo is None or repetition is None:
        return None
    if inversion is not None and inversion >= 1500 and echo >= 60:
        return "flair"
    if echo >= 60 and repetition >= 1500 and (inversion is None or inversion < 300):
        return "t2"
    if echo <= 20 and (repetition <= 1000 or (inversion is not None and 300 <= inversion <= 1400)):
        return "t1ce" if post else "t1"
    return None


def _number(header: Dataset, keyword: str) -> float | None:
    value = header.get(keyword, None)
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------- choosing series
def series_listing(series: Iterable[DicomSeries]) -> str:
    """Every series as refusals list them: ``<uid> '<description>' (<n> files, guess: <channel>)``, joined by ``; ``."""
    return "; ".join(s.label() for s in series)


def select_series(
    series: Sequence[DicomSeries],
    channels: Sequence[str] = MODALITIES,
    overrides: Mapping[str, str] | None = None,
    where: str | os.PathLike[str] = "DICOM study",
) -> dict[str, DicomSeries]:
    """One series per channel: the explicit choice, else the one series whose guess is that channel.

    Args:
        series: the series found (:func:`find_series`).
        channels: the channels the model needs, in its order.
        overrides: channel -> SeriesInstanceUID or folder holding exactly that series (``--series``).
        where: the study folder, named by refusals.

    Raises:
        ConfigError: an override names an unknown channel, no series, a folder of several series,
            or one series for two channels.
        InputError: a needed channel has no series, or several, identified as it (the refusal lists
            every series found and says how to choose).
    """
    chosen: dict[str, DicomSeries] = {}
    for channel, choice in (overrides or {}).items():
        if channel not in channels:
            raise ConfigError("--series", f"{channel}={choice}: the model's channels are {', '.join(channels)}")
        chosen[channel] = _series_named(series, channel, choice)
    problems = []
    for channel in channels:
        if channel in chosen:
            continue
        candidates = [s for s in series if s.channel == channel and s not in chosen.values()]
        if len(candidates) == 1:
            chosen[channel] = candidates[0]
        else:
            problems.append(f"{channel}: {'no series' if not candidates else f'{len(candidates)} series'} identified as {channel}")
    if problems:
        raise InputError(where, f"{', '.join(problems)}; series found: {series_listing(series)}; choose with --series CHANNEL=<SeriesInstanceUID|folder>")
    uids = [s.uid for s in chosen.values()]
    if len(set(uids)) != len(uids):
        twice = next(uid for uid in uids if uids.count(uid) > 1)
        raise ConfigError("--series", f"series {twice} is chosen for {' and '.join(c for c, s in chosen.items() if s.uid == twice)}: each channel needs its own series")
    return {channel: chosen[channel] for channel in channels}


def _series_named(series: Sequence[DicomSeries], channel: str, choice: str) -> DicomSeries:
    by_uid = [s for s in series if s.uid == choice]
    if by_uid:
        return by_uid[0]
    folder = Path(choice).expanduser()
    if folder.is_dir():
        inside = [s for s in series if all(folder.resolve() in path.resolve().parents for path in s.files)]
        if len(inside) == 1:
            return inside[0]
        detail = "no series of the study" if not inside else f"{len(inside)} series ({', '.join(s.uid for s in inside)})"
        raise ConfigError("--series", f"{channel}={choice}: the folder holds {detail}; name one folder per series or its SeriesInstanceUID")
    raise ConfigError("--series", f"{channel}={choice}: no series with that SeriesInstanceUID and no such folder; series found: {series_listing(series)}")


# ----------------------------------------------------------------------------- reading a series
def slice_positions(series: DicomSeries) -> list[tuple[Path, np.ndarray]]:
    """The files of a single-frame series in slice order, each with its ImagePositionPatient; the grid checked.

    Raises:
        InputError: a slice without position or orientation; slices of different orientation,
            size or pixel spacing (a localizer); two slices at one position (multi-echo, dynamic or
            diffusion series); a gap (missing slices) or uneven spacing; slices not stacked along
            their normal (gantry tilt); a single slice.
    """
    where = f"series {series.uid} '{series.description}' ({series.folder})"
    first = series.headers[0]
    if len(series.files) < 2:
        raise InputError(where, "a single slice, not a volume")
    orientation = _orientation(series.files[0], first)
    for path, header in zip(series.files, series.headers):
        if not np.allclose(_orientation(path, header), orientation, atol=ORIENTATION_TOLERANCE):
            raise InputError(path, f"in {where}: slices are not parallel (ImageOrientationPatient differs from {series.files[0].name}'s): a localizer or multi-plane series is not one volume")
        for keyword in ("Rows", "Columns", "PixelSpacing"):
            if header.get(keyword) != first.get(keyword):
                raise InputError(path, f"in {where}: {keyword} {header.get(keyword)} differs from {series.files[0].name}'s {first.get(keyword)}")
    normal = np.cross(orientation[:3], orientation[3:])
    placed = sorted(((path, _position(path, header)) for path, header in zip(series.files, series.headers)), key=lambda item: float(item[1] @ normal))
    positions = np.array([position for _, position in placed])
    along = positions @ normal
    gaps = np.diff(along)
    if np.min(gaps) < POSITION_TOLERANCE_MM:
        at = int(np.argmin(gaps))
        raise InputError(where, f"two images at one slice position ({placed[at][0].name}, {placed[at + 1][0].name}): a multi-echo, dynamic or diffusion series is not one volume")
    gap = float(np.median(gaps))
    uneven = np.abs(gaps - gap) > max(POSITION_TOLERANCE_MM, SPACING_TOLERANCE * gap)
    if uneven.any():
        at = int(np.argmax(np.abs(gaps - gap)))
        raise InputError(where, f"uneven slice spacing: {gaps[at]:.3g} mm between {placed[at][0].name} and {placed[at + 1][0].name} against {gap:.3g} mm elsewhere (missing slices?)")
    sideways = positions - positions[0] - np.outer(along - along[0], normal)
    if np.abs(sideways).max() > POSITION_TOLERANCE_MM * 10:
        raise InputError(where, f"slices are not stacked along their normal (shifted up to {np.abs(sideways).max():.3g} mm in plane): gantry tilt is not supported, resample the series first")
    return placed


def _orientation(path: Path, header: Dataset) -> np.ndarray:
    value = header.get("ImageOrientationPatient", None)
    if value is None or len(value) != 6:
        raise InputError(path, "no ImageOrientationPatient: cannot place the slice")
    return np.array([float(v) for v in value])


def _position(path: Path, header: Dataset) -> np.ndarray:
    value = header.get("ImagePositionPatient", None)
    if value is None or len(value) != 3:
        raise InputError(path, "no ImagePositionPatient: cannot place the slice")
    return np.array([float(v) for v in value])


def read_series(series: DicomSeries) -> sitk.Image:
    """The series as one volume (``SimpleITK`` image, LPS physical space) on the grid its headers define.

    Raises:
        InputError: the series is not one regular volume (see :func:`slice_positions`), or its pixel
            data cannot be decoded.
    """
    if series.multiframe:
        return _read_multiframe(series)
    placed = slice_positions(series)
    first = series.headers[0]
    orientation = _orientation(series.files[0], first)
    normal = np.cross(orientation[:3], orientation[3:])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(path) for path, _ in placed])
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise InputError(f"series {series.uid} '{series.description}' ({series.folder})", f"cannot decode the pixel data: {_first_line(err)}") from err
    # The grid is set from the checked headers, not from the reader's own estimate (ITK averages the slice gap).
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    gaps = np.diff([float(position @ normal) for _, position in placed])
    image.SetOrigin(placed[0][1].tolist())
    image.SetSpacing((column_spacing, row_spacing, float(np.mean(gaps))))
    image.SetDirection(np.column_stack([orientation[:3], orientation[3:], normal]).ravel().tolist())
    return image


def _read_multiframe(series: DicomSeries) -> sitk.Image:
    where = f"series {series.uid} '{series.description}' ({series.folder})"
    if len(series.files) != 1:
        raise InputError(where, f"{len(series.files)} multi-frame objects in one series: give one enhanced MR object per series")
    try:
        volume = highdicom.imread(series.files[0]).get_volume(dtype=np.float32)
        return volume_to_image(volume)
    except (ValueError, RuntimeError, AttributeError, KeyError, IndexError) as err:
        raise InputError(series.files[0], f"in {where}: the multi-frame MR object is not one regular volume: {_first_line(err)}") from err


def volume_to_image(volume: highdicom.Volume) -> sitk.Image:
    """A highdicom ``Volume`` (frames, rows, columns; LPS affine) as a ``SimpleITK`` image with the same geometry."""
    if volume.number_of_channel_dimensions:
        raise ValueError("a volume with channel dimensions is not one image")
    affine = np.asarray(volume.affine, dtype=float)
    array = volume.array
    if np.linalg.det(affine[:3, :3][:, ::-1]) < 0:
        # Frames run against row x column: reverse them, so every volume read has the grid read_series gives.
        affine = affine @ np.array([[-1.0, 0, 0, array.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
        array = array[::-1]
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    # SimpleITK's axes are the array's reversed: x along columns (affine column 2), z along frames (column 0).
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetOrigin(affine[:3, 3].tolist())
    image.SetSpacing(spacing[::-1].tolist())
    image.SetDirection((affine[:3, :3] / spacing)[:, ::-1].ravel().tolist())
    return image


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[-1 if text.startswith("Exception thrown") else 0] if text else type(err).__name__


# ----------------------------------------------------------------------------- a whole study
def read_study(
    folder: str | os.PathLike[str],
    channels: Sequence[str] = MODALITIES,
    overrides: Mapping[str, str] | None = None,
) -> DicomStudy:
    """The series of each channel found under ``folder`` (:func:`find_series`, :func:`select_series`), read."""
    found = find_series(folder)
    chosen = select_series(found, channels, overrides, where=folder)
    return DicomStudy(Path(folder), chosen, {channel: read_series(series) for channel, series in chosen.items()})
