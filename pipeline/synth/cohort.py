"""A synthetic BraTS 2021-style cohort on disk: one folder per case, five NIfTI files each.

Case ``k`` of seed ``s`` is drawn from ``numpy.random.SeedSequence(s, spawn_key=(k,))``, the
``k``-th child of ``SeedSequence(s)``, so it is the same whatever the cohort size. The anatomy,
tumour and scanner are drawn first and in millimetres (the same at every grid size); the image
noise comes from a second stream. Files are written atomically, the segmentation last, and a
case folder whose five files open with the requested shape is taken as done.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from pipeline.errors import ConfigError, InputError
from pipeline.io import load_nifti, save_nifti
from pipeline.modalities import MODALITIES
from pipeline.synth.anatomy import draw_placement, warp_tissues
from pipeline.synth.appearance import BrainVoxels, draw_appearance, render_modality
from pipeline.synth.grid import SynthGrid, get_grid
from pipeline.synth.tumour import draw_lesions, is_enhancing, lesion_maps

__all__ = ["brats_image", "case_files", "case_id", "generate_cohort", "synthesize_case"]


#: Case ids: BraTS2021_00000, BraTS2021_00001, ...
CASE_ID_FORMAT = "BraTS2021_{:05d}"
#: File suffixes of a case, the segmentation last (the order they are written in).
FILE_SUFFIXES: tuple[str, ...] = (*MODALITIES, "seg")


def case_id(index: int) -> str:
    """The BraTS 2021-style id of case ``index``."""
    return CASE_ID_FORMAT.format(index)


def case_files(case_dir: Path) -> dict[str, Path]:
    """The five files of the case folder ``case_dir``, by suffix."""
    return {suffix: case_dir / f"{case_dir.name}_{suffix}.nii.gz" for suffix in FILE_SUFFIXES}


def synthesize_case(seed: int, index: int, grid: SynthGrid) -> dict[str, np.ndarray]:
    """Voxels of case ``index`` of cohort ``seed`` on ``grid``.

    Returns:
        By suffix (``t1``, ``t1ce``, ``t2``, ``flair``: int16; ``seg``: uint8 labels 0/1/2/4),
        arrays of ``grid.shape`` in L-P-S voxel order.
    """
    design_seed, noise_seed = np.random.SeedSequence(seed, spawn_key=(index,)).spawn(2)
    design = np.random.default_rng(design_seed)
    placement = draw_placement(design)
    lesions = draw_lesions(design, placement, enhancing=is_enhancing(seed, index))
    appearance = draw_appearance(design)
    tissues = warp_tissues(placement, [lesion.push for lesion in lesions], grid)
    maps = lesion_maps(lesions, tissues, ramp_mm=max(1.0, grid.spacing / 2))
    voxels = BrainVoxels.gather(tissues, maps)
    noise = np.random.default_rng(noise_seed)
    volumes: dict[str, np.ndarray] = {}
    for modality in MODALITIES:
        volumes[modality] = _embed(render_modality(modality, appearance, tissues, voxels, noise), tissues.box, grid)
    volumes["seg"] = _embed(maps.labels, tissues.box, grid)
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


def is_complete(case_dir: Path, grid: SynthGrid) -> bool:
    """Whether all five files of ``case_dir`` open as NIfTI with ``grid``'s shape and the expected data types.

    Only headers are read: files are written atomically, so one that opens was written whole.

    Raises:
        ConfigError: if the case was generated at another size.
    """
    for suffix, path in case_files(case_dir).items():
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


def generate_cohort(out_dir: Path, cases: int, seed: int = 0, size: str = "small", progress: bool = True) -> list[Path]:
    """Write (or complete) a synthetic BraTS 2021-style cohort.

    Args:
        out_dir: folder that receives ``BraTS2021_NNNNN/BraTS2021_NNNNN_{t1,t1ce,t2,flair,seg}.nii.gz``.
        cases: number of cases (ids ``BraTS2021_00000`` upwards).
        seed: cohort seed (a non-negative integer); the same seed gives identical files.
        size: ``full`` (240x240x155 at 1 mm), ``small`` (96x96x62 at 2.5 mm) or ``tiny`` (48x48x32 at 5 mm).
        progress: show a progress bar.

    Returns:
        The case folders, in id order (finished ones found on disk are kept, not rewritten).

    Raises:
        ConfigError: for a bad ``cases``, ``seed`` or ``size``, or an existing case of another size.
    """
    grid = get_grid(size)
    if not 1 <= cases <= 100_000:
        raise ConfigError("cases", f"must be between 1 and 100000, got {cases}")
    if seed < 0:
        raise ConfigError("seed", f"must be a non-negative integer, got {seed}")
    out_dir = Path(out_dir)
    folders = [out_dir / case_id(index) for index in range(cases)]
    for index, folder in enumerate(tqdm(folders, desc=f"synth ({size})", unit="case", disable=not progress)):
        if is_complete(folder, grid):
            continue
        volumes = synthesize_case(seed, index, grid)
        files = case_files(folder)
        for suffix in FILE_SUFFIXES:
            save_nifti(files[suffix], brats_image(volumes[suffix], grid))
    return folders
