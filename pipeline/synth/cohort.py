"""A synthetic BraTS 2021-style cohort on disk: one folder per case, five NIfTI files each.

Case ``k`` of seed ``s`` is drawn from ``numpy.random.SeedSequence(s, spawn_key=(k,))``, the
``k``-th child of ``SeedSequence(s)``, so it is the same whatever the cohort size. The anatomy,
tumour and scanner are drawn first and in millimetres (the same at every grid size); the image
noise comes from a second stream, and a task's fluid pocket (:mod:`pipeline.synth.layouts`) from
a third. Files are written atomically, the segmentation last, and a case folder whose files open
with the requested shape is taken as done. Another task's layout (``task``) writes the same
brains and tumours under that release's names and labels.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from pipeline.core.errors import ConfigError, InputError
from pipeline.core.io import load_nifti, save_nifti
from pipeline.synth.anatomy import draw_placement, warp_tissues
from pipeline.synth.appearance import BrainVoxels, draw_appearance, render_modality
from pipeline.synth.grid import SynthGrid, get_grid
from pipeline.synth.layouts import DEFAULT_LAYOUT, get_layout
from pipeline.synth.tumour import draw_lesions, fluid_pocket, is_enhancing, lesion_maps
from pipeline.tasks.modalities import MODALITIES

__all__ = ["brats_image", "case_files", "case_id", "generate_cohort", "synthesize_case"]


def case_id(index: int, task: str = DEFAULT_LAYOUT.task) -> str:
    """The id of case ``index`` in ``task``'s layout (BraTS 2021-style by default)."""
    return get_layout(task).case_id(index)


def case_files(case_dir: Path, task: str = DEFAULT_LAYOUT.task) -> dict[str, Path]:
    """The files of the case folder ``case_dir`` in ``task``'s layout, by channel and ``seg`` (the order they are written in)."""
    return get_layout(task).files(case_dir)


def synthesize_case(seed: int, index: int, grid: SynthGrid, task: str = DEFAULT_LAYOUT.task) -> dict[str, np.ndarray]:
    """Voxels of case ``index`` of cohort ``seed`` on ``grid``, in ``task``'s layout.

    Returns:
        By channel (default ``t1``, ``t1ce``, ``t2``, ``flair``: int16) and ``seg`` (uint8, the
        layout's labels; default 0/1/2/4), arrays of ``grid.shape`` in L-P-S voxel order.
    """
    layout = get_layout(task)
    design_seed, noise_seed = np.random.SeedSequence(seed, spawn_key=(index,)).spawn(2)
    design = np.random.default_rng(design_seed)
    placement = draw_placement(design)
    lesions = draw_lesions(design, placement, enhancing=is_enhancing(seed, index))
    appearance = draw_appearance(design)
    tissues = warp_tissues(placement, [lesion.push for lesion in lesions], grid)
    maps = lesion_maps(lesions, tissues, ramp_mm=max(1.0, grid.spacing / 2))
    voxels = BrainVoxels.gather(tissues, maps)
    labels = layout.relabel(maps.labels)
    if layout.fluid is not None:
        fluid_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, 2)))  # a third stream: the others stay as they are
        fluid = layout.fluid
        pocket = fluid_pocket(fluid_rng, lesions[0], tissues, fluid.offset, fluid.ratio, ramp_mm=max(1.0, grid.spacing / 2), min_radius_mm=1.5 * grid.spacing)
        voxels = voxels.with_fluid(pocket[tissues.brain])
        labels[pocket >= 0.5] = fluid.label
    noise = np.random.default_rng(noise_seed)
    volumes: dict[str, np.ndarray] = {}
    for modality in MODALITIES:  # every modality is rendered, so the noise of each is the same in every layout
        rendered = render_modality(modality, appearance, tissues, voxels, noise)
        if modality in layout.suffixes:
            volumes[modality] = _embed(rendered, tissues.box, grid)
    volumes["seg"] = _embed(labels, tissues.box, grid)
    return volumes


def _embed(box_values: np.ndarray, box: tuple[slice, slice, slice], grid: SynthGrid) -> np.ndarray:
    """A zero volume of ``grid.shape`` holding ``box_values`` at ``box``."""
    volume = np.zeros(grid.shape, dtype=box_values.dtype)
    volume[box] = box_values
    return volume


def brats_image(voxels: np.ndarray, grid: SynthGrid) -> nib.Nifti1Image:
    """A NIfTI image with the BraTS header convention: L-P-S affine, qform and sform code 1, mm units."""
    image = nib.Nifti1Image(voxels, grid.affine)
    image.set_qform(grid.affine, code=1)
    image.set_sform(grid.affine, code=1)
    image.header.set_xyzt_units("mm")  # time units unknown, as in BraTS files
    image.set_data_dtype(voxels.dtype)
    return image


def is_complete(case_dir: Path, grid: SynthGrid, task: str = DEFAULT_LAYOUT.task) -> bool:
    """Whether all files of ``case_dir`` (``task``'s layout) open as NIfTI with ``grid``'s shape and the expected data types.

    Only headers are read: files are written atomically, so one that opens was written whole.

    Raises:
        ConfigError: if the case was generated at another size.
    """
    for suffix, path in case_files(case_dir, task).items():
        if not path.is_file():
            return False
        try:
            image = load_nifti(path)
        except InputError:
            return False
        if image.get_data_dtype() != (np.uint8 if suffix == "seg" else np.int16):
            return False
        shape = image.shape
        if tuple(shape) != grid.shape:
            raise ConfigError(path, f"holds a case of shape {tuple(shape)}, not size {grid.name!r} {grid.shape}; use another output folder")
    return True


def generate_cohort(
    out_dir: Path, cases: int, seed: int = 0, size: str = "small", progress: bool = True, task: str = DEFAULT_LAYOUT.task
) -> list[Path]:
    """Write (or complete) a synthetic BraTS 2021-style cohort (or another task's release, ``task``).

    Args:
        out_dir: folder that receives ``BraTS2021_NNNNN/BraTS2021_NNNNN_{t1,t1ce,t2,flair,seg}.nii.gz``.
        cases: number of cases (ids ``BraTS2021_00000`` upwards).
        seed: cohort seed (a non-negative integer); the same seed gives identical files.
        size: ``full`` (240x240x155 at 1 mm), ``small`` (96x96x62 at 2.5 mm) or ``tiny`` (48x48x32 at 5 mm).
        progress: show a progress bar.
        task: a built-in task with a layout in :data:`pipeline.synth.layouts.LAYOUTS` (its release's
            case names, files and labels).

    Returns:
        The case folders, in id order (finished ones found on disk are kept, not rewritten).

    Raises:
        ConfigError: for a bad ``cases``, ``seed`` or ``size``, or an existing case of another size.
    """
    grid = get_grid(size)
    layout = get_layout(task)
    if not 1 <= cases <= 100_000:
        raise ConfigError("cases", f"must be between 1 and 100000, got {cases}")
    if seed < 0:
        raise ConfigError("seed", f"must be a non-negative integer, got {seed}")
    out_dir = Path(out_dir)
    folders = [out_dir / layout.case_id(index) for index in range(cases)]
    for index, folder in enumerate(tqdm(folders, desc=f"synth ({size})", unit="case", disable=not progress)):
        if is_complete(folder, grid, task):
            continue
        volumes = synthesize_case(seed, index, grid, task)
        for key, path in layout.files(folder).items():
            save_nifti(path, brats_image(volumes[key], grid))
    return folders
