"""Heads with skull, for measuring skull stripping: a skull-free brain wrapped in CSF, skull and scalp layers.

Every brain at hand (real BraTS cases, nilearn's MNI152 template, the synthetic cohort) is
already skull-stripped; :func:`add_head` puts back what a scanner sees around the brain, with
T1-weighted intensities relative to the brain's median: a thin dark CSF rim, the skull's dark
inner and outer tables around bright marrow (diploe), muscle, and bright scalp fat. The brain
mask it returns is the reference a skull stripper's mask is scored against.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

__all__ = ["T1_HEAD_LAYERS", "add_head"]

#: (outer distance from the brain in mm, intensity relative to the brain's median) of each layer, inside out.
T1_HEAD_LAYERS: tuple[tuple[float, float], ...] = (
    (2.0, 0.15),  # CSF
    (4.0, 0.05),  # inner table (cortical bone)
    (7.0, 0.6),  # diploe (marrow)
    (9.0, 0.05),  # outer table
    (11.0, 0.35),  # muscle and galea
    (16.0, 1.1),  # scalp fat
)


def add_head(brain: sitk.Image, pad_mm: float = 20.0, seed: int = 0) -> tuple[sitk.Image, sitk.Image]:
    """Wrap a skull-stripped brain (background exactly 0) in skull and scalp layers (:data:`T1_HEAD_LAYERS`).

    Args:
        brain: a skull-stripped T1-weighted volume.
        pad_mm: margin added on every side so the layers fit in the field of view.
        seed: seed of the noise added to the layers.

    Returns:
        The head (float32, the grid padded by ``pad_mm``) and the brain mask on the same grid
        (uint8: the brain's non-zero voxels with their holes filled).
    """
    spacing = np.asarray(brain.GetSpacing())
    pad = [int(np.ceil(pad_mm / s)) for s in spacing]
    padded = sitk.ConstantPad(sitk.Cast(brain, sitk.sitkFloat32), pad, pad, 0.0)
    voxels = sitk.GetArrayFromImage(padded)  # (z, y, x)
    mask = ndimage.binary_fill_holes(voxels > 0)
    distance = ndimage.distance_transform_edt(~mask, sampling=spacing[::-1])
    level = float(np.median(voxels[mask]))
    layers = np.zeros_like(voxels)
    inner = 0.0
    for outer, relative in T1_HEAD_LAYERS:
        layers[(distance > inner) & (distance <= outer)] = relative * level
        inner = outer
    rng = np.random.default_rng(seed)
    layers = ndimage.gaussian_filter(layers, 0.7 / spacing[::-1]) + (layers > 0) * rng.normal(0.0, 0.03 * level, layers.shape)
    head = np.where(mask, voxels, np.clip(layers, 0.0, None)).astype(np.float32)
    head_image = sitk.GetImageFromArray(head)
    head_image.CopyInformation(padded)
    mask_image = sitk.GetImageFromArray(mask.astype(np.uint8))
    mask_image.CopyInformation(padded)
    return head_image, mask_image

