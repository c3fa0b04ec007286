"""2D image/mask folders: every image is a one-slice case.

Two layouts are recognised in a data root:

- ``images/<name>.<ext>`` + ``masks/<name>.<ext>``: a mask has its image's name (the endings may
  differ, ``1.jpg`` + ``1.png``);
- ``<name>.<ext>`` + ``<name>_mask.<ext>`` side by side.

Images and masks are PNG, JPG or TIFF (:data:`pipeline.core.io.IMAGE_2D_SUFFIXES`); masks are 0/255 or
0/1. The task says how many channels an image has (``image-mask-2d``: one, ``image-mask-2d-rgb``:
three), and every image is converted to them on read (:func:`to_task_components`, the one
conversion validation, preprocessing and prediction use): RGB to gray by luminance, gray to RGB
by repetition, a constant alpha component dropped (a palette PNG is read as RGB), so one folder
may mix grayscale and colour images. Each image keeps its own size; the files store no spacing
(unit spacing, array axes row, column).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core.errors import ConfigError, InputError
from pipeline.core.io import IMAGE_2D_SUFFIXES, read_image_2d
from pipeline.datasets.records import IMAGE_2D, CaseRecord, planar_record
from pipeline.tasks.task import IMAGE_MASK_2D, IMAGE_MASK_2D_RGB, Task

__all__ = [
    "GRAY_CHANNELS",
    "LABEL_CONVENTION",
    "RELEASE",
    "RGB_CHANNELS",
    "ImageCases",
    "channel_indices",
    "discover_image_folders",
    "image_record",
    "image_task",
    "is_image_folder_root",
    "to_task_components",
]

RELEASE = "image-mask-2d"
LABEL_CONVENTION = "mask255"

#: The channel of a grayscale image, and the components of an RGB one, in file order.
GRAY_CHANNELS: tuple[str, ...] = ("image",)
RGB_CHANNELS: tuple[str, ...] = ("red", "green", "blue")

#: ITU-R BT.601 luma weights of red, green and blue (those of PIL's ``convert("L")``).
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)

_MASK_SUFFIX = "_mask"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass
class ImageCases:
    """The image/mask pairs under a root, before validation; listing problems by case id."""

    records: list[CaseRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_2D_SUFFIXES and p.is_file() and not p.name.startswith("."))


def _split_layout(root: Path) -> bool:
    return (root / "images").is_dir() and (root / "masks").is_dir()


def is_image_folder_root(root: Path) -> bool:
    """Whether ``root`` holds ``images/`` + ``masks/``, or images with ``<name>_mask`` files beside them."""
    if not root.is_dir():
        return False
    return _split_layout(root) or any(p.stem.endswith(_MASK_SUFFIX) for p in _images(root))


def _pairs(root: Path) -> tuple[dict[str, tuple[Path | None, Path | None]], list[str]]:
    """Image and mask of every name (either may be None), and ``<file>: <reason>`` lines for names used twice."""
    pairs: dict[str, list[Path | None]] = {}
    twice: list[str] = []
    if _split_layout(root):
        listed = [(p, p.stem, 0) for p in _images(root / "images")] + [(p, p.stem, 1) for p in _images(root / "masks")]
    else:
        listed = [(p, p.stem.removesuffix(_MASK_SUFFIX), int(p.stem.endswith(_MASK_SUFFIX))) for p in _images(root)]
    for path, name, is_mask in listed:
        slot = pairs.setdefault(name, [None, None])
        if slot[is_mask] is not None:
            twice.append(f"{path}: {'mask' if is_mask else 'image'} name {name} used twice (also {slot[is_mask].name})")
            continue
        slot[is_mask] = path
    return {name: (image, mask) for name, (image, mask) in sorted(pairs.items())}, twice


def channel_indices(task: Task, where: str | Path) -> tuple[int, ...] | None:
    """The colour component of each of ``task``'s channels (None: a grayscale task).

    Raises:
        ConfigError: if the task reads neither the grayscale channel nor RGB components, or not 0/255 masks.
    """
    if tuple(task.channels) == GRAY_CHANNELS and LABEL_CONVENTION in task.labels:
        return None
    if all(c in RGB_CHANNELS for c in task.channels) and LABEL_CONVENTION in task.labels:
        return tuple(RGB_CHANNELS.index(c) for c in task.channels)
    raise ConfigError(where, f"2D image/mask folders hold grayscale or RGB images with 0/255 masks; task {task.name} reads {', '.join(task.channels)}: use --task {IMAGE_MASK_2D.name} or {IMAGE_MASK_2D_RGB.name}")


def to_task_components(voxels: np.ndarray, components: int) -> np.ndarray:
    """An image read from a file ``(rows, columns[, stored components])`` as ``components`` (1 or 3) colour components, in its own dtype.

    A constant alpha component (gray + alpha, RGBA) is dropped; RGB becomes gray by luminance
    (:data:`LUMA_WEIGHTS`, rounded), gray becomes RGB by repeating it. One component comes back
    ``(rows, columns)``, three ``(rows, columns, 3)``.

    Raises:
        ValueError: on an alpha component that is not constant, or a component count other than 1-4.
    """
    stored = voxels.shape[2] if voxels.ndim == 3 else 1
    if stored not in (1, 2, 3, 4):
        raise ValueError(f"image has {stored} colour components; expected gray, gray + alpha, RGB or RGBA")
    if stored in (2, 4):
        if np.any(voxels[..., -1] != voxels[..., -1].flat[0]):
            raise ValueError("image has a transparency channel that is not constant; save it without one")
        voxels, stored = voxels[..., :-1], stored - 1
        voxels = voxels[..., 0] if stored == 1 else voxels
    if stored == components:
        return voxels
    if components == 1:
        # PIL's convert("L") reads 8-bit images only; the same weights for any dtype
        luma = np.tensordot(voxels.astype(np.float64), LUMA_WEIGHTS, axes=([2], [0]))
        return np.rint(luma).astype(voxels.dtype) if voxels.dtype.kind in "iu" else luma.astype(voxels.dtype)
    return np.repeat(voxels[..., None], components, axis=2)


def image_task(root: Path) -> Task:
    """The task of an image folder: grayscale or RGB after its first image (its other images are converted to it)."""
    pairs, _ = _pairs(root)
    first = next((image for image, _ in pairs.values() if image is not None), None)
    if first is None:
        return IMAGE_MASK_2D
    try:
        voxels = read_image_2d(first)
    except Exception:  # an unreadable first image is reported by validation
        return IMAGE_MASK_2D
    return IMAGE_MASK_2D_RGB if voxels.ndim == 3 else IMAGE_MASK_2D


def image_record(path: Path, task: Task | None = None) -> CaseRecord:
    """An unlabelled one-image case (for inference), read with ``task`` (default: grayscale or RGB after the image).

    Raises:
        InputError: if the image cannot be read, or its name cannot be a case id.
        ConfigError: if ``task`` does not read 2D images.
    """
    if task is None:
        task = IMAGE_MASK_2D_RGB if read_image_2d(path).ndim == 3 else IMAGE_MASK_2D
    if not _SAFE_ID.match(path.stem):
        raise InputError(path, f"file name {path.stem!r} cannot be a case id (letters, digits, _ . - only)")
    return planar_record(path.stem, path, None, IMAGE_2D, task.channels, channel_indices(task, path), LABEL_CONVENTION)


def discover_image_folders(root: Path, task: Task) -> ImageCases:
    """One record per image with its mask; an image without its mask or a mask without its image is a problem.

    Raises:
        ConfigError: if ``task`` does not read 2D images (:func:`channel_indices`).
    """
    indices = channel_indices(task, root)
    found = ImageCases()
    pairs, twice = _pairs(root)
    for line in twice:
        name = Path(line.split(": ", 1)[0]).stem.removesuffix(_MASK_SUFFIX)
        found.problems.setdefault(name, []).append(line)
    split = _split_layout(root)
    for name, (image, mask) in pairs.items():
        if image is None:
            expected = f"images/{name}.*" if split else f"{name}.*"
            found.problems.setdefault(name, []).append(f"{mask}: mask without an image ({expected})")
            continue
        if mask is None:
            expected = f"masks/{name}.*" if split else f"{name}{_MASK_SUFFIX}.*"
            found.problems.setdefault(name, []).append(f"{image}: image without a mask ({expected})")
            continue
        if not _SAFE_ID.match(name):
            found.problems.setdefault(name, []).append(f"{image}: file name {name!r} cannot be a case id (letters, digits, _ . - only)")
            continue
        found.records.append(planar_record(name, image, mask, IMAGE_2D, task.channels, indices, LABEL_CONVENTION))
    if split:
        stray = [p for p in sorted(root.iterdir()) if p.name not in ("images", "masks") and not p.name.startswith(".")]
        found.warnings += [f"{path}: not in images/ or masks/; ignored" for path in stray]
    return found
