"""The ``synth``, ``datalist``, ``preprocess`` and ``prepare`` commands: the data before training or prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pipeline.cli.options import (
    EXISTING,
    PATH,
    SIZES,
    ChoiceOf,
    Constant,
    TaskOption,
    channel_list,
    reports_errors,
    shard_option,
)
from pipeline.core.errors import ConfigError

__all__ = ["datalist", "prepare", "preprocess", "synth"]


@click.command()
@click.option("--out", default=Path("data/synthetic"), show_default=True, type=PATH, help="Folder for the cohort (created if needed).")
@click.option("--cases", default=24, show_default=True, type=click.IntRange(min=1, max=100_000), help="Number of cases.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Cohort seed: the same seed gives identical files.")
@click.option(
    "--size",
    default="small",
    show_default=True,
    type=SIZES,
    help="full: 240x240x155 at 1 mm (like BraTS); small: 96x96x62 at 2.5 mm; tiny: 48x48x32 at 5 mm.",
)
@click.option(
    "--task",
    default="brats-glioma",
    show_default=True,
    type=ChoiceOf(Constant("pipeline.synth.layouts", "LAYOUTS")),
    help="Layout and labels of the cohort: brats-glioma and whole-tumour: BraTS 2021; brats2024-post-treatment: "
    "BraTS 2023 naming, a resection cavity (4); brats2024-ped: BraTS-PED naming, 1 ET, 2 NETC, 3 CC, 4 ED; "
    "meningioma-rt: BraTS-MEN-RT naming, T1ce and the GTV only.",
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@reports_errors
def synth(out: Path, cases: int, seed: int, size: str, task: str, no_progress: bool) -> None:
    """Generate a synthetic BraTS 2021-style cohort (the default data for the demo and tests).

    Writes OUT/BraTS2021_NNNNN/BraTS2021_NNNNN_{t1,t1ce,t2,flair,seg}.nii.gz: MNI152 brains with
    a glioma each (labels 0/1/2/4), int16 images with the BraTS header (L-P-S, 1 mm at full size);
    --task writes another release's layout and labels. Case k depends only on the seed and k;
    finished cases are skipped, so a rerun completes a cohort.
    """
    from pipeline.synth import generate_cohort

    folders = generate_cohort(out, cases=cases, seed=seed, size=size, progress=not no_progress, task=task)
    click.echo(f"{len(folders)} synthetic cases ({size}, seed {seed}, {task}) in {out}")


@click.command()
@click.option("--datalist", required=True, type=EXISTING, help="Data list JSON (from `brats-pipeline datalist`).")
@click.option("--cache", "cache_dir", required=True, type=PATH, help="Cache folder to build or complete.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Cases processed in parallel.")
@click.option(
    "--splits",
    multiple=True,
    type=ChoiceOf(Constant("pipeline.datasets.datalist", "SPLITS")),
    help="Data-list splits to preprocess (repeat the option); default: all of them.",
)
@click.option("--margin", default=Constant("pipeline.preprocessing.prepare", "DEFAULT_MARGIN"), show_default=True, type=click.IntRange(min=0), help="Voxels kept around the brain box.")
@click.option("--allow-resection-cavity", is_flag=True, help="Map the BraTS 2024 resection-cavity label 4 to background instead of refusing it.")
@shard_option("several machines fill one cache, then a run without --shard writes cache.json (and builds any case left).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@reports_errors
def preprocess(
    datalist: Path,
    cache_dir: Path,
    workers: int,
    splits: tuple[str, ...],
    margin: int,
    allow_resection_cavity: bool,
    shard: Any,
    no_progress: bool,
) -> None:
    """Build the memory-mappable training cache from a data list.

    Each case is reoriented to RAS (no resampling), cropped to the brain, z-scored per channel
    and stored as CACHE/<case>/{image.npy,label.npy,meta.json}, with the data list's task's
    channels and labels. Finished cases are skipped, so an interrupted run resumes.
    With --shard K/N only that shard's cases are built and cache.json is left alone.
    """
    from pipeline.preprocessing.prepare import preprocess_datalist

    summary = preprocess_datalist(
        datalist,
        cache_dir,
        workers=workers,
        progress=not no_progress,
        splits=splits or None,
        margin=margin,
        allow_resection_cavity=allow_resection_cavity,
        shard=shard,
    )
    click.echo(str(summary))


@click.command()
@click.option("--data-root", required=True, type=PATH, help="Release folder: BraTS 2017-2021, 2023+, MSD Task01, or a mix.")
@click.option("--out", required=True, type=PATH, help="Data list JSON to write.")
@click.option("--folds", default=5, show_default=True, type=click.IntRange(min=1), help="Cross-validation folds.")
@click.option("--test-fraction", default=0.2, show_default=True, type=click.FloatRange(0, 1, max_open=True), help="Share of labelled cases held out as the test set.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the patient shuffle.")
@click.option("--skip-bad", is_flag=True, help="Leave bad cases out (listed as warnings) instead of failing.")
@click.option(
    "--map-resection-cavity", "--allow-resection-cavity", is_flag=True, help="Accept BraTS 2024 label 4 (resection cavity), mapped to background."
)
@click.option(
    "--task",
    cls=TaskOption,
    default=None,
    metavar="NAME|FILE",
    help="What goes in and comes out: a built-in task or a task file (.json/.yaml); stored in the data list. "
    "Default: kaggle-lgg for Kaggle LGG patient folders, image-mask-2d (or image-mask-2d-rgb for RGB images) for 2D "
    "image/mask folders, else brats-glioma. BraTS-PED labels are read only with --task brats2024-ped.",
)
@click.option(
    "--channels",
    callback=channel_list,
    metavar="flair[,t2...]",
    help="Read only these of the task's channels, in this order (e.g. --task whole-tumour --channels flair).",
)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Processes validating cases in parallel.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@reports_errors
def datalist(
    data_root: Path,
    out: Path,
    folds: int,
    test_fraction: float,
    seed: int,
    skip_bad: bool,
    map_resection_cavity: bool,
    task: str | None,
    channels: tuple[str, ...] | None,
    workers: int,
    no_progress: bool,
) -> None:
    """Discover and validate every case of a release and write patient-level folds.

    Every file is read and checked first; without --skip-bad any bad case stops the command
    and nothing is written. Each case needs the files of the task's channels, and its labels
    must be the task's classes. Paths in the JSON are relative to the data root. Besides the
    BraTS and MSD layouts, a folder of Kaggle LGG patients (TIFF slices, one case per patient)
    and a folder of 2D images with masks (images/ + masks/, or NAME.png + NAME_mask.png; one
    case per image) are recognised.
    """
    from pipeline.datasets.datalist import SPLITS, build_datalist

    payload = build_datalist(
        data_root,
        out,
        folds=folds,
        test_fraction=test_fraction,
        seed=seed,
        skip_bad=skip_bad,
        allow_resection_cavity=map_resection_cavity,
        progress=not no_progress,
        workers=workers,
        task=task,
        channels=channels,
    )
    counts = ", ".join(f"{len(payload[split])} {split}" for split in SPLITS)
    click.echo(f"{out}: {counts} ({payload['release']}, {payload['num_folds']} folds, task {payload['task']['name']})")


@click.command()
@click.option(
    "--input",
    "inputs",
    required=True,
    multiple=True,
    type=EXISTING,
    help="A case folder (one NIfTI file per contrast, named like a BraTS release's files), or its four contrast files "
    "in canonical order T1, T1ce, T2, FLAIR (repeat the option).",
)
@click.option("--out", required=True, type=PATH, help="Folder for the prepared case (created if needed); `predict --input OUT` reads it.")
@click.option(
    "--reference",
    default=Constant("pipeline.preprocessing.raw_scans", "DEFAULT_REFERENCE"),
    show_default=True,
    type=ChoiceOf(Constant("pipeline.tasks.modalities", "MODALITIES")),
    help="The contrast the others are registered to; the prepared grid covers its field of view.",
)
@click.option("--spacing", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Voxel size of the prepared grid (mm, isotropic).")
@click.option("--skip-registration", is_flag=True, help="Take the contrasts as co-registered already (identity transforms; each is still resampled onto the grid).")
@click.option("--skip-skull-strip", is_flag=True, help="Take the scans as skull-stripped already (no brain mask is made or applied).")
@reports_errors
def prepare(inputs: tuple[Path, ...], out: Path, reference: str, spacing: float, skip_registration: bool, skip_skull_strip: bool) -> None:
    """Prepare raw scans for a BraTS-trained model: register to T1ce, resample to 1 mm, skull-strip.

    Each contrast is registered rigidly to the reference (SimpleITK, Mattes mutual information)
    and resampled onto the reference's field of view at --spacing mm; the brain is extracted from
    the reference (deepbet, from the `raw` extra; nothing is downloaded) and every contrast is
    zeroed outside it. Writes OUT/<name>_{t1,t1ce,t2,flair}.nii.gz (<name>: OUT's folder name),
    OUT/<name>_brain_mask.nii.gz and one OUT/<name>_<contrast>_to_<reference>.tfm per registered
    contrast (ITK transforms, for checking in 3D Slicer). The source files are never written to.
    """
    from pipeline.preprocessing.raw_scans import prepare_case_files

    if len(inputs) not in (1, 4):
        raise ConfigError("--input", f"give one case folder or the four contrast files (T1, T1ce, T2, FLAIR), got {len(inputs)} paths")
    source = inputs[0] if len(inputs) == 1 else list(inputs)
    written = prepare_case_files(source, out, reference=reference, register=not skip_registration, skull_strip=not skip_skull_strip, spacing=spacing)
    steps = ", ".join(step for step, skipped in (("registered", skip_registration), ("skull-stripped", skip_skull_strip)) if not skipped) or "resampled only"
    click.echo(f"{out}: {len(written)} files ({steps}, {spacing:g} mm on the {reference} grid); next: brats-pipeline predict --input {out}")
