"""MR appearance of a synthetic case: four contrasts from tissue and tumour maps.

Each modality gives every tissue class a relative intensity (CSF, grey and white matter,
necrosis, enhancing tumour, non-enhancing tumour, edema), jittered per case, so that
T1: WM > GM > CSF; T2: CSF > GM > WM; FLAIR: CSF dark, edema bright; T1ce: like T1 with the
enhancing rim bright; necrosis dark on T1/T1ce and bright on T2. Edema is an intensity shift
on top of the tissue it infiltrates, so grey and white matter still show through it. Then a
smooth multiplicative bias field, a per-case scale, Rician noise, and rounding to int16 with
the background exactly 0 and every brain voxel at least 1.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.synth.anatomy import FOV_HALF_MM, Tissues
from pipeline.synth.lattice import Lattice, random_field
from pipeline.synth.tumour import LesionMaps
from pipeline.tasks.modalities import MODALITIES

__all__ = ["BrainVoxels", "draw_appearance", "render_modality"]


#: Tissue classes of the intensity table, in column order.
TISSUE_CLASSES: tuple[str, ...] = ("csf", "grey", "white", "necrosis", "enhancing", "non_enhancing", "edema")

#: Typical relative intensity of each tissue class (columns as TISSUE_CLASSES) in each modality.
RELATIVE_INTENSITY: dict[str, tuple[float, ...]] = {
    "t1": (0.30, 0.62, 0.85, 0.30, 0.62, 0.45, 0.58),
    "t1ce": (0.30, 0.64, 0.83, 0.32, 1.55, 0.48, 0.58),
    "t2": (1.60, 0.82, 0.55, 1.45, 0.95, 1.15, 1.20),
    "flair": (0.18, 0.74, 0.58, 0.75, 0.95, 1.10, 1.30),
}
#: Typical white-matter value of each modality in the written int16 volume.
_WHITE_MATTER_LEVEL = {"t1": 800.0, "t1ce": 900.0, "t2": 550.0, "flair": 700.0}


@dataclasses.dataclass(frozen=True)
class Appearance:
    """How one case's scanner renders the tissues.

    Args:
        intensity: per modality, the intensity of each tissue class (TISSUE_CLASSES order).
        bias: per modality, the log of the multiplicative bias field (a smooth lattice).
        noise: per modality, the noise standard deviation relative to white matter.
        texture: relative amplitude of the tumour's heterogeneity.
    """

    intensity: dict[str, np.ndarray]
    bias: dict[str, Lattice]
    noise: dict[str, float]
    texture: float


def draw_appearance(rng: np.random.Generator) -> Appearance:
    """Per-case contrast (each tissue jittered a few percent), scale, bias field and noise level."""
    intensity: dict[str, np.ndarray] = {}
    bias: dict[str, Lattice] = {}
    noise: dict[str, float] = {}
    spread = np.array([0.05, 0.05, 0.05, 0.08, 0.08, 0.08, 0.08])
    for modality in MODALITIES:
        relative = np.asarray(RELATIVE_INTENSITY[modality]) * np.exp(rng.normal(0.0, spread))
        scale = _WHITE_MATTER_LEVEL[modality] * np.exp(rng.normal(0.0, 0.25)) / relative[2]
        intensity[modality] = relative * scale
        field = random_field(rng, -FOV_HALF_MM, FOV_HALF_MM, spacing=20.0, correlation_mm=60.0)
        bias[modality] = dataclasses.replace(field, values=field.values * np.float32(rng.uniform(0.03, 0.08)))
        noise[modality] = float(rng.uniform(0.015, 0.04))
    return Appearance(intensity, bias, noise, texture=float(rng.uniform(0.05, 0.1)))


@dataclasses.dataclass(frozen=True)
class BrainVoxels:
    """Tissue and tumour weights of the brain voxels only (1-D, in ``tissues.brain`` order): rendering touches nothing else."""

    csf: np.ndarray
    grey: np.ndarray
    white: np.ndarray
    edema: np.ndarray
    core: np.ndarray
    necrosis: np.ndarray
    enhancing: np.ndarray
    texture: np.ndarray

    @classmethod
    def gather(cls, tissues: Tissues, maps: LesionMaps) -> BrainVoxels:
        """Pick the brain voxels out of the box-shaped maps."""
        inside = tissues.brain
        return cls(
            tissues.csf[inside], tissues.grey[inside], tissues.white[inside], maps.edema[inside],
            maps.core[inside], maps.necrosis[inside], maps.enhancing[inside], maps.texture[inside],
        )

    def with_fluid(self, weight: np.ndarray) -> BrainVoxels:
        """These voxels with a fluid pocket of ``weight`` (brain voxels only): rendered as CSF, replacing tissue and tumour."""
        keep = np.float32(1.0) - weight
        return dataclasses.replace(
            self, csf=self.csf + weight * (1.0 - self.csf), grey=self.grey * keep, white=self.white * keep,
            edema=self.edema * keep, core=self.core * keep, necrosis=self.necrosis * keep,
        )


def render_modality(
    modality: str, appearance: Appearance, tissues: Tissues, voxels: BrainVoxels, rng: np.random.Generator
) -> np.ndarray:
    """One modality on the tissue box: int16, 0 outside the brain, at least 1 inside."""
    csf, grey, white, necrosis, enhancing, non_enhancing, edema = (np.float32(v) for v in appearance.intensity[modality])
    signal = voxels.csf * csf + voxels.grey * grey + voxels.white * white
    signal += voxels.edema * (1.0 - voxels.csf) * (edema - white)  # CSF spaces inside the edema stay CSF
    active = enhancing * voxels.enhancing + non_enhancing * (1.0 - voxels.enhancing)
    core = (voxels.necrosis * necrosis + (1.0 - voxels.necrosis) * active) * (1.0 + np.float32(appearance.texture) * voxels.texture)
    signal += voxels.core * (core - signal)
    bias = appearance.bias[modality].sample(tissues.x_mm, tissues.y_mm, tissues.z_mm)
    signal *= np.exp(bias[tissues.brain])
    sigma = np.float32(appearance.noise[modality] * white)
    real = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    out = np.zeros(tissues.brain.shape, dtype=np.int16)
    out[tissues.brain] = np.clip(np.rint(np.sqrt(real * real + imaginary * imaginary)), 1, np.iinfo(np.int16).max)
    return out
