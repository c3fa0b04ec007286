"""HD95 on real BraTS cases: the voxel-centre value the project used, its surface-element value, and the organisers' code.

For a few labelled real cases in ``../shared/data`` and perturbed copies of their ground truth
(no model needed), prints per region (WT, TC, ET) the HD95 (mm) of

* ``voxel-centre``: MONAI's ``compute_hausdorff_distance(percentile=95, spacing)``, what
  :func:`pipeline.evaluation.metrics.hd95` computed before it followed the BraTS 2023 evaluation;
* ``surface``: :func:`pipeline.evaluation.metrics.hd95` now (surface elements weighted by area);
* ``organisers``: DeepMind's ``surface_distance.compute_robust_hausdorff(compute_surface_distances(gt, pred, spacing), 95)``,
  as the BraTS 2023 evaluation script calls it (the ``surface-distance`` package of the dev extra).

    python -m benchmarks.hd95_definitions [--spacing 0.9 1.1 2.5]

``--spacing`` scores the same voxels as if they had that voxel size (default: the files' own, 1 mm).
Each volume is cropped to its tumour plus a margin wider than any perturbation, which changes no
distance.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance
from scipy import ndimage

from pipeline.tasks.labels import get_convention, region_masks
from pipeline.evaluation.metrics import hd95

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

#: Labelled real cases (folder under ``DATA``, case id), BraTS 2017-2021 labels.
CASES: tuple[tuple[str, str], ...] = (
    ("real_brats", "BraTS2021_00006"),
    ("real_brats", "Brats18_2013_2_1"),
    ("real_brats_train", "BraTS2021_00019"),
)


def ragged(mask: np.ndarray) -> np.ndarray:
    """A third of the voxels within two of the boundary flipped (seeded), then moved one voxel along the first axis."""
    band = ndimage.binary_dilation(mask, iterations=2) & ~ndimage.binary_erosion(mask, iterations=2)
    return np.roll(mask ^ (band & (np.random.default_rng(0).random(mask.shape) < 0.35)), 1, axis=0)


PERTURBATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "ragged": ragged,
    "eroded, shifted (0, 1, 1)": lambda mask: np.roll(ndimage.binary_erosion(mask), (1, 1), axis=(1, 2)),
    "dilated 2, shifted (2, 0, 0)": lambda mask: np.roll(ndimage.binary_dilation(mask, iterations=2), 2, axis=0),
}


def voxel_centre_hd95(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> float:
    """The project's former HD95: MONAI's, between boundary-voxel centres."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = compute_hausdorff_distance(
            torch.as_tensor(pred).float()[None, None], torch.as_tensor(truth).float()[None, None], percentile=95, spacing=list(spacing)
        )
    return float(value.item())


def organisers_hd95(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> float:
    """HD95 by DeepMind's surface-distance package, called as the BraTS 2023 evaluation script calls it."""
    import surface_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        distances = surface_distance.compute_surface_distances(truth, pred, tuple(spacing))
    return float(surface_distance.compute_robust_hausdorff(distances, 95))


def case_regions(seg_path: Path, margin: int = 6) -> tuple[dict[str, np.ndarray], tuple[float, ...]]:
    """WT, TC and ET of a ground truth (BraTS 2017-2021 labels), cropped to the tumour plus ``margin`` voxels, and the voxel size."""
    image = nib.load(seg_path)
    labels = get_convention("brats2017").to_internal(np.asarray(image.dataobj))
    box = tuple(slice(max(s.start - margin, 0), s.stop + margin) for s in ndimage.find_objects((labels > 0).astype(np.uint8))[0])
    masks = region_masks(labels[box])
    return {name: masks[name] for name in ("WT", "TC", "ET")}, tuple(float(z) for z in image.header.get_zooms()[:3])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spacing", type=float, nargs=3, default=None, help="score as if the voxels had this size (mm)")
    args = parser.parse_args(argv)
    print("| case | prediction | region | voxel-centre | surface | organisers | surface - organisers | surface - voxel-centre |")
    print("|---|---|---|---|---|---|---|---|")
    started, worst = time.perf_counter(), 0.0
    for folder, case in CASES:
        if not (DATA / folder / case).is_dir():
            print(f"| {case} | (not found under {DATA / folder}) |||||||")
            continue
        regions, file_spacing = case_regions(DATA / folder / case / f"{case}_seg.nii.gz")
        spacing = tuple(args.spacing) if args.spacing else file_spacing
        for perturbation, perturb in PERTURBATIONS.items():
            for region, truth in regions.items():
                pred = perturb(truth)
                old, new, reference = voxel_centre_hd95(pred, truth, spacing), hd95(pred, truth, spacing), organisers_hd95(pred, truth, spacing)
                worst = max(worst, abs(new - reference))
                print(f"| {case} | {perturbation} | {region} | {old:.4f} | {new:.4f} | {reference:.4f} | {new - reference:.1e} | {new - old:+.4f} |")
    print(f"\nvoxel size {args.spacing or 'of the files'}; largest |surface - organisers| {worst:.1e} mm; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
