"""Writing predictions as NIfTI files that lie exactly on the input scan, and 3D Slicer colour tables.

Geometry is copied, never recomputed: a segmentation gets a copy of the reference image's header
(the case's first modality), so its shape, voxel order, affine, qform and sform (with their
codes and quaternion parameters) are those of the input, bit for bit. Only the data type
(uint8), the intensity scaling (cleared), ``cal_min``/``cal_max``, the intent (NIfTI label) and
the description change. A 4D reference (an MSD image) gives a 3D segmentation with the same
spatial header.

File names (:func:`segmentation_filename`):

* default: ``<case_id>_seg.nii.gz``, next to the BraTS file naming of the ground truth;
* ``submission_names=True``: ``<case_id>.nii.gz``, the name the BraTS challenge portals
  (Synapse 2021-2024) expect for each case of a submission archive.

Cases of the 2D layouts (:data:`pipeline.datasets.records.PLANAR_LAYOUTS`) get masks in their
own format, one per input slice at its image's size (:func:`planar_mask_names`,
:func:`write_planar_masks`), uint8 in the output convention (``mask255``: 0/255): a Kaggle LGG
patient ``<folder>/<folder>_<n>_mask.tif`` (a mirror of its input folder), a 2D image
``masks/<name>.png``. A Kaggle patient's volume also goes to ``<case_id>_seg.nii.gz`` for viewers,
with unit spacing and an identity affine (:func:`planar_reference`: the files store no geometry).

The colour table ``<name>.ctbl`` is 3D Slicer's plain-text format (``index name R G B A`` per
line): load it in Slicer with *Data > Add Data* and pick it as the segmentation's colour node,
or load the segmentation with *Show options > LabelMap* and choose it in *Volumes > Display*.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from pipeline.core.errors import InputError
from pipeline.core.io import (
    load_nifti,
    read_image_2d,
    save_image_2d,
    save_nifti,
    write_text,
)
from pipeline.datasets.records import KAGGLE_LGG
from pipeline.tasks.labels import BACKGROUND, LabelConvention
from pipeline.tasks.task import DEFAULT_TASK, Task

__all__ = [
    "LABEL_COLOURS",
    "label_colours",
    "NIFTI_INTENT_LABEL",
    "colour_table_filename",
    "colour_table_text",
    "case_mask_names",
    "parse_colour_table",
    "planar_mask_names",
    "planar_reference",
    "probability_filename",
    "read_planar_masks",
    "same_geometry",
    "segmentation_filename",
    "segmentation_image",
    "uncertainty_filename",
    "uncertainty_image",
    "write_colour_table",
    "write_planar_masks",
    "write_probabilities",
    "write_segmentation",
    "write_uncertainty",
]


#: NIfTI intent code for a label volume (NIFTI_INTENT_LABEL).
NIFTI_INTENT_LABEL = 1002


def label_colours(task: Task = DEFAULT_TASK) -> dict[int, tuple[int, int, int]]:
    """Display colours (R, G, B) by internal label: background black, each class in the task's colour."""
    return {BACKGROUND: (0, 0, 0), **{task.class_value(name): task.colour(name) for name in task.classes}}


#: The BraTS glioma task's colours, as in most BraTS figures: NEC red, ED green, ET yellow.
LABEL_COLOURS: dict[int, tuple[int, int, int]] = label_colours()

SEGMENTATION_SUFFIX = "_seg"
PROBABILITY_SUFFIX = "_probabilities"

#: The uncertainty maps a prediction can carry (:mod:`pipeline.inference.uncertainty`), by file-name suffix.
UNCERTAINTY_MAPS: tuple[str, ...] = ("uncertainty", "disagreement")


def segmentation_filename(case_id: str, submission_names: bool = False) -> str:
    """``<case_id>_seg.nii.gz`` by default; ``<case_id>.nii.gz`` in BraTS submission naming."""
    return f"{case_id}.nii.gz" if submission_names else f"{case_id}{SEGMENTATION_SUFFIX}.nii.gz"


def probability_filename(case_id: str) -> str:
    """File name of a case's probability maps."""
    return f"{case_id}{PROBABILITY_SUFFIX}.nii.gz"


def uncertainty_filename(case_id: str, kind: str = "uncertainty") -> str:
    """``<case_id>_uncertainty.nii.gz`` (entropy) or ``<case_id>_disagreement.nii.gz``."""
    if kind not in UNCERTAINTY_MAPS:
        raise ValueError(f"unknown uncertainty map {kind!r}; choose one of {', '.join(UNCERTAINTY_MAPS)}")
    return f"{case_id}_{kind}.nii.gz"


def _spatial_header(reference: nib.Nifti1Image, shape: tuple[int, ...], dtype: type) -> nib.Nifti1Header:
    """A copy of ``reference``'s header for new voxels of ``shape`` and ``dtype``, scaling cleared."""
    header = reference.header.copy()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["scl_slope"] = np.nan
    header["scl_inter"] = np.nan
    header["cal_min"] = 0
    header["cal_max"] = 0
    header["intent_code"] = 0
    header["intent_name"] = b""
    header["intent_p1"] = header["intent_p2"] = header["intent_p3"] = 0
    return header


def segmentation_image(labels: np.ndarray, reference: nib.Nifti1Image) -> nib.Nifti1Image:
    """A uint8 label image carrying ``reference``'s geometry.

    Args:
        labels: label values (already in the output convention), shaped like the reference's
            first three axes.
        reference: the image whose grid the labels are in (the case's first modality).

    Raises:
        ValueError: when the shapes differ or a label does not fit in uint8.
    """
    labels = np.asarray(labels)
    spatial = tuple(reference.shape[:3])
    if labels.shape != spatial:
        raise ValueError(f"labels of shape {labels.shape} do not match the reference grid {spatial}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError("label values must fit in uint8 (0-255)")
    header = _spatial_header(reference, spatial, np.uint8)
    header["intent_code"] = NIFTI_INTENT_LABEL
    header["cal_max"] = float(labels.max()) if labels.size else 0.0
    header["descrip"] = b"brats-pipeline segmentation"
    # The header is a copy of the reference, so its best affine is the reference affine: nibabel keeps the header as is.
    return type(reference)(labels.astype(np.uint8), reference.affine, header=header)


def probability_image(probabilities: np.ndarray, reference: nib.Nifti1Image) -> nib.Nifti1Image:
    """An ``(X, Y, Z, K)`` probability image from channel-first ``(K, X, Y, Z)`` probabilities in [0, 1].

    NIfTI has no 16-bit float type, so the maps are stored as 8-bit integers with a scale factor
    ``scl_slope`` of at most 1/255 (a step of 0.004 or finer): nibabel, SimpleITK and 3D Slicer
    apply the scale on reading and return floats, and the file is half the size float16 would be.
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    spatial = tuple(reference.shape[:3])
    if probabilities.ndim != 4 or probabilities.shape[1:] != spatial:
        raise ValueError(f"probabilities of shape {probabilities.shape} do not match (K, *{spatial})")
    voxels = np.clip(np.moveaxis(probabilities, 0, -1), 0.0, 1.0)
    header = _spatial_header(reference, voxels.shape, np.uint8)
    header["cal_max"] = 1.0
    header["descrip"] = b"brats-pipeline probabilities"
    # The fourth axis is a vector of class probabilities, not time.
    header.set_intent("vector")
    # Float voxels with a uint8 on-disk type: nibabel picks scl_slope (at most 1/255) when saving.
    return type(reference)(voxels, reference.affine, header=header)


def uncertainty_image(values: np.ndarray, reference: nib.Nifti1Image) -> nib.Nifti1Image:
    """A float32 image of an uncertainty map in [0, 1] (``(X, Y, Z)`` on the reference's grid), values stored exactly."""
    values = np.asarray(values, dtype=np.float32)
    spatial = tuple(reference.shape[:3])
    if values.shape != spatial:
        raise ValueError(f"uncertainty map of shape {values.shape} does not match the reference grid {spatial}")
    header = _spatial_header(reference, spatial, np.float32)
    header["cal_max"] = 1.0
    header["descrip"] = b"brats-pipeline uncertainty"
    return type(reference)(np.clip(values, 0.0, 1.0), reference.affine, header=header)


def load_reference(path: str | os.PathLike[str]) -> nib.Nifti1Image:
    """Open the image whose geometry a prediction copies (header only)."""

    image = load_nifti(path)
    if len(image.shape) not in (3, 4):
        raise InputError(path, f"expected a 3D or 4D image, got shape {image.shape}")
    return image


def write_segmentation(
    labels_internal: np.ndarray,
    reference: nib.Nifti1Image | str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    convention: LabelConvention,
) -> Path:
    """Write internal labels (the task's, in the reference's voxel grid) in ``convention`` as uint8 NIfTI, atomically."""
    if not isinstance(reference, nib.Nifti1Image | nib.Nifti2Image):
        reference = load_reference(reference)
    image = segmentation_image(convention.from_internal(labels_internal), reference)
    save_nifti(out_path, image)
    return Path(out_path)


def write_probabilities(
    probabilities: np.ndarray,
    reference: nib.Nifti1Image | str | os.PathLike[str],
    out_path: str | os.PathLike[str],
) -> Path:
    """Write channel-first probabilities ``(K, X, Y, Z)`` as an 8-bit scaled ``(X, Y, Z, K)`` NIfTI, atomically."""
    return _write_image(probability_image, probabilities, reference, out_path)


def write_uncertainty(values: np.ndarray, reference: nib.Nifti1Image | str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """Write an uncertainty map ``(X, Y, Z)`` as a float32 NIfTI on the reference's grid, atomically."""
    return _write_image(uncertainty_image, values, reference, out_path)


def _write_image(
    image_of: Callable[[np.ndarray, nib.Nifti1Image], nib.Nifti1Image],
    values: np.ndarray,
    reference: nib.Nifti1Image | str | os.PathLike[str],
    out_path: str | os.PathLike[str],
) -> Path:
    """Save ``image_of(values, reference)`` atomically (``reference`` opened first when it is a path)."""
    if not isinstance(reference, nib.Nifti1Image | nib.Nifti2Image):
        reference = load_reference(reference)
    save_nifti(out_path, image_of(values, reference))
    return Path(out_path)


#: The folder of a 2D image's predicted mask under the output folder.
PLANAR_MASKS_DIR = "masks"


def planar_mask_names(layout: str, case_id: str, image_files: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Paths, relative to the output folder, of a 2D-layout case's predicted masks, one per slice in order.

    A Kaggle LGG slice ``<folder>/<folder>_<n>.tif`` gives ``<folder>/<folder>_<n>_mask.tif`` (the
    data set's own mask name, in a mirror of the input folder); a 2D image ``masks/<case_id>.png``.
    """
    if layout == KAGGLE_LGG:
        return [f"{Path(f).parent.name}/{Path(f).stem}_mask{Path(f).suffix}" for f in image_files]
    return [f"{PLANAR_MASKS_DIR}/{case_id}.png"]


def case_mask_names(meta: dict) -> list[str]:
    """:func:`planar_mask_names` of a preprocessed 2D-layout case (its ``meta.json``): one per slice of ``original.slices``."""
    original = meta["original"]
    return planar_mask_names(original["format"], meta["case_id"], [s["image"] for s in original["slices"]])


def planar_reference(meta: dict) -> nib.Nifti1Image:
    """The (header-only) image a 2D-layout case's volume is written on: ``original.shape`` (rows, columns, slices), unit spacing, identity affine."""
    shape = tuple(int(n) for n in meta["original"]["shape"])
    image = nib.Nifti1Image(np.broadcast_to(np.uint8(0), shape), np.eye(4))
    image.header.set_xyzt_units("unknown")
    return image


def write_planar_masks(labels_internal: np.ndarray, meta: dict, out_dir: str | os.PathLike[str], convention: LabelConvention) -> list[Path]:
    """Write a 2D-layout case's internal labels ``(rows, columns, slices)`` as one uint8 mask per slice (:func:`planar_mask_names`), atomically.

    Slice ``z`` is the mask of ``meta["original"]["slices"][z]``, at its image's size, in ``convention`` (``mask255``: 0/255).
    """
    original = meta["original"]
    names = case_mask_names(meta)
    labels = np.asarray(labels_internal)
    if labels.shape != tuple(original["shape"]) or labels.shape[2] != len(names):
        raise ValueError(f"labels of shape {labels.shape} do not match the case's {tuple(original['shape'])}")
    written = convention.from_internal(labels).astype(np.uint8)
    return [save_image_2d(Path(out_dir) / name, written[:, :, z]) for z, name in enumerate(names)]


def read_planar_masks(paths: Sequence[str | os.PathLike[str]]) -> np.ndarray:
    """Masks written by :func:`write_planar_masks` (or a case's own), stacked as ``(rows, columns, slices)``."""
    masks = [read_image_2d(path) for path in paths]
    for path, mask in zip(paths, masks):
        if mask.ndim != 2 or mask.shape != masks[0].shape:
            raise InputError(path, f"expected a one-component mask of size {masks[0].shape}, got {mask.shape}")
    return np.stack(masks, axis=2)


def colour_table_text(convention: LabelConvention, task: Task = DEFAULT_TASK) -> str:
    """3D Slicer colour-table text for ``convention``: one ``index name R G B A`` line per label.

    Names are the release's own (``labels.names``), with spaces replaced by underscores because
    Slicer splits each line on white space; colours are those of the task's classes.
    """
    internal_of = dict(convention.to_internal_map)
    colours = label_colours(task)
    lines = [
        f"# 3D Slicer colour table for the {convention.name} label convention ({convention.description})",
        f"# {len(internal_of)} values",
    ]
    for value in sorted(internal_of):
        red, green, blue = colours[internal_of[value]]
        alpha = 0 if internal_of[value] == BACKGROUND else 255
        name = str(convention.names.get(value, f"label_{value}")).replace(" ", "_")
        lines.append(f"{value} {name} {red} {green} {blue} {alpha}")
    return "\n".join(lines) + "\n"


def write_colour_table(path: str | os.PathLike[str], convention: LabelConvention, task: Task = DEFAULT_TASK) -> Path:
    """Write :func:`colour_table_text` to ``path`` (conventionally ``<folder>/<convention>.ctbl``), atomically."""
    write_text(path, colour_table_text(convention, task))
    return Path(path)


def colour_table_filename(convention: LabelConvention, task: Task = DEFAULT_TASK) -> str:
    """``brats_<convention>.ctbl`` for BraTS glioma labels, ``<task>_<convention>.ctbl`` for another task's."""
    prefix = "brats" if task.classes == DEFAULT_TASK.classes else task.name.split("[")[0]
    return f"{prefix}_{convention.name}.ctbl"


def parse_colour_table(text: str) -> dict[int, tuple[str, tuple[int, int, int, int]]]:
    """Read a colour table back (``{index: (name, (R, G, B, A))}``); comment lines are skipped."""
    table: dict[int, tuple[str, tuple[int, int, int, int]]] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        index, name, *rgba = line.split()
        table[int(index)] = (name, tuple(int(v) for v in rgba))  # type: ignore[assignment]
    return table


def same_geometry(first: nib.Nifti1Image, second: nib.Nifti1Image, fields: Sequence[str] = ()) -> list[str]:
    """Header fields that differ in the spatial geometry of two images (empty list: identical grids)."""
    names = tuple(fields) or (
        "qform_code",
        "sform_code",
        "quatern_b",
        "quatern_c",
        "quatern_d",
        "qoffset_x",
        "qoffset_y",
        "qoffset_z",
        "srow_x",
        "srow_y",
        "srow_z",
        "xyzt_units",
    )
    differ = [name for name in names if not np.array_equal(first.header[name], second.header[name])]
    if tuple(first.shape[:3]) != tuple(second.shape[:3]):
        differ.append("shape")
    if not np.array_equal(first.header["pixdim"][:4], second.header["pixdim"][:4]):
        differ.append("pixdim")
    return differ
