"""Tiny 2D-layout data written with SimpleITK: Kaggle LGG patient folders and 2D image/mask folders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

KAGGLE_PATIENT = "TCGA_AB_0001_20000101"

#: Slices per patient of the ten real patients (their README's table).
REAL_SLICES = {
    "TCGA_CS_4943_20000902": 20,
    "TCGA_CS_5393_19990606": 20,
    "TCGA_DU_5849_19950405": 38,
    "TCGA_DU_7008_19830723": 52,
    "TCGA_DU_A5TP_19970614": 38,
    "TCGA_FG_5962_20000626": 51,
    "TCGA_FG_6688_20020215": 36,
    "TCGA_HT_7473_19970826": 32,
    "TCGA_HT_7680_19970202": 21,
    "TCGA_HT_8105_19980826": 32,
}


def write_image(path: Path, voxels: np.ndarray) -> Path:
    """Write a 2D array ``(rows, columns)`` or ``(rows, columns, components)`` as PNG, JPG or TIFF (after the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    voxels = np.asarray(voxels)
    sitk.WriteImage(sitk.GetImageFromArray(voxels, isVector=voxels.ndim == 3), str(path))
    return path


def slice_voxels(rows: int, columns: int, seed: int, components: int = 3) -> np.ndarray:
    """A non-zero square on a zero background (uint8), ``components`` colour components (1: grayscale)."""
    rng = np.random.default_rng(seed)
    voxels = np.zeros((rows, columns, components), dtype=np.uint8)
    voxels[2 : rows - 2, 2 : columns - 2] = rng.integers(20, 250, (rows - 4, columns - 4, components))
    return voxels[..., 0] if components == 1 else voxels


def mask_voxels(rows: int, columns: int, index: int, value: int = 255) -> np.ndarray:
    """A mask holding ``index % 3`` pixels of ``value`` in a row (0 on every third slice)."""
    mask = np.zeros((rows, columns), dtype=np.uint8)
    mask[rows // 2, 4 : 4 + index % 3] = value
    return mask


def kaggle_patient(root: Path, name: str = KAGGLE_PATIENT, slices: int = 11, size: int = 16, seed: int = 0, value: int = 255) -> Path:
    """A patient folder of ``slices`` RGB TIFF slices ``<name>_<n>.tif`` (n from 1) and their masks."""
    folder = root / name
    for number in range(1, slices + 1):
        write_image(folder / f"{name}_{number}.tif", slice_voxels(size, size, seed * 1000 + number))
        write_image(folder / f"{name}_{number}_mask.tif", mask_voxels(size, size, number, value))
    return folder


def kaggle_root(root: Path, patients: Sequence[tuple[str, int]] = (("TCGA_AB_0001_20000101", 11), ("TCGA_AB_0002_20000102", 3))) -> Path:
    """A Kaggle LGG root holding the named patients with their slice counts."""
    for index, (name, slices) in enumerate(patients):
        kaggle_patient(root, name, slices, seed=index)
    return root


def image_pairs(
    root: Path,
    names: Sequence[str] = ("a", "b", "c"),
    sizes: Sequence[tuple[int, int]] = ((16, 16), (20, 12), (10, 18)),
    side_by_side: bool = False,
    rgb: bool = False,
    value: int = 255,
    suffix: str = ".png",
) -> Path:
    """One image and mask per name (``images/`` + ``masks/``, or ``<name>_mask`` beside it), each of its own size."""
    for index, (name, (rows, columns)) in enumerate(zip(names, sizes)):
        image = slice_voxels(rows, columns, index, 3 if rgb else 1)
        mask = mask_voxels(rows, columns, index + 1, value)
        if side_by_side:
            write_image(root / f"{name}{suffix}", image)
            write_image(root / f"{name}_mask{suffix}", mask)
        else:
            write_image(root / "images" / f"{name}{suffix}", image)
            write_image(root / "masks" / f"{name}{suffix}", mask)
    return root


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to show a source is untouched)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
