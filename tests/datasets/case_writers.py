"""Writers of tiny NIfTI cases (8x8x6 voxels) in every release layout, for the dataset tests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (8, 8, 6)
#: The BraTS header convention: voxel axes L-P-S.
LPS_AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, SHAPE[1] - 1], [0, 0, 1.0, 0], [0, 0, 0, 1]])

LEGACY_NAMES = {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair"}
BRATS2023_NAMES = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}
MSD_DATASET_JSON = {
    "name": "BRATS",
    "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
    "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
}


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray = LPS_AFFINE) -> Path:
    """Save ``data`` as NIfTI (qform and sform code 1), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, path)
    return path


def brain(seed: int, shape: Sequence[int] = SHAPE) -> np.ndarray:
    """A small int16 'brain': positive values inside, zero background."""
    rng = np.random.default_rng(seed)
    volume = np.zeros(shape, dtype=np.int16)
    volume[1:-1, 1:-1, 1:-1] = rng.integers(50, 500, size=[s - 2 for s in shape], dtype=np.int16)
    return volume


def tumour(labels: Sequence[int], shape: Sequence[int] = SHAPE) -> np.ndarray:
    """A uint8 segmentation holding exactly ``labels`` (0 plus one small block per label)."""
    seg = np.zeros(shape, dtype=np.uint8)
    for index, label in enumerate(label for label in labels if label):
        seg[2 + index, 2:5, 2:4] = label
    return seg


class CaseWriter:
    """Writes cases of each layout; every method returns the folder it wrote."""

    def legacy(
        self, root: Path, case_id: str, ext: str = ".nii.gz", labels: Sequence[int] | None = (0, 1, 2, 4), seed: int = 0
    ) -> Path:
        """BraTS 2017-2021 naming: ``<case>/<case>_{t1,t1ce,t2,flair,seg}<ext>`` (no seg when ``labels`` is None)."""
        folder = root / case_id
        for index, suffix in enumerate(LEGACY_NAMES.values()):
            write_nifti(folder / f"{case_id}_{suffix}{ext}", brain(seed + index))
        if labels is not None:
            write_nifti(folder / f"{case_id}_seg{ext}", tumour(labels))
        return folder

    def brats2023(self, root: Path, case_id: str, labels: Sequence[int] | None = (0, 1, 2, 3), seed: int = 0) -> Path:
        """BraTS 2023+ naming: ``<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz``."""
        folder = root / case_id
        for index, suffix in enumerate(BRATS2023_NAMES.values()):
            write_nifti(folder / f"{case_id}-{suffix}.nii.gz", brain(seed + index))
        if labels is not None:
            write_nifti(folder / f"{case_id}-seg.nii.gz", tumour(labels))
        return folder

    def msd(self, root: Path, train: Sequence[int] = (1, 2, 3), test: Sequence[int] = (4,), dataset_json: dict | None = None) -> Path:
        """MSD Task01: 4D ``imagesTr``/``imagesTs`` (FLAIR, T1w, t1gd, T2w), ``labelsTr`` (labels 0-3), ``dataset.json``."""
        root.mkdir(parents=True, exist_ok=True)
        (root / "dataset.json").write_text(json.dumps(dataset_json or MSD_DATASET_JSON))
        for number in (*train, *test):
            image = np.stack([brain(number * 10 + channel) for channel in range(4)], axis=-1)
            folder = "imagesTr" if number in train else "imagesTs"
            write_nifti(root / folder / f"BRATS_{number:03d}.nii.gz", image)
            if number in train:
                write_nifti(root / "labelsTr" / f"BRATS_{number:03d}.nii.gz", tumour((0, 1, 2, 3)))
        return root
