"""Gliomas of a synthetic case: irregular nested regions and their BraTS labels.

A lesion is a randomly stretched and rotated ellipsoid whose surfaces are perturbed by smooth
noise. Three nested level sets give the regions: the necrotic core inside, the tumour core
(necrosis plus enhancing rim) around it, and the edema reaching further, preferring white
matter and stopping at CSF. Soft weights (a ramp about a millimetre wide across each surface)
drive the image intensities, and the labels are where the level sets pass 1 (where the weights pass
one half), so images and labels agree at every size. One case in five has no enhancing tumour: its core is labelled
non-enhancing (1) throughout.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import spatial

from pipeline.synth.anatomy import BrainPlacement, Push, Tissues, tumour_sites
from pipeline.synth.lattice import Lattice, random_field

__all__ = ["LesionMaps", "draw_lesions", "fluid_pocket", "is_enhancing", "lesion_maps"]


#: BraTS 2017-2021 labels written to the segmentation.
NECROTIC, EDEMA, ENHANCING = 1, 2, 4

#: One case in this many has a tumour that does not enhance (no label 4): every cohort of at
#: least this many cases has some, in the same share (a random draw could leave a small cohort without).
NON_ENHANCING_PERIOD = 5
#: Share of cases with a second, smaller lesion.
MULTIFOCAL_SHARE = 0.1

# Surface roughness (level-set units) of each region; the noise is clipped at 2.5 sd.
_CORE_ROUGHNESS = 0.22
_NECROSIS_ROUGHNESS = 0.18
_EDEMA_ROUGHNESS = 0.28
#: How much white matter (vs grey) draws the edema outwards, in level-set units.
_EDEMA_WHITE_MATTER_PULL = 0.5
#: Widest fade (mm) of the edema's signal towards its edge.
_EDEMA_FADE_MM = 6.0
_NOISE_CLIP = 2.5
#: Largest edema radius (mm) before stretching and noise: whole tumours up to about 250 cm^3.
_MAX_EDEMA_RADIUS_MM = 38.0
#: Blob size (mm) of the tumour core's heterogeneity.
_TEXTURE_CORRELATION_MM = 3.0


@dataclasses.dataclass(frozen=True)
class Lesion:
    """One glioma, in FOV millimetres.

    Args:
        centre: FOV mm of the lesion's centre.
        shape: 3x3 map from offsets (mm) to ellipsoid units (rotation and per-axis stretch).
        core_radius: radius (mm) of the tumour core before stretching.
        necrosis_ratio: necrotic core radius / core radius (0 = solid).
        edema_ratio: edema radius / core radius.
        enhancing: whether the core has an enhancing rim (label 4).
        core_noise, necrosis_noise, edema_noise, texture: unit random fields around the lesion.
    """

    centre: np.ndarray
    shape: np.ndarray
    core_radius: float
    necrosis_ratio: float
    edema_ratio: float
    enhancing: bool
    core_noise: Lattice
    necrosis_noise: Lattice
    edema_noise: Lattice
    texture: Lattice

    @property
    def reach(self) -> float:
        """Largest distance (mm) from the centre that any region of the lesion can reach."""
        return _reach(self.shape, self.core_radius * self.edema_ratio, _EDEMA_ROUGHNESS + _EDEMA_WHITE_MATTER_PULL / 2)

    @property
    def push(self) -> Push:
        """The lesion's mass effect on the surrounding brain."""
        return Push(self.centre, strength=0.45, reach=1.6 * self.core_radius)


def is_enhancing(seed: int, index: int) -> bool:
    """Whether case ``index`` of cohort ``seed`` has an enhancing tumour (all but one case in NON_ENHANCING_PERIOD)."""
    return (seed + index) % NON_ENHANCING_PERIOD != NON_ENHANCING_PERIOD - 1


def draw_lesions(rng: np.random.Generator, placement: BrainPlacement, enhancing: bool) -> list[Lesion]:
    """One glioma (sometimes two) in the cerebral white matter of the placed brain.

    Args:
        rng: source of randomness.
        placement: the case's brain placement (lesion sites are chosen on the template).
        enhancing: whether the tumour has an enhancing rim (label 4) or a non-enhancing core (label 1).
    """
    positions, depths = tumour_sites()
    count = 2 if rng.random() < MULTIFOCAL_SHARE else 1
    lesions: list[Lesion] = []
    for number in range(count):
        radius = float(np.exp(rng.uniform(np.log(8.0), np.log(20.0)))) if number == 0 else float(rng.uniform(5.0, 9.0))
        eligible = depths >= 0.8 * radius + 6.0
        for earlier in lesions:
            earlier_mni = earlier.centre @ placement.matrix.T + placement.centre
            eligible &= np.linalg.norm(positions - earlier_mni, axis=1) >= earlier.core_radius + radius + 12.0
        candidates = np.flatnonzero(eligible)
        if candidates.size == 0:  # no room left for another lesion
            break
        site = positions[candidates[rng.integers(len(candidates))]] + rng.uniform(-1.0, 1.0, size=3)
        lesions.append(_draw_lesion(rng, placement.to_fov(site), radius, enhancing))
    return lesions


def _reach(shape: np.ndarray, size: float, roughness: float) -> float:
    """Largest distance (mm) from the centre that a region of radius ``size`` and surface ``roughness`` can reach."""
    stretch = float(np.linalg.norm(np.linalg.inv(shape), 2))
    return stretch * size * (1.0 + _NOISE_CLIP * roughness) + 2.0


def _field_around(rng: np.random.Generator, centre: np.ndarray, reach: float, correlation: float) -> Lattice:
    """A unit random field over the cube of half-side ``reach`` around ``centre``, lattice spacing a third of its blob size."""
    return random_field(rng, centre - reach, centre + reach, spacing=correlation / 3, correlation_mm=correlation)


def _draw_lesion(rng: np.random.Generator, centre: np.ndarray, radius: float, enhancing: bool) -> Lesion:
    """Shape, proportions and surface noise of one lesion centred at ``centre`` (FOV mm)."""
    rotation = spatial.transform.Rotation.random(random_state=rng).as_matrix()
    stretch = rng.uniform(0.75, 1.25, size=3)
    shape = np.diag(1.0 / stretch) @ rotation.T
    solid = rng.random() < 0.15
    necrosis_ratio = 0.0 if (solid or not enhancing) else float(rng.uniform(0.4, 0.75))
    edema_ratio = min(float(rng.uniform(1.3, 2.2)), _MAX_EDEMA_RADIUS_MM / radius)
    correlation = max(4.0, 0.45 * radius)
    reach = _reach(shape, radius * edema_ratio, _EDEMA_ROUGHNESS + _EDEMA_WHITE_MATTER_PULL / 2)
    core_reach = _reach(shape, radius, _CORE_ROUGHNESS)
    return Lesion(
        centre=np.asarray(centre, dtype=np.float64),
        shape=shape,
        core_radius=radius,
        necrosis_ratio=necrosis_ratio,
        edema_ratio=edema_ratio,
        enhancing=enhancing,
        core_noise=_field_around(rng, centre, core_reach, correlation),
        necrosis_noise=_field_around(rng, centre, core_reach, 0.7 * correlation),
        edema_noise=_field_around(rng, centre, reach, 1.3 * correlation),
        texture=_field_around(rng, centre, core_reach, _TEXTURE_CORRELATION_MM),
    )


@dataclasses.dataclass
class LesionMaps:
    """Soft region weights (for the images) and labels of a case on its tissue box.

    Arrays are shaped like ``Tissues.brain``; weights lie in [0, 1].

    Args:
        edema: weight of edema (fading out over several mm towards its edge, which is where it is 0.5).
        core: weight of tumour core.
        necrosis: weight of necrosis within the core.
        enhancing: 1 where the core belongs to an enhancing lesion, else 0.
        texture: smooth unit noise for the core's heterogeneity.
        labels: uint8 BraTS labels (0, 1, 2, 4).
    """

    edema: np.ndarray
    core: np.ndarray
    necrosis: np.ndarray
    enhancing: np.ndarray
    texture: np.ndarray
    labels: np.ndarray


def lesion_maps(lesions: list[Lesion], tissues: Tissues, ramp_mm: float) -> LesionMaps:
    """Regions of ``lesions`` sampled on ``tissues``' box.

    Args:
        lesions: the case's lesions.
        tissues: the case's tissue maps (brain mask, white matter, CSF, voxel positions).
        ramp_mm: width (mm) of the soft transition across the core and necrosis surfaces
            (the edema fades over a fifth of its radius, at most ``_EDEMA_FADE_MM``).
    """
    shape = tissues.brain.shape
    maps = LesionMaps(*(np.zeros(shape, dtype=np.float32) for _ in range(5)), labels=np.zeros(shape, dtype=np.uint8))
    regions = {name: np.zeros(shape, dtype=bool) for name in ("edema", "core", "necrosis", "enhancing")}
    axes = (tissues.x_mm, tissues.y_mm, tissues.z_mm)
    for lesion in lesions:
        window = tuple(_window(axis, lesion.centre[n] - lesion.reach, lesion.centre[n] + lesion.reach) for n, axis in enumerate(axes))
        local = [axis[w] for axis, w in zip(axes, window)]
        if min(len(a) for a in local) == 0:
            continue
        offsets = np.meshgrid(*(a - np.float32(c) for a, c in zip(local, lesion.centre)), indexing="ij", sparse=True)
        stretched = [sum(np.float32(lesion.shape[row, column]) * offsets[column] for column in range(3)) for row in range(3)]
        radius = np.sqrt(stretched[0] ** 2 + stretched[1] ** 2 + stretched[2] ** 2)

        def level(noise: Lattice, size: float, roughness: float) -> np.ndarray:
            return radius / np.float32(size) + np.float32(roughness) * np.clip(noise.sample(*local), -_NOISE_CLIP, _NOISE_CLIP)

        def weight(level_set: np.ndarray, size: float, ramp: float) -> np.ndarray:
            return np.clip(0.5 + (1.0 - level_set) * np.float32(size / ramp), 0.0, 1.0)

        brain = tissues.brain[window]
        core_size = lesion.core_radius
        core_level = level(lesion.core_noise, core_size, _CORE_ROUGHNESS)
        edema_size = core_size * lesion.edema_ratio
        edema_level = level(lesion.edema_noise, edema_size, _EDEMA_ROUGHNESS)
        edema_level -= np.float32(_EDEMA_WHITE_MATTER_PULL) * (tissues.white[window] - np.float32(0.5))
        edema_ramp = float(np.clip(0.2 * edema_size, ramp_mm, _EDEMA_FADE_MM))
        _merge(maps.edema[window], weight(edema_level, edema_size, edema_ramp) * brain)
        _merge(maps.core[window], weight(core_level, core_size, ramp_mm) * brain)
        regions["edema"][window] |= (edema_level < 1) & brain & (tissues.csf[window] < 0.5)
        core = (core_level < 1) & brain
        regions["core"][window] |= core
        if lesion.necrosis_ratio > 0:
            necrosis_size = core_size * lesion.necrosis_ratio
            necrosis_level = level(lesion.necrosis_noise, necrosis_size, _NECROSIS_ROUGHNESS)
            _merge(maps.necrosis[window], weight(necrosis_level, necrosis_size, ramp_mm))
            regions["necrosis"][window] |= necrosis_level < 1
        if lesion.enhancing:
            regions["enhancing"][window] |= core
            maps.enhancing[window] = 1.0
        inside = core_level < 1.0 + np.float32(ramp_mm / core_size)
        maps.texture[window] = np.where(inside, np.clip(lesion.texture.sample(*local), -_NOISE_CLIP, _NOISE_CLIP), maps.texture[window])
    maps.labels[regions["edema"]] = EDEMA
    maps.labels[regions["core"]] = NECROTIC
    maps.labels[regions["enhancing"] & ~regions["necrosis"]] = ENHANCING
    return maps


def _merge(target: np.ndarray, weight: np.ndarray) -> None:
    """Overlapping lesions: keep the stronger weight (in place)."""
    np.maximum(target, weight, out=target)


def _window(axis_mm: np.ndarray, low: float, high: float) -> slice:
    """Index slice of the sorted positions ``axis_mm`` within ``[low, high]``."""
    return slice(int(np.searchsorted(axis_mm, low, side="left")), int(np.searchsorted(axis_mm, high, side="right")))


def fluid_pocket(
    rng: np.random.Generator, lesion: Lesion, tissues: Tissues, offset: float, ratio: float, ramp_mm: float, min_radius_mm: float
) -> np.ndarray:
    """Weight in [0, 1] (on ``tissues``' box, 0 outside the brain) of a fluid-filled sphere near ``lesion``.

    A resection cavity beside the tumour or a cyst within it: its centre lies ``offset`` core
    radii from the lesion's centre in a random direction, its radius is ``ratio`` core radii (at
    least ``min_radius_mm``, so a coarse grid still shows it); the weight passes one half on its
    surface, over a ramp ``ramp_mm`` wide.
    """
    direction = rng.normal(size=3)
    centre = lesion.centre + offset * lesion.core_radius * direction / np.linalg.norm(direction)
    radius = max(ratio * lesion.core_radius, min_radius_mm)
    offsets = np.meshgrid(*(axis - np.float32(c) for axis, c in zip((tissues.x_mm, tissues.y_mm, tissues.z_mm), centre)), indexing="ij", sparse=True)
    distance = np.sqrt(offsets[0] ** 2 + offsets[1] ** 2 + offsets[2] ** 2)
    return (np.clip(0.5 + (radius - distance) / np.float32(ramp_mm), 0.0, 1.0) * tissues.brain).astype(np.float32)
