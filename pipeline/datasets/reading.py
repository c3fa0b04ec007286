"""Reading a case: its records' files -> the modality volumes and raw label, checked on the way in.

Every file is read once (:func:`pipeline.core.io.load_volume`) and judged by
:mod:`pipeline.datasets.case_checks` (one grid, finite voxels) before anything is built from it.
A case of a 2D layout is read and judged by :func:`pipeline.datasets.case_checks.read_planar`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from pipeline.core.errors import ConfigError, InputError
from pipeline.core.io import load_volume
from pipeline.datasets import kaggle_lgg
from pipeline.datasets.case_checks import (
    PlanarCase,
    check_finite,
    check_same_grid,
    read_planar,
)
from pipeline.datasets.records import KAGGLE_LGG, PLANAR_LAYOUTS, CaseRecord
from pipeline.tasks.task import Task

__all__ = ["CaseVolumes", "read_case", "source_manifest"]


@dataclass(frozen=True)
class CaseVolumes:
    """The voxels of one case, in the source files' voxel order.

    Attributes:
        channels: one 3D volume per input channel, in the record's ``channels`` order (the task's).
        label: the raw segmentation (the release's own labels), or None.
        reference: the first image file (its header and affine describe the grid); None for a 2D layout.
        source: the files read and their fingerprints (:func:`source_manifest`).
        planar: a 2D layout's slices and colour components (:class:`PlanarCase`), else None.
    """

    channels: list[np.ndarray]
    label: np.ndarray | None
    reference: nib.Nifti1Image | None
    source: dict[str, Any]
    planar: PlanarCase | None = None


def _fingerprint(path: Path) -> dict[str, int]:
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except OSError as err:
        raise InputError(path, f"cannot read: {err.strerror or err}") from err
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def source_manifest(record: CaseRecord) -> dict[str, Any]:
    """The files of a case and each one's size and modification time (what the cache records as ``source``).

    Raises:
        InputError: if a file is missing or cannot be read.
    """
    files = list(record.images) + ([record.label] if record.label is not None else [])
    if record.layout == KAGGLE_LGG:  # the patient folder's slice files
        slices, problems = kaggle_lgg.list_slices(record.images[0])
        if problems:
            raise InputError(*problems[0].split(": ", 1))
        masks = [s.mask for s in slices] if record.label is not None else [None] * len(slices)
        files = [path for s, mask in zip(slices, masks) for path in (s.image, mask) if path is not None]
    return {
        "images": [str(path) for path in record.images],
        "channel_indices": list(record.channel_indices) if record.channel_indices is not None else None,
        "label": str(record.label) if record.label is not None else None,
        "files": {str(path): _fingerprint(path) for path in files},
    }


def _spatial_voxels(voxels: np.ndarray, path: Path, channels: Sequence[int] | None) -> list[np.ndarray]:
    """The 3D volumes of one file: itself, or the listed channels of a 4D file (trailing unit axes dropped)."""
    shape = voxels.shape
    while len(shape) > (4 if channels is not None else 3) and shape[-1] == 1:
        shape = shape[:-1]
    voxels = voxels.reshape(shape)
    if channels is None:
        if voxels.ndim != 3:
            raise InputError(path, f"expected a 3D image, got shape {voxels.shape}")
        return [voxels]
    if voxels.ndim != 4:
        raise InputError(path, f"expected a 4D image with the modalities as channels, got shape {voxels.shape}")
    if max(channels) >= voxels.shape[3] or min(channels) < 0:
        raise InputError(path, f"channel_indices {list(channels)} do not fit {voxels.shape[3]} channel(s)")
    return [voxels[..., index] for index in channels]


def read_case(record: CaseRecord, task: Task | None = None) -> CaseVolumes:
    """Read every file of a case: the modality volumes, the raw label and the reference image.

    ``task`` judges a 2D layout's masks and colour components (default: the layout's own task).

    Raises:
        InputError: a missing, damaged, non-finite or mis-registered file, named in the message.
        ConfigError: a record with the wrong number of image paths.
    """
    source = source_manifest(record)
    if record.layout in PLANAR_LAYOUTS:
        planar, problems = read_planar(record, task)
        if planar is None:
            raise InputError(*problems[0].split(": ", 1))
        return CaseVolumes(channels=planar.channels, label=planar.label, reference=None, source=source, planar=planar)
    expected = 1 if record.channel_indices is not None else len(record.channels)
    if len(record.images) != expected:
        raise ConfigError(record.case_id, f"expected {expected} image path(s), got {len(record.images)}")
    channels: list[np.ndarray] = []
    reference: nib.Nifti1Image | None = None
    for path in record.images:
        image, voxels = load_volume(path)
        volumes = _spatial_voxels(voxels, path, record.channel_indices)
        if reference is None:
            reference = image
        else:
            check_same_grid(path, volumes[0].shape, image.affine, record.images[0], reference.shape[:3], reference.affine)
        check_finite(path, voxels)
        channels.extend(volumes)
    assert reference is not None
    label = None
    if record.label is not None:
        label_image, label = load_volume(record.label)
        (label,) = _spatial_voxels(label, record.label, None)
        check_same_grid(record.label, label.shape, label_image.affine, record.images[0], reference.shape[:3], reference.affine)
        check_finite(record.label, label, "segmentation")
    return CaseVolumes(channels=channels, label=label, reference=reference, source=source)
