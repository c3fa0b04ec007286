"""Brain anatomy of a synthetic case: the MNI152 2009 template, placed and deformed per patient.

The grey- and white-matter probability maps and the skull-stripped T1 template ship inside
nilearn (the files behind ``nilearn.datasets.load_mni152_*``, in site-packages: no download). CSF is what
the brain mask holds beyond grey and white matter (sulci, ventricles). Each case places the
template in the BraTS field of view with its own rotation, scale and shift, a smooth random
displacement, and a radial push away from each tumour (mass effect), then samples the maps
trilinearly at the voxel centres.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage, spatial

from pipeline.core.errors import PipelineError
from pipeline.synth.grid import SynthGrid
from pipeline.synth.lattice import Lattice, random_field

__all__ = ["FOV_HALF_MM", "BrainPlacement", "Push", "Tissues", "draw_placement", "load_template", "tumour_sites", "warp_tissues"]


#: Millimetres from the brain's top (vertex) to the top of the field of view, as in BraTS.
_VERTEX_MARGIN_MM = 16.0
#: Margin (mm) added around the placed brain's box to cover the displacement and mass effect.
_BOX_MARGIN_MM = 20.0
#: Half-extent (mm) of the BraTS field of view (240 x 240 x 155 mm).
FOV_HALF_MM = np.array([120.0, 120.0, 77.5])


@dataclasses.dataclass(frozen=True)
class Template:
    """The MNI152 maps on their 1 mm grid (RAS voxel axes), optionally blurred for coarse grids.

    Args:
        grey, white, brain: float32 maps in [0, 1] (``brain`` is the skull-stripped brain mask).
        resolution: voxel size in mm (the voxel axes are MNI's R, A, S).
        origin: MNI mm of voxel ``(0, 0, 0)``.
        brain_low, brain_high: MNI mm corners of the brain's bounding box.
    """

    grey: np.ndarray
    white: np.ndarray
    brain: np.ndarray
    resolution: int
    origin: np.ndarray
    brain_low: np.ndarray
    brain_high: np.ndarray


#: The MNI152 2009 (nonlinear symmetric, 09a) files inside nilearn's package data.
_TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "grey": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "white": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


def template_folder() -> Path:
    """nilearn's package-data folder that holds the MNI152 files, found without importing nilearn.

    ``nilearn.datasets.load_mni152_*`` read these same files, but importing ``nilearn.datasets``
    pulls in scikit-learn, which costs more than generating a tiny cohort.

    Raises:
        PipelineError: if nilearn or its template files are missing.
    """
    spec = importlib.util.find_spec("nilearn")
    folder = Path(next(iter(spec.submodule_search_locations)) if spec and spec.submodule_search_locations else ".") / "datasets" / "data"
    for name in _TEMPLATE_FILES.values():
        if not (folder / name).is_file():
            raise PipelineError(folder / name, "MNI152 template not found: the synthetic cohort needs nilearn (pip install nilearn)")
    return folder


@functools.lru_cache(maxsize=2)
def _template_maps(resolution: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Brain mask, grey and white matter in [0, 1] at ``resolution`` mm, and the MNI mm of voxel ``(0, 0, 0)``."""
    folder = template_folder()
    images = {key: nib.load(folder / name) for key, name in _TEMPLATE_FILES.items()}
    affine = images["t1"].affine
    if not np.allclose(affine[:3, :3], np.eye(3)):
        raise RuntimeError("unexpected MNI152 template geometry in nilearn")  # the whole module assumes 1 mm RAS voxels
    brain = (np.asarray(images["t1"].dataobj) > 0).astype(np.float32)
    tissues = []
    for key in ("grey", "white"):
        volume = np.asarray(images[key].dataobj, dtype=np.float32)
        tissues.append(volume / volume.max())  # the same scaling as nilearn.datasets.load_mni152_*_template
    maps = (brain, *tissues)
    origin = affine[:3, 3].astype(np.float64)
    if resolution == 2:
        maps = tuple(_block_mean(volume) for volume in maps)
        origin = origin + 0.5
    return maps, origin


@functools.lru_cache(maxsize=3)
def load_template(resolution: int = 2, blur_mm: float = 0.0) -> Template:
    """The MNI152 2009 maps shipped with nilearn.

    Args:
        resolution: 1 (the template's own 1 mm voxels) or 2 (2 mm voxels, each the mean of 2x2x2).
        blur_mm: extra Gaussian blur (sigma, mm).
    """
    maps, origin = _template_maps(resolution)
    if blur_mm > 0:
        maps = tuple(ndimage.gaussian_filter(volume, blur_mm / resolution) for volume in maps)
    brain, grey, white = maps
    voxels = np.argwhere(brain > 0.5)
    return Template(grey, white, brain, resolution, origin, voxels.min(0) * resolution + origin, voxels.max(0) * resolution + origin)


def _block_mean(volume: np.ndarray) -> np.ndarray:
    """Mean over 2x2x2 blocks (an odd trailing slice is dropped); scipy's zoom would interpolate, not average."""
    nx, ny, nz = (n // 2 * 2 for n in volume.shape)
    blocks = volume[:nx, :ny, :nz].reshape(nx // 2, 2, ny // 2, 2, nz // 2, 2)
    return np.ascontiguousarray(blocks.mean(axis=(1, 3, 5), dtype=np.float32))


def template_for(grid: SynthGrid) -> Template:
    """The template at the resolution closest below ``grid``'s, blurred to ``grid``'s (box-shaped) voxel size."""
    resolution = 1 if grid.spacing < 2 else 2
    return load_template(resolution, float(np.sqrt(max(grid.spacing**2 - resolution**2, 0.0) / 12.0)))


@functools.lru_cache(maxsize=1)
def tumour_sites() -> tuple[np.ndarray, np.ndarray]:
    """Candidate glioma centres: cerebral white matter off the midline, with their depth below the brain surface.

    Returns:
        ``(positions, depths)``: MNI mm ``(N, 3)`` and distance in mm to the brain's edge ``(N,)``,
        on the template's 2 mm grid.
    """
    template = load_template()
    brain = template.brain > 0.5
    white = template.white
    depth = ndimage.distance_transform_edt(brain) * template.resolution
    positions = np.argwhere(brain) * template.resolution + template.origin
    keep = (
        (white[brain] > 0.6)
        & (np.abs(positions[:, 0]) >= 12)  # one hemisphere, away from the falx
        & (positions[:, 2] >= -5)  # above the cerebellum and brainstem
        & (positions[:, 2] <= 60)
    )
    return positions[keep], depth[brain][keep]


@dataclasses.dataclass(frozen=True)
class Push:
    """Mass effect of a tumour: tissue pushed radially away from ``centre``.

    A point at distance ``r`` shows the template from distance ``r * (1 - strength * exp(-(r / reach)^2))``;
    ``strength < 1`` keeps the mapping one-to-one.
    """

    centre: np.ndarray
    strength: float
    reach: float


@dataclasses.dataclass(frozen=True)
class BrainPlacement:
    """Where one patient's brain lies in the field of view.

    ``MNI = centre + matrix @ (pushed FOV mm) + displacement(FOV mm)``.

    Args:
        centre: MNI mm shown at the centre of the field of view.
        matrix: 3x3 map from FOV mm (L, P, S axes) to MNI mm (R, A, S): flips, rotation, 1/scale.
        displacement: 3-component smooth displacement (mm) lattice over the field of view.
    """

    centre: np.ndarray
    matrix: np.ndarray
    displacement: Lattice

    def to_fov(self, mni_mm: np.ndarray) -> np.ndarray:
        """FOV mm of MNI points ``(..., 3)``, ignoring the small displacement and mass effect."""
        return (np.asarray(mni_mm, dtype=np.float64) - self.centre) @ np.linalg.inv(self.matrix).T


def draw_placement(rng: np.random.Generator) -> BrainPlacement:
    """A random patient: rotation up to about 6 degrees, shift of a few mm, brain size 0.85-1.03 of MNI per axis.

    MNI152 is larger than most brains: the placed brains hold about 1.4-1.8 million 1 mm voxels,
    like real BraTS cases, with the vertex about 10-25 mm below the top of the field of view.
    """
    template = load_template()
    angles = np.deg2rad(rng.normal(0.0, [2.5, 2.5, 3.0]).clip(-6, 6))
    rotation = spatial.transform.Rotation.from_euler("xyz", angles).as_matrix()
    scale = rng.uniform(0.88, 1.0) * rng.uniform(0.97, 1.03, size=3)
    to_ras = np.diag([-1.0, -1.0, 1.0])  # FOV axes point Left, Posterior, Superior
    matrix = rotation @ np.diag(1.0 / scale) @ to_ras
    shift = rng.normal(0.0, [2.0, 3.0, 1.5])
    middle = (template.brain_low + template.brain_high) / 2
    top_fov = FOV_HALF_MM[2] - _VERTEX_MARGIN_MM
    centre = np.array([middle[0], middle[1], template.brain_high[2] - top_fov / scale[2]]) + shift
    displacement = random_field(rng, -FOV_HALF_MM, FOV_HALF_MM, spacing=10.0, correlation_mm=25.0, components=3)
    amplitude = rng.uniform(1.5, 3.0)
    displacement = dataclasses.replace(displacement, values=displacement.values * np.float32(amplitude))
    return BrainPlacement(centre, matrix, displacement)


@dataclasses.dataclass(frozen=True)
class Tissues:
    """Tissue maps of one case on a box of its grid.

    Args:
        box: the grid's index slices the arrays cover (outside it there is no brain).
        brain: boolean brain mask.
        grey, white, csf: tissue fractions in [0, 1], zero outside the brain.
        x_mm, y_mm, z_mm: FOV mm of the box's voxel centres along each axis.
    """

    box: tuple[slice, slice, slice]
    brain: np.ndarray
    grey: np.ndarray
    white: np.ndarray
    csf: np.ndarray
    x_mm: np.ndarray
    y_mm: np.ndarray
    z_mm: np.ndarray


def brain_box(placement: BrainPlacement, grid: SynthGrid) -> tuple[slice, slice, slice]:
    """Index box of ``grid`` that can hold any of the placed brain."""
    template = load_template()
    corners = np.array(np.meshgrid(*zip(template.brain_low, template.brain_high), indexing="ij")).reshape(3, -1).T
    fov = placement.to_fov(corners)
    low, high = fov.min(0) - _BOX_MARGIN_MM, fov.max(0) + _BOX_MARGIN_MM
    return tuple(slice(*grid.index_range(axis, low[axis], high[axis])) for axis in range(3))


def warp_tissues(placement: BrainPlacement, pushes: list[Push], grid: SynthGrid) -> Tissues:
    """Sample the template's tissue maps for one placed, deformed brain on ``grid``."""
    template = template_for(grid)
    box = brain_box(placement, grid)
    axes = [grid.axis_mm(axis, box[axis].start, box[axis].stop) for axis in range(3)]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    points = [np.broadcast_to(coordinate, tuple(len(a) for a in axes)).astype(np.float32) for coordinate in (x, y, z)]
    for push in pushes:
        offsets = [points[axis] - np.float32(push.centre[axis]) for axis in range(3)]
        distance2 = offsets[0] ** 2 + offsets[1] ** 2 + offsets[2] ** 2
        shrink = np.float32(push.strength) * np.exp(-distance2 / np.float32(push.reach**2))
        for axis in range(3):
            points[axis] -= offsets[axis] * shrink
    displacement = placement.displacement.sample(*axes)
    coordinates = np.empty((3, *points[0].shape), dtype=np.float32)
    for row in range(3):
        coordinates[row] = placement.centre[row] - template.origin[row] + displacement[row]
        for column in range(3):
            coordinates[row] += np.float32(placement.matrix[row, column]) * points[column]
        coordinates[row] /= np.float32(template.resolution)
    del points, displacement
    brain = ndimage.map_coordinates(template.brain, coordinates, order=1, mode="constant", cval=0.0) > 0.5
    grey = ndimage.map_coordinates(template.grey, coordinates, order=1, mode="constant", cval=0.0)
    white = ndimage.map_coordinates(template.white, coordinates, order=1, mode="constant", cval=0.0)
    grey *= brain
    white *= brain
    csf = np.clip(1.0 - grey - white, 0.0, 1.0) * brain
    return Tissues(box, brain, grey, white, csf, *axes)
