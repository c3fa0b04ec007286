"""What the prediction tests run on their cases: oracle networks, tiny run and bundle folders, and the geometry check.

The cases themselves come from :mod:`case_writers` (:func:`case_writers.write_case`): their image
channels encode the ground truth, which the :class:`OracleNetwork` reads back after z-scoring, so
its predictions score Dice 1 whatever the storage.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch


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
