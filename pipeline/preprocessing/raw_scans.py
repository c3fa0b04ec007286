"""Raw scans -> co-registered, isotropic, skull-stripped volumes that a BraTS-trained model can be given.

A hospital exports one series per contrast, each in its own orientation, spacing and field of
view, with skull. :func:`prepare_scans` does to such a case what BraTS did to its cases before
release:

1. the reference contrast (T1ce, as BraTS) is resampled (linear) to ``spacing`` mm isotropic over
   its own field of view, keeping its direction: the *prepared grid*;
2. every other contrast is registered rigidly to the reference (:func:`register_rigid`: SimpleITK
   Euler3D, Mattes mutual information, three resolutions) and resampled onto the prepared grid
   through its transform (linear);
3. the brain is extracted from the reference on the prepared grid (:func:`extract_brain`: deepbet,
   whose weights ship inside its wheel; nothing is downloaded) and the mask is applied to every
   contrast, so the background is exactly 0 as in BraTS files.

The intensity normalisation stays in :func:`pipeline.preprocessing.prepare.prepare_case` (z-score over the
non-zero voxels), which reads the folder :func:`write_prepared` writes like any BraTS case.
:func:`to_native` brings a label map on the prepared grid back onto a contrast's own grid.

Transforms follow SimpleITK's registration convention: a contrast's transform maps a point of the
reference's physical space to the same anatomy in that contrast's physical space (the ``.tfm``
files written load in 3D Slicer as the transform that moves the contrast onto the reference).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pipeline.core.errors import ConfigError, InputError
from pipeline.core.io import save_sitk
from pipeline.datasets.discovery import case_from_files, discover_case
from pipeline.datasets.records import NIFTI

__all__ = [
    "DEFAULT_REFERENCE",
    "PreparedScans",
    "extract_brain",
    "isotropic_grid",
    "prepare_case_files",
    "prepare_scans",
    "read_scan",
    "register_rigid",
    "resample_onto",
    "to_native",
    "write_prepared",
]

logger = logging.getLogger(__name__)

#: The contrast every other one is registered to (BraTS registers to T1ce).
DEFAULT_REFERENCE = "t1ce"

#: Multi-resolution schedule of :func:`register_rigid`: shrink factors and Gaussian sigmas (mm) per level.
SHRINK_FACTORS = (4, 2, 1)
SMOOTHING_SIGMAS_MM = (2.0, 1.0, 0.0)
#: Voxels of the reference sampled for the metric at each level (all of them where it has fewer).
METRIC_SAMPLES = 100_000


@dataclass(frozen=True)
class PreparedScans:
    """One case brought onto the reference's isotropic grid.

    Attributes:
        volumes: channel -> float32 volume on the isotropic grid of the reference contrast,
            brain-masked (0 outside the brain) when skull stripping ran.
        brain_mask: uint8 0/1 brain mask on the same grid, or None when skull stripping was skipped.
        transforms: channel -> rigid transform from the reference's physical space to that
            channel's (the identity for the reference, and for every channel when registration was skipped).
        reference: the reference channel, e.g. ``"t1ce"``.
    """

    volumes: dict[str, sitk.Image]
    brain_mask: sitk.Image | None
    transforms: dict[str, sitk.Transform]
    reference: str


# ----------------------------------------------------------------------------- grid and resampling


def isotropic_grid(image: sitk.Image, spacing: float = 1.0) -> sitk.Image:
    """``image`` resampled (linear, float32) to ``spacing`` mm isotropic over its own field of view, direction kept.

    The new grid's outer voxel edges lie where the old ones did (up to rounding to whole voxels).
    An image already on such a grid is only cast to float32, voxel for voxel.
    """
    old_spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    extent = old_spacing * np.asarray(image.GetSize())
    size = [max(1, round(e / spacing)) for e in extent]
    if np.allclose(old_spacing, spacing) and list(image.GetSize()) == size:
        return sitk.Cast(image, sitk.sitkFloat32)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    corner = np.asarray(image.GetOrigin()) - direction @ (old_spacing / 2)
    origin = corner + direction @ np.full(3, spacing / 2)
    return sitk.Resample(
        image,
        size,
        sitk.Transform(),
        sitk.sitkLinear,
        origin.tolist(),
        [float(spacing)] * 3,
        image.GetDirection(),
        0.0,
        sitk.sitkFloat32,
    )


def resample_onto(image: sitk.Image, grid: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    """``image`` resampled (linear, float32, 0 outside its field of view) onto ``grid``, whose physical space ``transform`` maps into ``image``'s.

    Where every voxel centre of ``grid`` lands on a voxel centre of ``image`` (the same grid, or its
    axes permuted or flipped: a sagittal series on an axial reference, registration skipped), the
    voxels are copied exactly (nearest neighbour): linear interpolation would return them only up
    to rounding, and turn the exact zeros of a skull-stripped background into tiny non-zeros.
    """
    interpolator = sitk.sitkNearestNeighbor if samples_voxel_centres(image, grid, transform) else sitk.sitkLinear
    return sitk.Resample(image, grid, transform, interpolator, 0.0, sitk.sitkFloat32)


#: Transforms that map lines to lines (an affine map), so four points decide where every voxel centre lands
#: (``Transform``: a default-constructed ``sitk.Transform()``, the identity).
_AFFINE_TRANSFORMS = frozenset({"Transform", "IdentityTransform", "TranslationTransform", "Euler3DTransform", "VersorRigid3DTransform",
                                "Similarity3DTransform", "ScaleTransform", "AffineTransform"})


def samples_voxel_centres(image: sitk.Image, grid: sitk.Image, transform: sitk.Transform, tolerance: float = 1e-4) -> bool:
    """Whether ``transform`` takes every voxel centre of ``grid`` to a voxel centre of ``image`` (within ``tolerance`` voxels)."""
    names = {transform.GetName()}
    if isinstance(transform, sitk.CompositeTransform):
        names = {transform.GetNthTransform(n).GetName() for n in range(transform.GetNumberOfTransforms())}
    if not names <= _AFFINE_TRANSFORMS:
        return False
    corners = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
    indices = np.array([image.TransformPhysicalPointToContinuousIndex(transform.TransformPoint(grid.TransformIndexToPhysicalPoint(c))) for c in corners])
    steps = indices[1:] - indices[0]  # the image index moved by one grid step along each axis
    return bool(np.allclose(indices, np.rint(indices), atol=tolerance) and np.allclose(steps, np.rint(steps), atol=tolerance))


def to_native(labels: sitk.Image, target: sitk.Image, transform: sitk.Transform | None = None) -> sitk.Image:
    """A label map on the prepared grid resampled (nearest neighbour) onto ``target``'s grid.

    Args:
        labels: labels on the prepared grid (the reference's physical space).
        target: the native scan whose grid the labels are wanted on (only its geometry is used).
        transform: the target contrast's transform from :attr:`PreparedScans.transforms` (reference
            space -> target space); None for the reference contrast itself.

    Returns:
        The labels, of ``labels``' pixel type, with ``target``'s size, origin, spacing and direction;
        0 where the target reaches beyond the prepared grid.
    """
    back = sitk.Transform() if transform is None else transform.GetInverse()
    return sitk.Resample(labels, target, back, sitk.sitkNearestNeighbor, 0, labels.GetPixelID())


# ----------------------------------------------------------------------------- registration


def _field_of_view_centre(image: sitk.Image) -> tuple[float, ...]:
    return image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])


def _initial_transform(fixed: sitk.Image, moving: sitk.Image, method: sitk.ImageRegistrationMethod) -> sitk.Euler3DTransform:
    """The better start, by the registration metric, of the scanner's own alignment and the centred (moments) initialiser.

    Series of one study share the scanner's patient coordinates, so the identity is usually close;
    when the patient moved or the series come from different sessions, aligning the centres of
    mass is. Which one holds is not known in advance, so both are scored (one metric evaluation each).
    """
    scanner = sitk.Euler3DTransform()
    scanner.SetCenter(_field_of_view_centre(fixed))
    centred = sitk.Euler3DTransform(
        sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS)
    )
    scores = []
    for candidate in (scanner, centred):
        method.SetInitialTransform(candidate, inPlace=False)
        scores.append(method.MetricEvaluate(fixed, moving))
    return scanner if scores[0] <= scores[1] else centred


def register_rigid(fixed: sitk.Image, moving: sitk.Image, seed: int = 1, name: str = "moving image") -> sitk.Euler3DTransform:
    """Rigid transform from ``fixed``'s physical space to ``moving``'s that best aligns their anatomy.

    SimpleITK's ``ImageRegistrationMethod``: Mattes mutual information (50 bins; at most
    :data:`METRIC_SAMPLES` voxels per level, drawn at random with ``seed`` so that runs repeat:
    SimpleITK takes a seed of 0 for "the wall clock"), regular-step gradient descent with scales
    from physical shifts, a three-level pyramid (:data:`SHRINK_FACTORS`,
    :data:`SMOOTHING_SIGMAS_MM`), starting from :func:`_initial_transform`. ``fixed`` is the one
    sampled, so the finer scan (the 1 mm reference) goes there.

    On a real BraTS case whose T1, T2 and FLAIR were moved by about 5 degrees and 4 mm and scanned
    at 1x1x5 mm, the transform found differs from the motion composed with the one found for the
    same scan without motion by 0.15-0.25 mm and at most 0.1 degrees over the brain (cropped to its
    box; ``benchmarks/raw_scans.py`` on the whole case); plain gradient descent stopped about 5 mm
    off. (The scans without motion themselves register 0.5-1.7 mm away from the identity: BraTS's
    own contrasts are not aligned more closely than that, or the 5 mm slices pull MI's optimum by
    as much; no ground truth tells the two apart.)

    Raises:
        InputError: naming ``name`` when the registration cannot run (e.g. no overlap of the images).
    """
    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    moving = sitk.Cast(moving, sitk.sitkFloat32)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    method.SetMetricSamplingStrategy(method.RANDOM)
    voxels = [np.prod([max(1, n // shrink) for n in fixed.GetSize()]) for shrink in SHRINK_FACTORS]
    method.SetMetricSamplingPercentagePerLevel([min(1.0, METRIC_SAMPLES / float(n)) for n in voxels], seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=200, relaxationFactor=0.5)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(SHRINK_FACTORS))
    method.SetSmoothingSigmasPerLevel(list(SMOOTHING_SIGMAS_MM))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    try:
        method.SetInitialTransform(_initial_transform(fixed, moving, method), inPlace=False)
        result = method.Execute(fixed, moving)
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise InputError(name, f"rigid registration failed ({reason})") from err
    transform = sitk.Euler3DTransform(sitk.CompositeTransform(result).GetBackTransform())
    logger.info("%s: registered in %d iterations, metric %.4f (%s)", name, method.GetOptimizerIteration(), method.GetMetricValue(),
                method.GetOptimizerStopConditionDescription())
    return transform


# ----------------------------------------------------------------------------- skull stripping


def _available_cores() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


@contextlib.contextmanager
def _torch_threads_within_cores() -> Iterator[None]:
    """Cap torch's intra-op threads at the cores this process may run on (a busy 2-core machine slows
    by several times with more threads than cores), and restore the setting afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, _available_cores())))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.cache
def _deepbet_extractor():
    """deepbet's ``BrainExtraction`` (both TorchScript models loaded once per process, from its wheel's data)."""
    try:
        from deepbet import BrainExtraction
    except ImportError as err:
        raise ConfigError(
            "skull stripping", "needs deepbet, which is not installed: pip install 'brats-pipeline[raw]' (or skip skull stripping)"
        ) from err
    return BrainExtraction()


def _to_nibabel(image: sitk.Image):
    """A float32 nibabel image of a 3D SimpleITK image: voxels in (i, j, k) order, LPS geometry turned into a RAS affine."""
    import nibabel as nib

    voxels = sitk.GetArrayFromImage(sitk.Cast(image, sitk.sitkFloat32)).transpose(2, 1, 0)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = lps_to_ras @ np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    affine[:3, 3] = lps_to_ras @ np.asarray(image.GetOrigin())
    return nib.Nifti1Image(voxels, affine)


def extract_brain(image: sitk.Image, name: str = "reference") -> sitk.Image:
    """Brain mask (uint8 0/1, ``image``'s grid) of a T1-weighted head scan, by deepbet 1.0 (Fisch et al. 2024).

    deepbet reorients the volume to RAS itself, finds the brain's box with a small network at
    128^3 and segments the box at 256^3, then keeps the largest component with its holes filled.
    Runs on the GPU when torch sees one, else on the CPU with at most one thread per available core.

    Raises:
        ConfigError: if deepbet is not installed.
        InputError: naming ``name`` if no brain is found.
    """
    extractor = _deepbet_extractor()
    start = time.perf_counter()
    with _torch_threads_within_cores():
        try:
            _, mask_image, _ = extractor.run(_to_nibabel(image))
        except AssertionError as err:  # deepbet asserts on a volume without enough foreground
            raise InputError(name, f"skull stripping found no brain ({err})") from err
    mask = np.asarray(mask_image.dataobj).astype(np.uint8).transpose(2, 1, 0)
    if not mask.any():
        raise InputError(name, "skull stripping found no brain")
    brain = sitk.GetImageFromArray(np.ascontiguousarray(mask))
    brain.CopyInformation(image)
    logger.info("%s: brain extracted in %.1f s (%.0f ml)", name, time.perf_counter() - start, mask.sum() * np.prod(image.GetSpacing()) / 1000)
    return brain


# ----------------------------------------------------------------------------- the case


def _check_inputs(volumes: Mapping[str, sitk.Image], reference: str, spacing: float) -> None:
    if reference not in volumes:
        raise ConfigError("reference", f"{reference!r} is not among the contrasts given ({', '.join(volumes) or 'none'})")
    if not np.isfinite(spacing) or spacing <= 0:
        raise ConfigError("spacing", f"must be a positive number of millimetres, got {spacing}")
    for channel, image in volumes.items():
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(
                channel, f"expected one 3D scalar volume, got a {image.GetDimension()}D image with {image.GetNumberOfComponentsPerPixel()} component(s)"
            )


def prepare_scans(
    volumes: Mapping[str, sitk.Image],
    reference: str = DEFAULT_REFERENCE,
    register: bool = True,
    skull_strip: bool = True,
    spacing: float = 1.0,
) -> PreparedScans:
    """Bring one case's contrasts onto the reference's isotropic grid: register, resample, skull-strip.

    Args:
        volumes: channel -> native scan (any orientation, spacing and field of view; skull allowed).
        reference: the channel the others are registered to and whose field of view the grid covers.
        register: register each other contrast rigidly to the reference; without it, the scanner's
            coordinates are taken as aligned (identity transforms), as for BraTS-style inputs.
        skull_strip: extract the brain from the reference (deepbet) and zero every contrast outside it.
        spacing: voxel size of the prepared grid in mm.

    Returns:
        The prepared volumes, mask and transforms, in ``volumes``' channel order.

    Raises:
        ConfigError: for a reference not among ``volumes``, a bad ``spacing``, or deepbet missing.
        InputError: for a volume that is not 3D scalar, a failed registration, or no brain found.
    """
    _check_inputs(volumes, reference, spacing)
    start = time.perf_counter()
    grid = isotropic_grid(volumes[reference], spacing)
    logger.info("%s: resampled to %g mm isotropic %s in %.1f s", reference, spacing, grid.GetSize(), time.perf_counter() - start)
    prepared: dict[str, sitk.Image] = {}
    transforms: dict[str, sitk.Transform] = {}
    for channel, image in volumes.items():
        if channel == reference:
            transforms[channel], prepared[channel] = sitk.Euler3DTransform(), grid
            continue
        transform = register_rigid(volumes[reference], image, name=channel) if register else sitk.Euler3DTransform()
        transforms[channel], prepared[channel] = transform, resample_onto(image, grid, transform)
    mask = None
    if skull_strip:
        mask = extract_brain(grid, name=reference)
        prepared = {channel: sitk.Mask(volume, mask) for channel, volume in prepared.items()}
    logger.info("prepared %d contrast(s) in %.1f s", len(prepared), time.perf_counter() - start)
    return PreparedScans(volumes=prepared, brain_mask=mask, transforms=transforms, reference=reference)


def write_prepared(prepared: PreparedScans, out_dir: Path) -> dict[str, Path]:
    """Write a prepared case as a BraTS-style case folder (each file atomically).

    ``out_dir`` (created if needed) receives ``<name>_<channel>.nii.gz`` per channel, where
    ``<name>`` is the folder's name, so ``predict --input out_dir`` reads it as a case;
    ``<name>_brain_mask.nii.gz`` when skull stripping ran (an earlier one is removed when it did not); and
    ``<name>_<channel>_to_<reference>.tfm`` per non-reference channel (ITK transform files:
    reference space -> channel space; in 3D Slicer, applying one to the channel's native scan
    aligns it with the reference).

    Returns:
        Each written file by key: the channel names, ``brain_mask``, and ``<channel>_transform``.
    """
    out_dir = Path(out_dir)
    name = out_dir.resolve().name
    written: dict[str, Path] = {}
    for channel, volume in prepared.volumes.items():
        written[channel] = save_sitk(out_dir / f"{name}_{channel}.nii.gz", volume)
    mask_path = out_dir / f"{name}_brain_mask.nii.gz"
    if prepared.brain_mask is not None:
        written["brain_mask"] = save_sitk(mask_path, prepared.brain_mask)
    else:
        mask_path.unlink(missing_ok=True)  # an earlier preparation's mask would pass for these unmasked volumes
    for channel, transform in prepared.transforms.items():
        if channel != prepared.reference:
            written[f"{channel}_transform"] = save_sitk(out_dir / f"{name}_{channel}_to_{prepared.reference}.tfm", transform)
    return written


def read_scan(path: Path) -> sitk.Image:
    """One native scan (NIfTI, NRRD, MetaImage: any format SimpleITK reads), or a one-line :class:`InputError`."""
    if not Path(path).is_file():
        raise InputError(path, "file not found")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise InputError(path, f"cannot read the scan ({reason})") from err


def prepare_case_files(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: Path,
    reference: str = DEFAULT_REFERENCE,
    register: bool = True,
    skull_strip: bool = True,
    spacing: float = 1.0,
) -> dict[str, Path]:
    """Prepare one case stored as a file per contrast, and write the prepared case folder (the ``prepare`` command).

    Args:
        source: a case folder whose files are named like a BraTS release's (any release; a folder
            not named after its case is recognised from its files), or the four contrast files
            in canonical order (T1, T1ce, T2, FLAIR).
        out_dir: the prepared case folder (:func:`write_prepared`); ``predict --input out_dir`` reads it.
        reference, register, skull_strip, spacing: as :func:`prepare_scans`.

    Returns:
        The files written, as :func:`write_prepared` names them.

    Raises:
        InputError: for an unrecognised case, a missing or unreadable file, or a case stored as one 4D file.
        ConfigError: for ``out_dir`` in the source's folder (source data is never written to), or as :func:`prepare_scans`.
    """
    is_folder = isinstance(source, (str, os.PathLike))
    record = discover_case(source) if is_folder else case_from_files(source)
    target = Path(out_dir).resolve()
    if target in {Path(path).resolve().parent for path in record.images} or (is_folder and Path(source).resolve() in target.parents):
        raise ConfigError(out_dir, "is the input case's folder or inside it; choose another folder (source data is never written to)")
    if record.layout != NIFTI or record.channel_indices is not None:
        raise InputError(record.images[0], "is not a volume per contrast; prepare reads one NIfTI file per contrast")
    volumes = {channel: read_scan(path) for channel, path in zip(record.channels, record.images)}
    return write_prepared(prepare_scans(volumes, reference=reference, register=register, skull_strip=skull_strip, spacing=spacing), out_dir)
