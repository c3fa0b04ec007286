"""Tiny BraTS-like cases stored in chosen voxel orders, a tiny run folder, and an oracle network.

The image channels encode the ground truth so that an :class:`OracleNetwork` can read it back
after z-scoring: within the brain T1, T2 and T1ce are constant except on NEC / ED / ET voxels
respectively, where they are brighter (each a minority of the brain, so only there is their
z-score positive). FLAIR carries texture. Predictions of the oracle must therefore score Dice 1 whatever the storage.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from pipeline.labels import get_convention

#: Canonical (RAS) grid of the test cases: X, Y, Z and the voxel size in mm (anisotropic on purpose).
SHAPE = (30, 34, 18)
SPACING = (2.0, 1.5, 3.0)
MODALITY_FILES = ("t1", "t1ce", "t2", "flair")
BRATS2023_FILES = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}


def canonical_case(seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Modalities (int16, RAS order, keyed by canonical name) and the internal labels of one case."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    centre = np.array(SHAPE) / 2
    brain = ((x - centre[0]) / 13) ** 2 + ((y - centre[1]) / 15) ** 2 + ((z - centre[2]) / 8) ** 2 <= 1
    # An off-centre tumour, so a left-right or front-back mix-up moves it.
    tumour_centre = centre + np.array([5 + seed % 3, -4, 1])
    distance = np.sqrt(((x - tumour_centre[0]) * SPACING[0]) ** 2 + ((y - tumour_centre[1]) * SPACING[1]) ** 2 + ((z - tumour_centre[2]) * SPACING[2]) ** 2)
    labels = np.zeros(SHAPE, np.uint8)
    labels[(distance < 11) & brain] = 2
    labels[(distance < 7) & brain] = 3
    labels[(distance < 4) & brain] = 1
    labels[(x > tumour_centre[0] + 1) & (labels == 1)] = 3  # break the symmetry of the core
    modalities = {}
    for index, name in enumerate(MODALITY_FILES):
        marker = {"t1": 1, "t2": 2, "t1ce": 3}.get(name)
        if marker is None:  # FLAIR: bright tumour and texture (the oracle does not read it)
            image = np.where(brain, 100 + rng.integers(-20, 21, SHAPE) + 60 * (labels > 0), 0)
        else:  # constant per marker, so the marker alone has a positive z-score
            image = np.where(brain, 100 + 3 * index, 0)
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


#: Storage layouts: name -> (data from canonical data, affine, qform code, sform code).
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


LAYOUTS = ("ras", "lps", "permuted", "oblique")


def write_image(path: Path, data: np.ndarray, affine: np.ndarray, qform_code: int, sform_code: int) -> Path:
    image = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    image.set_qform(affine, code=qform_code)
    image.set_sform(affine, code=sform_code)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path


def write_case(
    root: Path,
    case_id: str = "BraTS2021_00001",
    layout: str = "lps",
    seed: int = 0,
    with_label: bool = True,
    naming: str = "brats2021",
) -> Path:
    """Write one case folder in ``layout``; ``naming`` is ``brats2021`` (0/1/2/4) or ``brats2023`` (0/1/2/3, ``-t1n``...)."""
    modalities, labels = canonical_case(seed)
    folder = root / case_id
    separator = "-" if naming == "brats2023" else "_"
    for name, volume in modalities.items():
        suffix = BRATS2023_FILES[name] if naming == "brats2023" else name
        data, affine, qcode, scode = stored(layout, volume)
        write_image(folder / f"{case_id}{separator}{suffix}.nii.gz", data, affine, qcode, scode)
    if with_label:
        convention = get_convention("brats2023" if naming == "brats2023" else "brats2017")
        data, affine, qcode, scode = stored(layout, convention.from_internal(labels))
        write_image(folder / f"{case_id}{separator}seg.nii.gz", data.astype(np.uint8), affine, qcode, scode)
    return folder


def write_msd_case(root: Path, case_id: str = "BRATS_001", seed: int = 0) -> Path:
    """An MSD Task01 case: one 4D image (FLAIR, T1w, t1gd, T2w) in LPS storage and its label."""
    modalities, labels = canonical_case(seed)
    order = ("flair", "t1", "t1ce", "t2")
    data = np.stack([stored("lps", modalities[name])[0] for name in order], axis=-1)
    _, affine, qcode, scode = stored("lps", labels)
    write_image(root / "imagesTr" / f"{case_id}.nii.gz", data, affine, qcode, scode)
    label = get_convention("msd").from_internal(labels)
    write_image(root / "labelsTr" / f"{case_id}.nii.gz", stored("lps", label)[0].astype(np.uint8), affine, qcode, scode)
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "name": "BRATS",
                "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
                "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
                "training": [{"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"}],
                "test": [],
            }
        )
    )
    return root / "imagesTr" / f"{case_id}.nii.gz"


def write_datalist(path: Path, data_root: Path, cases: dict[str, str], convention: str = "brats2017") -> Path:
    """A data list with the given cases (``case_id -> split``), BraTS 2021 file naming."""
    payload: dict = {"name": "tiny", "label_convention": convention, "data_root": str(data_root), "training": [], "validation": [], "test": [], "unlabelled": []}
    for case_id, split in cases.items():
        entry = {"case_id": case_id, "image": [f"{case_id}/{case_id}_{m}.nii.gz" for m in MODALITY_FILES]}
        if split != "unlabelled":
            entry["label"] = f"{case_id}/{case_id}_seg.nii.gz"
            entry["fold"] = -1 if split == "test" else 0
        payload[split].append(entry)
    path.write_text(json.dumps(payload))
    return path


class OracleNetwork(torch.nn.Module):
    """Reads the labels back from the marker channels of the centre slice: logits (bg, NEC, ED, ET)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = (x.shape[1] - 4) // 2  # the centre slice's 4 channels (2D: the only ones)
        t1, t1ce, t2 = x[:, start], x[:, start + 1], x[:, start + 2]
        background = torch.full_like(t1, 0.5)
        return torch.stack([background, t1, t2, t1ce], dim=1)


class HyperintensityNetwork(torch.nn.Module):
    """A fixed rule for real scans: edema where FLAIR is bright (z > 2), ET where T1ce is very bright inside it.

    Not a model of anything, only a deterministic predictor whose output overlaps the real
    tumour, so a mirrored or shifted export shows up as a low Dice.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = (x.shape[1] - 4) // 2
        t1ce, flair = x[:, start + 1], x[:, start + 3]
        background = torch.full_like(flair, 2.0)
        never = torch.full_like(flair, -10.0)
        enhancing = torch.where(t1ce > 3, torch.minimum(flair, t1ce) - 0.5, never)
        return torch.stack([background, never, flair, enhancing], dim=1)


#: Tiny network settings for run folders made in tests (a real MONAI UNet, untrained).
TINY_NETWORK = {"mode": "2.5d", "context": 1, "channels": [8, 16], "strides": [2], "num_res_units": 1, "sw_batch_size": 8}

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "brats_segmentation" / "configs"


def write_run_dir(run_dir: Path, seed: int = 0, **settings) -> Path:
    """A run folder as training lays it out (config.json + models/model.pt) with an untrained tiny UNet.

    ``config.json`` is the bundle's train.yaml with tiny network settings (and ``settings``),
    the merged raw config a training run stores.
    """
    from monai.bundle import ConfigParser

    config = ConfigParser.load_config_file(str(CONFIGS / "train.yaml"))
    config.update(TINY_NETWORK)
    config.update(settings)
    (run_dir / "models").mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config, indent=1))
    torch.manual_seed(seed)
    network = ConfigParser(config).get_parsed_content("network_def")
    torch.save(network.state_dict(), run_dir / "models" / "model.pt")
    return run_dir


def write_bundle_dir(bundle_dir: Path, weights: Path | None = None, **settings) -> Path:
    """A bundle folder: configs/inference.yaml with tiny network settings, and models/model.pt copied from ``weights``."""
    import shutil

    import yaml

    config = yaml.safe_load((CONFIGS / "inference.yaml").read_text())
    config.update(TINY_NETWORK)
    config.update(settings)
    (bundle_dir / "configs").mkdir(parents=True, exist_ok=True)
    (bundle_dir / "configs" / "inference.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if weights is not None:
        (bundle_dir / "models").mkdir(parents=True, exist_ok=True)
        shutil.copy(weights, bundle_dir / "models" / "model.pt")
    return bundle_dir


GEOMETRY_FIELDS = (
    "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z",
    "srow_x", "srow_y", "srow_z", "xyzt_units",
)  # fmt: skip


def assert_same_geometry(output: Path | nib.Nifti1Image, reference: Path) -> None:
    """The output lies exactly on the reference's grid, read with nibabel and with SimpleITK."""
    import SimpleITK as sitk

    out_image = output if isinstance(output, nib.Nifti1Image) else nib.load(output)
    ref_image = nib.load(reference)
    assert out_image.shape == ref_image.shape[:3]
    np.testing.assert_array_equal(out_image.affine, ref_image.affine)
    for name in GEOMETRY_FIELDS:
        np.testing.assert_array_equal(out_image.header[name], ref_image.header[name], err_msg=name)
    np.testing.assert_array_equal(out_image.header["pixdim"][:4], ref_image.header["pixdim"][:4])
    if isinstance(output, nib.Nifti1Image):
        return
    out_itk, ref_itk = sitk.ReadImage(str(output)), sitk.ReadImage(str(reference))
    assert out_itk.GetSize() == ref_itk.GetSize()[:3]
    np.testing.assert_allclose(out_itk.GetOrigin(), ref_itk.GetOrigin()[:3], atol=1e-6)
    np.testing.assert_allclose(out_itk.GetSpacing(), ref_itk.GetSpacing()[:3], atol=1e-6)
    directions = np.reshape(ref_itk.GetDirection(), (ref_itk.GetDimension(), -1))[:3, :3]
    np.testing.assert_allclose(np.reshape(out_itk.GetDirection(), (3, 3)), directions, atol=1e-6)
