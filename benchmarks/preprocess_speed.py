"""How much preprocessing a case costs compared with only reading its four .nii.gz files.

Prints, per case, the median wall-clock and CPU seconds of

* reading the four modality files (SimpleITK, the reader preprocessing uses; nibabel for comparison),
* ``prepare_case`` (read five files, reorient, crop, z-score, map labels; in memory),
* ``preprocess_datalist`` into a fresh cache (all of the above plus the atomic, fsynced writes),

and the ratio of the full preprocessing to the SimpleITK read. The target is a ratio of at most
about 2. Runs on the real cases in ``../shared/data/real_brats`` when present (``--data``), and
on a synthetic full-size case (240x240x155 int16, BraTS L-P-S header) written to a temporary
folder.

    .venv/bin/python benchmarks/preprocess_speed.py [--data DIR] [--repeats 5] [--no-synthetic]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from pipeline.datasets.records import CaseRecord
from pipeline.tasks.modalities import MODALITIES
from pipeline.preprocessing.prepare import prepare_case, preprocess_datalist

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_brats"


def timed(steps: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict[str, float]]:
    """Median wall-clock and CPU seconds of each step, the steps interleaved so that load from other
    processes on a shared machine falls on all of them alike (one warm-up round first)."""
    for function in steps.values():
        function()
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, function in steps.items():
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            function()
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: {"wall": statistics.median(wall[name]), "cpu": statistics.median(cpu[name])} for name in steps}


def real_records(data: Path) -> list[CaseRecord]:
    """The labelled BraTS 2017-2021 style cases under ``data``."""
    records = []
    for folder in sorted(p for p in data.glob("*") if p.is_dir()):
        images = tuple(folder / f"{folder.name}_{name}.nii.gz" for name in MODALITIES)
        label = folder / f"{folder.name}_seg.nii.gz"
        if all(p.is_file() for p in images) and label.is_file():
            records.append(CaseRecord(folder.name, images, label, "training"))
    return records


def synthetic_record(root: Path) -> CaseRecord:
    """A full-size BraTS-like case: smooth int16 anatomy inside an ellipsoidal brain, 0/1/2/4 tumour labels."""
    shape = (240, 240, 155)
    rng = np.random.default_rng(0)
    grid = np.indices(shape, dtype=np.float32)
    centre, radii = np.array([120, 125, 75]), np.array([70, 90, 65])
    distance = np.sqrt(sum(((grid[axis] - centre[axis]) / radii[axis]) ** 2 for axis in range(3)))
    brain = distance <= 1
    tumour = np.sqrt(sum(((grid[axis] - c) / 18.0) ** 2 for axis, c in enumerate((100, 140, 80))))
    affine = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    folder = root / "Synthetic_00000"
    folder.mkdir(parents=True)
    images = []
    for index, name in enumerate(MODALITIES):
        texture = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), 3) * 4000
        volume = (600 + 150 * index + texture + 80 * rng.normal(size=shape)).clip(1, None) * brain
        path = folder / f"{folder.name}_{name}.nii.gz"
        image = nib.Nifti1Image(volume.astype(np.int16), affine)
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        nib.save(image, path)
        images.append(path)
    label = np.select([tumour < 0.4, tumour < 0.7, tumour < 1.4], [1, 4, 2], 0).astype(np.uint8) * brain
    label_path = folder / f"{folder.name}_seg.nii.gz"
    nib.save(nib.Nifti1Image(label, affine), label_path)
    return CaseRecord(folder.name, tuple(images), label_path, "training")


def measure(record: CaseRecord, work: Path, repeats: int) -> dict[str, dict[str, float]]:
    """Median seconds of each step for one case."""
    datalist = work / f"{record.case_id}.json"
    root = record.images[0].parent.parent
    datalist.write_text(json.dumps({"data_root": str(root), "label_convention": "brats2017", "training": [{**record.to_entry(root), "fold": 0}], "validation": [], "test": []}))
    runs = iter(range(10**6))

    def read_sitk() -> None:
        for path in record.images:
            sitk.GetArrayFromImage(sitk.ReadImage(str(path)))

    def read_nibabel() -> None:
        for path in record.images:
            np.asarray(nib.load(path).dataobj)

    def into_cache() -> None:
        preprocess_datalist(datalist, work / f"cache{next(runs)}", progress=False)

    return timed(
        {
            "read 4 files (SimpleITK)": read_sitk,
            "read 4 files (nibabel)": read_nibabel,
            "prepare_case (in memory)": lambda: prepare_case(record),
            "preprocess into the cache": into_cache,
        },
        repeats,
    )


def report(name: str, figures: dict[str, dict[str, float]]) -> None:
    print(f"\n{name}")
    for step, seconds in figures.items():
        print(f"  {step:<28} wall {seconds['wall']:6.3f} s   cpu {seconds['cpu']:6.3f} s")
    full = figures["preprocess into the cache"]
    for reader in ("SimpleITK", "nibabel"):
        read = figures[f"read 4 files ({reader})"]
        print(f"  ratio preprocess / read ({reader}): wall {full['wall'] / read['wall']:.2f}   cpu {full['cpu'] / read['cpu']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of real BraTS case folders (skipped when absent)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-synthetic", action="store_true", help="skip the synthetic full-size case")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        cases = real_records(args.data) if args.data.is_dir() else []
        if not args.no_synthetic:
            cases.append(synthetic_record(work / "synthetic"))
        print(f"seconds per case: median of {args.repeats} interleaved repeats after a warm-up, one process")
        for record in cases:
            report(record.case_id, measure(record, work, args.repeats))


if __name__ == "__main__":
    main()
