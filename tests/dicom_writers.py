"""The one writer of DICOM MR test series: a volume (a real BraTS case or a tiny array) as a hospital exports it.

A volume is a ``SimpleITK.Image`` (LPS geometry, as SimpleITK reads a NIfTI file); :func:`write_mr_series`
writes one MR Image Storage file per slice along its third index axis, with ImagePositionPatient and
ImageOrientationPatient taken from the image's own geometry, in a shuffled file order with
meaningless file names, and series tags that name the contrast as scanners do
(:data:`CONTRAST_TAGS`). :func:`reoriented` gives the same voxels as sagittal or coronal slices
(an exact axis permutation), :func:`as_read` the grid a series reads back as, :func:`rotated` the same voxels on an oblique grid (a rotated
patient: for geometry round trips), :func:`resampled` a grid of another spacing and
:func:`resampled_oblique` an oblique grid, both by linear interpolation of the same patient, so every orientation and spacing a study
holds can be written from one case.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

#: Series tags of each contrast as a Siemens scanner writes them (description, protocol, sequence parameters).
CONTRAST_TAGS: dict[str, dict[str, object]] = {
    "t1": {"SeriesDescription": "t1_mprage_sag_p2_iso", "ScanningSequence": ["GR", "IR"], "SequenceName": "*tfl3d1_16ns",
           "RepetitionTime": 2300.0, "EchoTime": 2.32, "InversionTime": 900.0},
    "t1ce": {"SeriesDescription": "t1_mprage_sag_p2_iso POST", "ScanningSequence": ["GR", "IR"], "SequenceName": "*tfl3d1_16ns",
             "RepetitionTime": 2300.0, "EchoTime": 2.32, "InversionTime": 900.0, "ContrastBolusAgent": "Gadovist"},
    "t2": {"SeriesDescription": "t2_tse_tra", "ScanningSequence": ["SE"], "SequenceName": "*tse2d1_15",
           "RepetitionTime": 5000.0, "EchoTime": 98.0},
    "flair": {"SeriesDescription": "t2_tirm_tra_dark-fluid", "ScanningSequence": ["SE", "IR"], "SequenceName": "*tir2d1_15",
              "RepetitionTime": 9000.0, "EchoTime": 81.0, "InversionTime": 2500.0},
}


def reoriented(image: sitk.Image, slices: str) -> sitk.Image:
    """The same voxels and physical positions, sliced ``axial``, ``sagittal`` or ``coronal`` (exact axis permutation)."""
    order = {"axial": (0, 1, 2), "sagittal": (1, 2, 0), "coronal": (0, 2, 1)}[slices]
    return as_read(sitk.PermuteAxes(image, order))


def as_read(image: sitk.Image) -> sitk.Image:
    """``image`` on the grid its DICOM series reads back as: slices stacked along row x column (right-handed axes)."""
    if np.linalg.det(np.array(image.GetDirection()).reshape(3, 3)) < 0:
        return sitk.Flip(image, (False, False, True))
    return image


def rotated(image: sitk.Image, degrees: Sequence[float] = (12.0, -8.0, 5.0)) -> sitk.Image:
    """The same voxels on an oblique grid: the direction rotated about the image centre by Euler angles (degrees)."""
    transform = sitk.Euler3DTransform()
    centre = image.TransformContinuousIndexToPhysicalPoint([(size - 1) / 2 for size in image.GetSize()])
    transform.SetCenter(centre)
    transform.SetRotation(*np.deg2rad(degrees))
    matrix = np.array(transform.GetMatrix()).reshape(3, 3)
    direction = matrix @ np.array(image.GetDirection()).reshape(3, 3)
    origin = transform.TransformPoint(image.GetOrigin())
    out = sitk.Image(image)
    out.SetDirection(direction.ravel().tolist())
    out.SetOrigin(origin)
    return out


def resampled_oblique(image: sitk.Image, degrees: Sequence[float], spacing: Sequence[float]) -> sitk.Image:
    """The same patient on an oblique grid (linear interpolation): ``image``'s grid rotated about its centre, of ``spacing``, covering its extent."""
    grid = resampled(rotated(image, degrees), spacing)  # the rotated grid of that spacing (its voxels are not used)
    return sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, 0.0, image.GetPixelID())


def resampled(image: sitk.Image, spacing: Sequence[float], interpolator: int = sitk.sitkLinear) -> sitk.Image:
    """``image`` on a grid of the same origin and direction and another ``spacing`` (covering the same extent)."""
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing)]
    return sitk.Resample(image, size, sitk.Transform(), interpolator, image.GetOrigin(), list(spacing), image.GetDirection(),
                         0.0, image.GetPixelID())


def write_mr_series(
    folder: Path,
    image: sitk.Image,
    contrast: str = "t1ce",
    *,
    study: Mapping[str, str] | None = None,
    series_uid: str | None = None,
    series_number: int = 1,
    shuffle_seed: int | None = 0,
    tags: Mapping[str, object] | None = None,
) -> list[Path]:
    """Write ``image`` as a DICOM MR series, one file per slice along its third axis.

    Args:
        folder: where the files go (created); file names are meaningless and in shuffled order.
        image: the volume (integer-valued voxels; stored as signed 16 bit).
        contrast: the contrast whose scanner tags (:data:`CONTRAST_TAGS`) the series carries.
        study: patient and study tags shared by the series of one study (``PatientID``,
            ``StudyInstanceUID``, ``FrameOfReferenceUID``, ...); :func:`new_study` makes one.
        series_uid: the SeriesInstanceUID (a new one when omitted).
        series_number: SeriesNumber.
        shuffle_seed: seed of the file order (``None``: files in slice order).
        tags: further tags set on every file (override the contrast's), e.g. ``{"Modality": "CT"}``.

    Returns:
        The written files, in slice order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    study = dict(study or new_study())
    series_uid = series_uid or generate_uid()
    voxels = sitk.GetArrayFromImage(image)  # (slices, rows, columns)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = image.GetSpacing()
    order = list(range(voxels.shape[0]))
    names = [f"IM{index:05d}" for index in order]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(names)
    written = []
    for index in order:
        ds = _mr_dataset(study, series_uid, series_number, contrast)
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [float(v) for v in image.TransformIndexToPhysicalPoint((0, 0, index))]
        ds.ImageOrientationPatient = [float(v) for v in (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
        ds.SliceThickness = float(spacing[2])
        ds.SpacingBetweenSlices = float(spacing[2])
        ds.Rows, ds.Columns = voxels.shape[1:]
        ds.PixelData = np.ascontiguousarray(np.rint(voxels[index]).astype("<i2")).tobytes()
        for keyword, value in (tags or {}).items():
            setattr(ds, keyword, value)
        path = folder / names[index]
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written


def new_study(patient_id: str = "BRATS-TEST-001", patient_name: str = "Test^Patient") -> dict[str, str]:
    """Patient and study tags for the series of one study."""
    return {
        "PatientID": patient_id,
        "PatientName": patient_name,
        "StudyInstanceUID": generate_uid(),
        "FrameOfReferenceUID": generate_uid(),
    }


def write_study(folder: Path, volumes: Mapping[str, sitk.Image], study: Mapping[str, str] | None = None) -> dict[str, str]:
    """Write one series per contrast under ``folder/series<NN>/`` (numbered in the order given); returns each contrast's SeriesInstanceUID."""
    study = study or new_study()
    uids = {}
    for number, (contrast, image) in enumerate(volumes.items(), start=1):
        uids[contrast] = generate_uid()
        write_mr_series(folder / f"series{number:02d}", image, contrast, study=study, series_uid=uids[contrast],
                        series_number=number, shuffle_seed=number)
    return uids


def _mr_dataset(study: Mapping[str, str], series_uid: str, series_number: int, contrast: str) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.Modality = "MR"
    ds.Manufacturer = "SIEMENS"
    ds.PatientID = study["PatientID"]
    ds.PatientName = study.get("PatientName", "Test^Patient")
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study["StudyInstanceUID"]
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = "A0001"
    ds.ReferringPhysicianName = ""
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDate = "20240101"
    ds.SeriesTime = "120000"
    ds.FrameOfReferenceUID = study["FrameOfReferenceUID"]
    ds.PositionReferenceIndicator = ""
    ds.BodyPartExamined = "BRAIN"
    ds.SequenceVariant = ["SK", "SP"]
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "3D"
    ds.MagneticFieldStrength = 3.0
    ds.EchoTrainLength = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    for keyword, value in CONTRAST_TAGS[contrast].items():
        setattr(ds, keyword, value)
    ds.ProtocolName = str(ds.SeriesDescription)
    return ds
