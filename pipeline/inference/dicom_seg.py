"""A prediction back on an original DICOM series: resampled onto its grid and written as a DICOM Segmentation.

:func:`labels_on_series_grid` brings internal labels (any grid, LPS physical space) onto a series'
voxel grid by nearest neighbour (SimpleITK); :func:`write_dicom_seg` writes labels on that grid as
a DICOM Segmentation (highdicom) that 3D Slicer (QuantitativeReporting), OHIF and dcmqi read:

- one binary segment per class of the task (segment number = internal label), coded from DICOM's
  brain lesion context groups (CID 7168: necrosis, edema, enhancing lesion; neoplasm otherwise),
  labelled with the class name and displayed in the task's colour;
- every frame of the source grid, empty ones included (``omit_empty_frames=False``), each
  referencing its source instance (or source frame of a multi-frame object), in the source's
  FrameOfReferenceUID, patient and study;
- written atomically.

:func:`read_dicom_seg` reads one back as a label volume with its geometry (tests, and anyone
comparing a SEG with the NIfTI output).
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pipeline.core.errors import InputError
from pipeline.core.io import atomic_path
from pipeline.datasets.dicom import (
    DicomSeries,
    require_dicom_extra,
    slice_positions,
    volume_to_image,
)
from pipeline.tasks import Task

try:  # the dicom extra (see pipeline.datasets.dicom.require_dicom_extra)
    import highdicom
    import pydicom
    from pydicom.sr.coding import Code
    from pydicom.uid import generate_uid
except ImportError:  # pragma: no cover - the extra is part of `make test`
    highdicom = pydicom = Code = generate_uid = None  # type: ignore[assignment,misc]

__all__ = ["SEGMENT_TYPES", "labels_on_series_grid", "read_dicom_seg", "segment_descriptions", "write_dicom_seg"]

#: Segmented property type (scheme, code, meaning) of each class name the built-in tasks use: DICOM CID 7168
#: (brain lesion segmentation types; necrosis is also its concept for the non-enhancing tumour core) and SNOMED CT.
SEGMENT_TYPES: dict[str, tuple[str, str, str]] = {
    "NEC": ("SCT", "6574001", "Necrosis"),
    "NETC": ("SCT", "6574001", "Necrosis"),
    "ED": ("SCT", "79654002", "Edema"),
    "SNFH": ("SCT", "79654002", "Edema"),
    "ET": ("NCIt", "C113842", "Enhancing Lesion"),
    "CC": ("SCT", "367643001", "Cyst"),
}
#: Type of a class not listed above (whole tumour, gross tumour volume, a task file's own classes).
_DEFAULT_TYPE = ("SCT", "108369006", "Neoplasm")
#: Segmented property category of every segment.
_CATEGORY = ("SCT", "49755003", "Morphologically Abnormal Structure")
#: Segmentation algorithm family (DICOM CID 7162).
_ALGORITHM_FAMILY = ("DCM", "123110", "Artificial Intelligence")
#: Grid agreement asked of labels and a series, in mm and direction cosines.
_GRID_TOLERANCE = 1e-3


def labels_on_series_grid(labels: sitk.Image, reference: sitk.Image, transform: sitk.Transform | None = None) -> sitk.Image:
    """``labels`` resampled (nearest neighbour) onto the voxel grid of ``reference``; outside them is background.

    Args:
        labels: integer labels on any grid.
        reference: the image whose grid the result takes (a series read by :func:`pipeline.datasets.dicom.read_series`).
        transform: maps a point of ``reference``'s physical space to ``labels``' (identity when omitted).
    """
    return sitk.Resample(labels, reference, transform or sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def segment_descriptions(task: Task) -> list[highdicom.seg.SegmentDescription]:
    """One segment per class of ``task`` (segment number = internal label), coded and coloured."""
    require_dicom_extra("--dicom-seg")
    algorithm = highdicom.AlgorithmIdentificationSequence(name="brats-pipeline", family=_code(_ALGORITHM_FAMILY), version=_version())
    return [
        highdicom.seg.SegmentDescription(
            segment_number=number,
            segment_label=name,
            segmented_property_category=_code(_CATEGORY),
            segmented_property_type=_code(SEGMENT_TYPES.get(name, _DEFAULT_TYPE)),
            algorithm_type=highdicom.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            display_color=highdicom.color.CIELabColor.from_rgb(*task.colour(name)),
        )
        for number, name in enumerate(task.classes, start=1)
    ]


def _code(entry: tuple[str, str, str]) -> Code:
    scheme, value, meaning = entry
    return Code(value=value, scheme_designator=scheme, meaning=meaning)


def _version() -> str:
    try:
        return metadata.version("brats-pipeline")
    except metadata.PackageNotFoundError:  # a source checkout that was never installed
        return "unknown"


def write_dicom_seg(
    path: str | os.PathLike[str],
    labels: sitk.Image,
    series: DicomSeries,
    task: Task,
    *,
    series_number: int = 900,
    series_description: str = "Tumour segmentation (brats-pipeline)",
) -> Path:
    """Write internal ``labels`` on the grid of ``series`` as a DICOM Segmentation referencing it.

    Args:
        path: the ``.dcm`` file to write (atomically).
        labels: internal labels (0 background, ``k`` = ``task.classes[k - 1]``) on the series' grid
            (:func:`labels_on_series_grid`).
        series: the source series (its files supply the frames, references and patient/study tags).
        task: the task whose classes become the segments.
        series_number: SeriesNumber of the new series.
        series_description: SeriesDescription of the new series.

    Raises:
        InputError: ``labels`` is not on the series' grid, or holds a value that is no class of the task.
    """
    require_dicom_extra("--dicom-seg")
    target = Path(path)
    sources, frame_positions = _source_frames(series)
    voxels = sitk.GetArrayFromImage(labels)
    where = f"labels for series {series.uid}"
    first = sources[0]
    if voxels.shape[1:] != (int(first.Rows), int(first.Columns)) or voxels.shape[0] != len(frame_positions):
        raise InputError(where, f"shape {voxels.shape[::-1]} (x, y, z) is not the series' grid ({first.Columns}, {first.Rows}, {len(frame_positions)})")
    frames = np.empty((len(frame_positions), *voxels.shape[1:]), dtype=np.uint8)
    for number, position in enumerate(frame_positions):
        frames[number] = voxels[_slice_at(labels, position, where)]
    if frames.max(initial=0) > task.num_classes - 1:
        raise InputError(where, f"label {int(frames.max())} is no class of task {task.name} (classes 1-{task.num_classes - 1})")
    segmentation = highdicom.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=highdicom.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(task),
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="brats-pipeline",
        manufacturer_model_name=task.name,
        software_versions=_version(),
        device_serial_number="0",
        series_description=series_description,
        omit_empty_frames=False,
        content_label="TUMOUR",
        content_description=f"{task.name}: {', '.join(task.classes)}",
        content_creator_name="brats-pipeline^",  # a person name of one component ends with a caret
    )
    with atomic_path(target) as tmp:
        segmentation.save_as(tmp)
    return target


def _source_frames(series: DicomSeries) -> tuple[list[pydicom.Dataset], list[np.ndarray]]:
    """The source datasets highdicom takes and the position of each frame of the SEG, in highdicom's frame order."""
    if series.multiframe:
        source = pydicom.dcmread(series.files[0], stop_before_pixels=True)
        positions = [np.array([float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]) for group in source.PerFrameFunctionalGroupsSequence]
        return [source], positions
    # highdicom takes one frame per single-frame source image, in the order given: sort them along the slice normal.
    placed = slice_positions(series)
    by_path = dict(zip(series.files, series.headers))
    return [by_path[path] for path, _ in placed], [position for _, position in placed]


def _slice_at(labels: sitk.Image, position: np.ndarray, where: str) -> int:
    """The slice index of ``labels`` whose first voxel lies at ``position``; refuses a position off its grid."""
    index = np.array(labels.TransformPhysicalPointToContinuousIndex(position.tolist()))
    nearest = np.rint(index)
    if np.abs(index - nearest).max() > _GRID_TOLERANCE or nearest[0] != 0 or nearest[1] != 0 or not 0 <= nearest[2] < labels.GetSize()[2]:
        raise InputError(where, f"not on the series' grid: its frame at {np.round(position, 3).tolist()} mm is voxel {np.round(index, 3).tolist()} of the labels")
    return int(nearest[2])


def read_dicom_seg(path: str | os.PathLike[str]) -> tuple[sitk.Image, dict[int, str]]:
    """A DICOM Segmentation as one label volume (segment numbers) with its geometry, and each segment's label.

    Raises:
        InputError: the file is no readable DICOM Segmentation, or its segments overlap.
    """
    try:
        segmentation = highdicom.seg.segread(path)
        volume = segmentation.get_volume(combine_segments=True, dtype=np.uint8)
    except (ValueError, RuntimeError, AttributeError, KeyError, OSError) as err:
        raise InputError(path, f"not a readable DICOM Segmentation: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
    names = {int(number): segmentation.get_segment_description(number).segment_label for number in segmentation.get_segment_numbers()}
    return volume_to_image(volume), names

