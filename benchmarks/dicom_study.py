"""A real case as a hospital's DICOM study, end to end: seconds per stage, and agreement with the NIfTI path.

A real BraTS case is wrapped in a synthetic skull and scalp (:func:`pipeline.synth.head.add_head`)
and written as a DICOM study of four MR series (the tests' writer, ``tests/dicom_writers.py``):
T1ce axial 1 mm (the reference), T1 sagittal 1 mm, T2 axial 1x1x3 mm, FLAIR on an oblique 1 mm grid,
files shuffled. ``predict`` then runs on it twice, as ``brats-pipeline predict --input STUDY
--dicom-seg`` does: with registration and skull stripping, and with both skipped. Reported per run:
the seconds of each stage from ``predictions.json`` (read, prepare, segment, native, dicom_seg),
the whole-tumour Dice of the labels on the T1ce series against the prediction on the original
NIfTI files (resampled onto that grid), and whether the DICOM-SEG reads back equal to the NIfTI.

The model is ``--model RUN_OR_BUNDLE``, or by default the tests' fixed hyperintensity rule
(``tests/prediction_cases.py``: deterministic, overlaps the real tumour; not a trained model).

    .venv/bin/python -m benchmarks.dicom_study [--case DIR] [--model RUN_DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from pipeline.inference.dicom_seg import read_dicom_seg
from pipeline.inference.inferers import VolumeInferer
from pipeline.inference.model import SegmentationModel, load_model
from pipeline.inference.predict import predict
from pipeline.synth.head import add_head
from pipeline.tasks.modalities import MODALITIES

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the DICOM writer and the rule model are the tests' own

from dicom_writers import reoriented, resampled, resampled_oblique, write_study  # noqa: E402
from prediction_cases import HyperintensityNetwork  # noqa: E402

DEFAULT_CASE = REPO.parent / "shared" / "data" / "real_brats" / "BraTS2021_00006"


def study_grids(case: Path) -> dict[str, sitk.Image]:
    """Each contrast of ``case`` with a skull, on the grid its series is written on."""
    heads = {c: add_head(sitk.ReadImage(str(case / f"{case.name}_{c}.nii.gz"), sitk.sitkFloat32), seed=1)[0] for c in MODALITIES}
    return {
        "t1": reoriented(heads["t1"], "sagittal"),
        "t1ce": heads["t1ce"],
        "t2": resampled(heads["t2"], (1.0, 1.0, 3.0)),
        "flair": resampled_oblique(heads["flair"], (6.0, -4.0, 3.0), (1.0, 1.0, 1.0)),
    }


def measure(case: Path, model_dir: Path | None) -> dict[str, Any]:
    model = load_model(model_dir) if model_dir else SegmentationModel(HyperintensityNetwork(), VolumeInferer("2d"), postprocessing={"keep_largest": ["WT", "TC", "ET"]})
    result: dict[str, Any] = {"case": case.name, "model": str(model_dir) if model_dir else "hyperintensity rule (tests/prediction_cases.py)"}
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        started = time.perf_counter()
        write_study(root / "study", study_grids(case))
        result["write_study_seconds"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        expected = predict(model, case, root / "nifti", progress=False).segmentations[case.name]
        result["nifti_path_seconds"] = round(time.perf_counter() - started, 1)
        for name, prepare in (("registration and skull strip", {}), ("both skipped", {"register": False, "skull_strip": False})):
            out = root / name.replace(" ", "_")
            started = time.perf_counter()
            summary = predict(model, root / "study", out, progress=False, dicom_seg=True, **prepare)
            total = time.perf_counter() - started
            [entry] = json.loads((out / "predictions.json").read_text())["cases"]
            native = sitk.ReadImage(str(summary.native["study"]["t1ce"]))
            reference = sitk.Resample(sitk.ReadImage(str(expected)), native, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
            ours, theirs = sitk.GetArrayFromImage(native) > 0, sitk.GetArrayFromImage(reference) > 0
            seg, _ = read_dicom_seg(summary.dicom_seg["study"]["t1ce"])
            result[name] = {
                "seconds": entry["seconds"],
                "total_seconds": round(total, 1),
                "whole_tumour_dice_vs_nifti_path": round(2.0 * np.count_nonzero(ours & theirs) / max(1, ours.sum() + theirs.sum()), 4),
                "dicom_seg_equals_nifti": bool(np.array_equal(sitk.GetArrayFromImage(seg) > 0, ours)),
            }
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=Path, default=DEFAULT_CASE, help="a BraTS 2017-2021 style case folder")
    parser.add_argument("--model", type=Path, default=None, help="a run or bundle folder (default: the tests' rule model)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    result = measure(args.case, args.model)
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
