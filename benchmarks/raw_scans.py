"""Preparing raw scans on a real case: time per stage, the registration error, skull stripping's Dice.

A real BraTS case is turned into what a hospital exports: T1, T2 and FLAIR each moved by a known
rigid motion (:data:`MOTIONS`, about 5 degrees and 4 mm) and scanned as 5 mm axial slices
(:func:`simulate_series`: 1x1x5 mm over the same field of view, each slice the mean over its
thickness); T1ce, the reference, is left as it is. Then each stage of
:mod:`pipeline.preprocessing.raw_scans` is timed on it:

* ``grid``: the reference resampled to 1 mm isotropic (:func:`pipeline.preprocessing.raw_scans.isotropic_grid`);
* ``register <channel>``: :func:`pipeline.preprocessing.raw_scans.register_rigid`, with the error of the recovered
  transform (the largest displacement over the corners of the brain's bounding box, and the angle
  of the residual rotation; :func:`registration_error`) against the motion (``error``), and against
  the motion composed with the transform found for the same scan without motion (``motion_error``:
  BraTS's own contrasts are only aligned to about a millimetre, ``unmoved_from_identity``);
* ``resample <channel>``: onto the reference grid through the recovered transform;
* ``skull strip``: :func:`pipeline.preprocessing.raw_scans.extract_brain` (deepbet) on the reference wrapped in
  a synthetic skull and scalp (:func:`pipeline.synth.head.add_head`), with its mask's Dice against
  the case's own brain mask (BraTS non-zero voxels) and both volumes.

With ``--model RUN_OR_BUNDLE`` it also prepares the case whole (:func:`pipeline.preprocessing.raw_scans.prepare_scans`,
:func:`pipeline.preprocessing.raw_scans.write_prepared`), predicts it, and reports the whole-tumour Dice against
the prediction on the original case. Timings are wall-clock seconds of one run each.

    .venv/bin/python -m benchmarks.raw_scans [--case DIR] [--model RUN_DIR] [--json PATH]

Recorded: ``benchmarks/results/raw_scans-*.md`` (and ``.json``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from benchmarks.machine import describe_machine, write_results
from pipeline.preprocessing.raw_scans import (
    DEFAULT_REFERENCE,
    extract_brain,
    isotropic_grid,
    prepare_scans,
    register_rigid,
    resample_onto,
    to_native,
    write_prepared,
)
from pipeline.synth.head import add_head
from pipeline.tasks.modalities import MODALITIES

DEFAULT_CASE = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_brats" / "BraTS2021_00006"

#: The rigid motion (rotation about x, y, z in degrees; translation in mm) of each moved contrast.
MOTIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "t1": ((5.0, 0.0, 0.0), (4.0, 0.0, 0.0)),
    "t2": ((0.0, -5.0, 0.0), (0.0, 4.0, 0.0)),
    "flair": ((3.0, -3.0, 2.0), (2.0, -3.0, 2.0)),
}

#: Voxel size (mm) of the simulated series: 5 mm axial slices.
SERIES_SPACING = (1.0, 1.0, 5.0)


def rigid_motion(image: sitk.Image, degrees: Sequence[float], shift_mm: Sequence[float]) -> sitk.Euler3DTransform:
    """The rigid motion about the centre of ``image``'s field of view (reference space -> moved contrast's space)."""
    motion = sitk.Euler3DTransform()
    motion.SetCenter(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))
    motion.SetRotation(*np.deg2rad(degrees).tolist())
    motion.SetTranslation(list(map(float, shift_mm)))
    return motion


def simulate_series(image: sitk.Image, motion: sitk.Transform, spacing: Sequence[float] = SERIES_SPACING) -> sitk.Image:
    """``image`` as a scanner would record it after the patient moved by ``motion``, with voxels of ``spacing`` mm.

    The new grid covers ``image``'s field of view with its direction; along each axis coarser than
    the original, every voxel is the mean over its thickness (a Gaussian of that full width at half
    maximum), not one point sample.
    """
    old_spacing = np.asarray(image.GetSpacing())
    spacing = np.asarray(spacing, dtype=np.float64)
    blurred = sitk.Cast(image, sitk.sitkFloat32)
    for axis in np.flatnonzero(spacing > old_spacing * 1.5):
        blurred = sitk.RecursiveGaussian(blurred, sigma=float(spacing[axis] / 2.355), direction=int(axis))
    size = [max(1, round(e)) for e in old_spacing * np.asarray(image.GetSize()) / spacing]
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    corner = np.asarray(image.GetOrigin()) - direction @ (old_spacing / 2)
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing(spacing.tolist())
    grid.SetDirection(image.GetDirection())
    grid.SetOrigin((corner + direction @ (spacing / 2)).tolist())
    return sitk.Resample(blurred, grid, motion.GetInverse(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def brain_box_corners(image: sitk.Image) -> list[tuple[float, ...]]:
    """Physical points of the 8 corners of the bounding box of ``image``'s non-zero voxels."""
    statistics = sitk.LabelShapeStatisticsImageFilter()
    statistics.Execute(sitk.Cast(image != 0, sitk.sitkUInt8))
    box = statistics.GetBoundingBox(1)
    start, size = box[:3], box[3:]
    corners = [[start[a] + (size[a] - 1) * ((k >> a) & 1) for a in range(3)] for k in range(8)]
    return [image.TransformIndexToPhysicalPoint(corner) for corner in corners]


def compose(outer: sitk.Transform, inner: sitk.Transform) -> sitk.AffineTransform:
    """The transform ``p -> outer(inner(p))`` of two rigid (or affine) transforms, as one affine transform."""
    matrix = np.asarray(outer.GetMatrix()).reshape(3, 3) @ np.asarray(inner.GetMatrix()).reshape(3, 3)
    return sitk.AffineTransform(matrix.ravel().tolist(), outer.TransformPoint(inner.TransformPoint((0.0, 0.0, 0.0))), (0.0, 0.0, 0.0))


def registration_error(found: sitk.Transform, truth: sitk.Transform, points: Sequence[Sequence[float]]) -> tuple[float, float]:
    """The largest distance (mm) between where ``found`` and ``truth`` map ``points``, and the angle (degrees) of the rotation between them."""
    distance = max(float(np.linalg.norm(np.subtract(found.TransformPoint(p), truth.TransformPoint(p)))) for p in points)
    residual = np.asarray(found.GetMatrix()).reshape(3, 3).T @ np.asarray(truth.GetMatrix()).reshape(3, 3)
    angle = float(np.degrees(np.arccos(np.clip((np.trace(residual) - 1) / 2, -1.0, 1.0))))
    return distance, angle


def read_case(case_dir: Path) -> dict[str, sitk.Image]:
    """The four modalities of a BraTS 2017-2021 style case folder, by canonical channel name."""
    return {channel: sitk.ReadImage(str(case_dir / f"{case_dir.name}_{channel}.nii.gz")) for channel in MODALITIES}


def known_motions(reference: sitk.Image, scale: float = 1.0) -> dict[str, sitk.Euler3DTransform]:
    """:data:`MOTIONS` about the centre of ``reference``'s field of view, each angle and shift times ``scale`` (0: no motion)."""
    return {channel: rigid_motion(reference, np.multiply(degrees, scale), np.multiply(shift, scale)) for channel, (degrees, shift) in MOTIONS.items()}


def scanned(case: dict[str, sitk.Image], motions: dict[str, sitk.Transform]) -> dict[str, sitk.Image]:
    """The case as raw scans: each contrast of ``motions`` moved by its motion and scanned at :data:`SERIES_SPACING`, the others as they are."""
    return {channel: simulate_series(image, motions[channel]) if channel in motions else image for channel, image in case.items()}


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def _dice(first: np.ndarray, second: np.ndarray) -> float:
    """Dice of the non-zero voxels of two arrays of one shape."""
    a, b = first > 0, second > 0
    return float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))


def measure(case_dir: Path, model_dir: Path | None = None) -> dict:
    """Every figure the module docstring lists, for one case folder."""
    original = read_case(case_dir)
    reference = original[DEFAULT_REFERENCE]
    motions, still = known_motions(reference), known_motions(reference, scale=0.0)
    scans, unmoved = scanned(original, motions), scanned(original, still)
    corners = brain_box_corners(reference)
    rows: dict[str, dict[str, float]] = {}
    grid, seconds = _timed(isotropic_grid, reference, 1.0)
    rows["grid"] = {"seconds": seconds}
    for channel, motion in motions.items():
        found, seconds = _timed(register_rigid, reference, scans[channel], name=channel)
        baseline = register_rigid(reference, unmoved[channel], name=channel)
        error_mm, error_degrees = registration_error(found, motion, corners)
        recovery_mm, recovery_degrees = registration_error(found, compose(motion, baseline), corners)
        rows[f"register {channel}"] = {
            "seconds": seconds,
            "error_mm": error_mm,
            "error_degrees": error_degrees,
            "motion_error_mm": recovery_mm,
            "motion_error_degrees": recovery_degrees,
            "unmoved_from_identity_mm": registration_error(baseline, still[channel], corners)[0],
        }
        _, seconds = _timed(resample_onto, scans[channel], grid, found)
        rows[f"resample {channel}"] = {"seconds": seconds}
    head, brain = add_head(reference)
    mask, seconds = _timed(extract_brain, head)
    dice = _dice(sitk.GetArrayViewFromImage(mask), sitk.GetArrayViewFromImage(brain))
    volume = {name: float(sitk.GetArrayViewFromImage(m).sum() * np.prod(m.GetSpacing()) / 1000) for name, m in (("mask", mask), ("brain", brain))}
    rows["skull strip"] = {"seconds": seconds, "dice": dice, "mask_ml": volume["mask"], "brain_ml": volume["brain"]}
    result = {"case": case_dir.name, "stages": rows}
    if model_dir is not None:
        result["prediction"] = prediction_agreement(case_dir, scans, model_dir)
    return result


def prediction_agreement(case_dir: Path, scans: dict[str, sitk.Image], model_dir: Path) -> dict[str, float]:
    """Whole-tumour Dice of the prediction on the prepared raw scans (back on T1ce's native grid) against the one on the original case."""
    from pipeline.inference.model import load_model

    model = load_model(model_dir)
    original_labels = model.predict_case(case_dir).labels
    prepared, seconds = _timed(prepare_scans, scans)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / case_dir.name
        write_prepared(prepared, folder)
        labels = model.predict_case(folder).labels  # on the prepared grid, (i, j, k) voxel order
    on_grid = sitk.GetImageFromArray(np.ascontiguousarray(labels.transpose(2, 1, 0)))
    on_grid.CopyInformation(prepared.volumes[prepared.reference])
    native = to_native(on_grid, scans[prepared.reference])  # the reference: its own transform is the identity
    native_labels = sitk.GetArrayFromImage(native).transpose(2, 1, 0)
    return {"model": str(model_dir), "prepare_seconds": seconds, "whole_tumour_dice": _dice(native_labels, original_labels)}


def markdown_table(result: dict) -> str:
    """The figures of :func:`measure` as a markdown table, with the machine and its load."""
    machine = result.get("machine", {})
    lines = [
        f"# Raw scans prepared: {result['case']}",
        "",
        (
            "T1, T2 and FLAIR moved (about 5 degrees, 4 mm) and scanned at 1x1x5 mm; T1ce the reference. "
            f"{machine.get('cpu_model', '?')}, {machine.get('cpu_cores', '?')} cores, torch threads {machine.get('torch_threads', '?')}; "
            f"load average {result.get('load_average', ['?', '?'])[0]} at the start, {result.get('load_average', ['?', '?'])[-1]} at the end."
        ),
        "",
        "| stage | seconds | quality |",
        "|---|---:|---|",
    ]
    for stage, row in result["stages"].items():
        quality = ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "seconds")
        lines.append(f"| {stage} | {row['seconds']:.1f} | {quality} |")
    if "prediction" in result:
        prediction = result["prediction"]
        lines += [
            "",
            (
                f"prepare_scans on the whole case (registration of three contrasts, resampling, skull strip): {prediction['prepare_seconds']:.1f} s; "
                f"whole-tumour Dice of the prediction on the prepared case against the prediction on the original case ({prediction['model']}): "
                f"{prediction['whole_tumour_dice']:.3f}"
            ),
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=Path, default=DEFAULT_CASE, help="a BraTS 2017-2021 style case folder")
    parser.add_argument("--model", type=Path, default=None, help="a run or bundle folder: also compare predictions")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here (and the table beside it, .md)")
    args = parser.parse_args(argv)
    start_load = os.getloadavg()[0]
    result = measure(args.case, args.model)
    result["machine"] = describe_machine()
    result["load_average"] = [round(start_load, 2), round(os.getloadavg()[0], 2)]
    table = markdown_table(result)
    if args.json is not None:
        write_results(result, args.json, table)
    else:
        print(table)
    return result


if __name__ == "__main__":
    main()
