"""The one writer of tiny NIfTI test cases: files, BraTS case folders, MSD Task01 folders and data lists.

Two kinds of case content, both written through :func:`write_brats_case` / :func:`write_msd_dataset`:

- layout cases (:class:`CaseWriter`, 8x8x6 voxels, L-P-S header): a random 'brain' and one small
  block per label, enough to discover and validate every release layout;
- prediction cases (:func:`write_case`, :func:`write_msd_case`, 30x34x18 voxels, anisotropic,
  stored in a chosen voxel order): the image channels encode the ground truth so that an oracle
  network can read it back after z-scoring. Within the brain T1, T2 and T1ce are constant except
  on NEC / ED / ET voxels respectively, where they are brighter (each a minority of the brain, so
  only there is their z-score positive); FLAIR carries texture.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from pipeline.tasks.labels import get_convention
from pipeline.tasks.modalities import BRATS2023_SUFFIXES, MODALITIES

# ----------------------------------------------------------------------------- files and folders

#: The BraTS header convention of the layout cases: voxel axes L-P-S.
SHAPE = (8, 8, 6)
LPS_AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, SHAPE[1] - 1], [0, 0, 1.0, 0], [0, 0, 0, 1]])

#: File suffix of each canonical modality (and ``seg``) per file naming.
FILE_SUFFIXES: dict[str, dict[str, str]] = {
    "brats2021": {**{modality: modality for modality in MODALITIES}, "seg": "seg"},
    "brats2023": {**BRATS2023_SUFFIXES, "seg": "seg"},
}
_SEPARATORS = {"brats2021": "_", "brats2023": "-"}

#: The label convention each file naming's segmentations are written in.
NAMING_CONVENTIONS = {"brats2021": "brats2017", "brats2023": "brats2023"}

#: The ``dataset.json`` of MSD Task01 (channels FLAIR, T1w, t1gd, T2w; labels 0-3).
MSD_DATASET_JSON = {
    "name": "BRATS",
    "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
    "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
}
#: Canonical modality of each channel of an MSD Task01 4D image.
MSD_ORDER = ("flair", "t1", "t1ce", "t2")


def write_nifti(
    path: Path,
    data: np.ndarray,
    affine: np.ndarray = LPS_AFFINE,
    qform_code: int = 1,
    sform_code: int = 1,
    header: nib.Nifti1Header | None = None,
) -> Path:
    """Save ``data`` as NIfTI with the given qform and sform codes, creating the folder.

    Args:
        header: a header to keep (e.g. the file's own, when a test rewrites a file); its data
            type follows ``data``.
    """
    if header is not None:
        header = header.copy()
        header.set_data_dtype(data.dtype)
    image = nib.Nifti1Image(np.ascontiguousarray(data), affine, header=header)
    image.set_qform(affine, code=qform_code)
    image.set_sform(affine, code=sform_code)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path


def case_file(case_dir: Path, suffix: str, naming: str = "brats2021", ext: str = ".nii.gz") -> Path:
    """The file of one modality (canonical name: ``t1``, ``t1ce``, ``t2``, ``flair``) or ``seg`` of a case folder."""
    return case_dir / f"{case_dir.name}{_SEPARATORS[naming]}{FILE_SUFFIXES[naming][suffix]}{ext}"


def write_brats_case(
    root: Path,
    case_id: str,
    volumes: Mapping[str, np.ndarray],
    naming: str = "brats2021",
    ext: str = ".nii.gz",
    affine: np.ndarray = LPS_AFFINE,
    qform_code: int = 1,
    sform_code: int = 1,
) -> Path:
    """Write ``root/case_id/`` holding ``volumes`` (canonical modality name or ``seg`` -> voxels as stored); returns the folder."""
    folder = root / case_id
    for suffix, data in volumes.items():
        write_nifti(case_file(folder, suffix, naming, ext), data, affine, qform_code, sform_code)
    return folder


def write_msd_dataset(
    root: Path,
    training: Mapping[str, tuple[np.ndarray, np.ndarray]],
    test: Mapping[str, np.ndarray] = {},  # noqa: B006 - read only
    dataset_json: dict | None = None,
    affine: np.ndarray = LPS_AFFINE,
    qform_code: int = 1,
    sform_code: int = 1,
) -> Path:
    """An MSD Task01 folder: ``imagesTr`` + ``labelsTr`` (``training``: case -> (4D image, label)), ``imagesTs`` (``test``), ``dataset.json``.

    ``dataset_json`` defaults to :data:`MSD_DATASET_JSON` with its ``training`` and ``test`` lists filled in.
    """
    root.mkdir(parents=True, exist_ok=True)
    if dataset_json is None:
        entries = [{"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"} for case in training]
        dataset_json = {**MSD_DATASET_JSON, "training": entries, "test": [f"./imagesTs/{case}.nii.gz" for case in test]}
    (root / "dataset.json").write_text(json.dumps(dataset_json))
    for case, (image, label) in training.items():
        write_nifti(root / "imagesTr" / f"{case}.nii.gz", image, affine, qform_code, sform_code)
        write_nifti(root / "labelsTr" / f"{case}.nii.gz", label, affine, qform_code, sform_code)
    for case, image in test.items():
        write_nifti(root / "imagesTs" / f"{case}.nii.gz", image, affine, qform_code, sform_code)
    return root


def write_datalist(path: Path, data_root: Path, cases: dict[str, str], convention: str = "brats2017") -> Path:
    """A data list with the given BraTS 2021-named cases (``case_id -> split``)."""
    payload: dict = {"name": "tiny", "label_convention": convention, "data_root": str(data_root), "training": [], "validation": [], "test": [], "unlabelled": []}
    for case_id, split in cases.items():
        folder = Path(case_id)
        entry = {"case_id": case_id, "image": [case_file(folder, m).as_posix() for m in MODALITIES]}
        if split != "unlabelled":
            entry["label"] = case_file(folder, "seg").as_posix()
            entry["fold"] = -1 if split == "test" else 0
        payload[split].append(entry)
    path.write_text(json.dumps(payload))
    return path


# ----------------------------------------------------------------------------- layout cases


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
    """Writes layout cases of each release; every method returns the folder it wrote."""

    @staticmethod
    def _volumes(labels: Sequence[int] | None, seed: int) -> dict[str, np.ndarray]:
        volumes = {modality: brain(seed + index) for index, modality in enumerate(MODALITIES)}
        return volumes if labels is None else {**volumes, "seg": tumour(labels)}

    def legacy(
        self, root: Path, case_id: str, ext: str = ".nii.gz", labels: Sequence[int] | None = (0, 1, 2, 4), seed: int = 0
    ) -> Path:
        """BraTS 2017-2021 naming: ``<case>/<case>_{t1,t1ce,t2,flair,seg}<ext>`` (no seg when ``labels`` is None)."""
        return write_brats_case(root, case_id, self._volumes(labels, seed), "brats2021", ext)

    def brats2023(self, root: Path, case_id: str, labels: Sequence[int] | None = (0, 1, 2, 3), seed: int = 0) -> Path:
        """BraTS 2023+ naming: ``<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz``."""
        return write_brats_case(root, case_id, self._volumes(labels, seed), "brats2023")

    def msd(self, root: Path, train: Sequence[int] = (1, 2, 3), test: Sequence[int] = (4,), dataset_json: dict | None = None) -> Path:
        """MSD Task01: 4D ``imagesTr``/``imagesTs`` (FLAIR, T1w, t1gd, T2w), ``labelsTr`` (labels 0-3), ``dataset.json``."""

        def image(number: int) -> np.ndarray:
            return np.stack([brain(number * 10 + channel) for channel in range(len(MSD_ORDER))], axis=-1)

        training = {f"BRATS_{number:03d}": (image(number), tumour((0, 1, 2, 3))) for number in train}
        return write_msd_dataset(root, training, {f"BRATS_{number:03d}": image(number) for number in test}, dataset_json)


# ----------------------------------------------------------------------------- prediction cases

#: Canonical (RAS) grid of the prediction cases: X, Y, Z and the voxel size in mm (anisotropic on purpose).
CANONICAL_SHAPE = (30, 34, 18)
SPACING = (2.0, 1.5, 3.0)


def canonical_case(seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Modalities (int16, RAS order, keyed by canonical name) and the internal labels of one prediction case."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.arange(n) for n in CANONICAL_SHAPE), indexing="ij")
    centre = np.array(CANONICAL_SHAPE) / 2
    inside = ((x - centre[0]) / 13) ** 2 + ((y - centre[1]) / 15) ** 2 + ((z - centre[2]) / 8) ** 2 <= 1
    # An off-centre tumour, so a left-right or front-back mix-up moves it.
    tumour_centre = centre + np.array([5 + seed % 3, -4, 1])
    distance = np.sqrt(((x - tumour_centre[0]) * SPACING[0]) ** 2 + ((y - tumour_centre[1]) * SPACING[1]) ** 2 + ((z - tumour_centre[2]) * SPACING[2]) ** 2)
    labels = np.zeros(CANONICAL_SHAPE, np.uint8)
    labels[(distance < 11) & inside] = 2
    labels[(distance < 7) & inside] = 3
    labels[(distance < 4) & inside] = 1
    labels[(x > tumour_centre[0] + 1) & (labels == 1)] = 3  # break the symmetry of the core
    modalities = {}
    for index, name in enumerate(MODALITIES):
        marker = {"t1": 1, "t2": 2, "t1ce": 3}.get(name)
        if marker is None:  # FLAIR: bright tumour and texture (the oracle does not read it)
            image = np.where(inside, 100 + rng.integers(-20, 21, CANONICAL_SHAPE) + 60 * (labels > 0), 0)
        else:  # constant per marker, so the marker alone has a positive z-score
            image = np.where(inside, 100 + 3 * index, 0)
            image = np.where(labels == marker, 200, image)
        modalities[name] = image.astype(np.int16)
    return modalities, labels


def ras_affine() -> np.ndarray:
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = [-30.0, -25.0, 10.0]
    return affine


def _flip_lps(shape: tuple[int, ...]) -> np.ndarray:
    """Index map new -> old for data flipped along X and Y (the BraTS L-P-S storage)."""
    matrix = np.diag([-1.0, -1.0, 1.0, 1.0])
    matrix[0, 3], matrix[1, 3] = shape[0] - 1, shape[1] - 1
    return matrix


def _rotation(degrees: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    rotation = np.eye(4)
    rotation[:3, :3] = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    tilt = np.eye(4)
    tilt[:3, :3] = [[1, 0, 0], [0, np.cos(angle / 2), -np.sin(angle / 2)], [0, np.sin(angle / 2), np.cos(angle / 2)]]
    return tilt @ rotation


#: Storage layouts of the prediction cases (see :func:`stored`).
LAYOUTS = ("ras", "lps", "permuted", "oblique")


def stored(layout: str, volume: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``volume`` (canonical RAS order) stored in ``layout``: its voxels, affine, qform code and sform code."""
    if layout == "ras":
        return volume, ras_affine(), 1, 1
    if layout == "lps":
        return volume[::-1, ::-1, :], ras_affine() @ _flip_lps(volume.shape), 2, 1
    if layout == "permuted":
        # stored as (Z, X, Y): new index (k, i, j) holds old voxel (i, j, k)
        permutation = np.zeros((4, 4))
        permutation[0, 1] = permutation[1, 2] = permutation[2, 0] = permutation[3, 3] = 1
        return volume.transpose(2, 0, 1), ras_affine() @ permutation, 1, 0
    if layout == "oblique":
        return volume[::-1, ::-1, :], _rotation(20) @ ras_affine() @ _flip_lps(volume.shape), 1, 2
    raise ValueError(layout)


def write_case(
    root: Path,
    case_id: str = "BraTS2021_00001",
    layout: str = "lps",
    seed: int = 0,
    with_label: bool = True,
    naming: str = "brats2021",
) -> Path:
    """Write one prediction case folder in ``layout``; ``naming`` is ``brats2021`` (0/1/2/4) or ``brats2023`` (0/1/2/3, ``-t1n``...)."""
    modalities, labels = canonical_case(seed)
    volumes = {name: stored(layout, volume)[0] for name, volume in modalities.items()}
    if with_label:
        volumes["seg"] = stored(layout, get_convention(NAMING_CONVENTIONS[naming]).from_internal(labels))[0].astype(np.uint8)
    _, affine, qform_code, sform_code = stored(layout, labels)
    return write_brats_case(root, case_id, volumes, naming, affine=affine, qform_code=qform_code, sform_code=sform_code)


def write_msd_case(root: Path, case_id: str = "BRATS_001", seed: int = 0) -> Path:
    """An MSD Task01 folder of one prediction case (4D image in LPS storage, and its label); returns the image's path."""
    modalities, labels = canonical_case(seed)
    image = np.stack([stored("lps", modalities[name])[0] for name in MSD_ORDER], axis=-1)
    label = stored("lps", get_convention("msd").from_internal(labels))[0].astype(np.uint8)
    _, affine, qform_code, sform_code = stored("lps", labels)
    write_msd_dataset(root, {case_id: (image, label)}, affine=affine, qform_code=qform_code, sform_code=sform_code)
    return root / "imagesTr" / f"{case_id}.nii.gz"
