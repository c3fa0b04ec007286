"""The ``predict``, ``merge-shards`` and ``export`` commands: a trained model applied to new cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pipeline.cli.options import (
    EXISTING,
    MODELS,
    PATH,
    UNCERTAINTY,
    ChoiceOf,
    Constant,
    reports_errors,
    shard_option,
)

__all__ = ["predict", "merge_shards", "export_command"]


@click.command()
@MODELS
@click.option(
    "--input",
    "input_path",
    required=True,
    type=EXISTING,
    help="Case folder, MSD 4D image, data list JSON or data root; for a 2D task also a Kaggle LGG patient folder or one 2D image.",
)
@click.option("--out", required=True, type=PATH, help="Folder for the predictions (NIfTI; a 2D task's masks in their own format).")
@click.option("--device", default="cpu", show_default=True, help="Where the network runs: cpu, cuda, cuda:N.")
@click.option("--tta/--no-tta", default=None, help="Mirrored test-time augmentation (default: the model config's setting).")
@click.option(
    "--label-convention",
    default="auto",
    show_default=True,
    type=ChoiceOf(Constant("pipeline.inference.model", "OUTPUT_CONVENTIONS")),
    help="Labels written: auto = each case's own (0/1/2/4 for 2017-2021, 0/1/2/3 for 2023+, MSD's for MSD); "
    "or one of the model's task's conventions.",
)
@click.option("--probabilities", is_flag=True, help="Also write probability maps (<case>_probabilities.nii.gz, 8-bit scaled to [0, 1]).")
@UNCERTAINTY
@click.option("--submission-names", is_flag=True, help="Name files <case_id>.nii.gz as the BraTS portals expect (default <case_id>_seg.nii.gz).")
@shard_option("writes OUT/shards/K-of-N.json instead of predictions.json; then merge-shards.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@reports_errors
def predict(
    model_dirs: tuple[Path, ...],
    input_path: Path,
    out: Path,
    device: str,
    tta: bool | None,
    label_convention: str,
    probabilities: bool,
    uncertainty: bool,
    submission_names: bool,
    shard: Any,
    no_progress: bool,
) -> None:
    """Segment cases (with or without ground truth) into NIfTI files for 3D Slicer.

    Each segmentation is uint8 on exactly the input's grid (shape, affine, qform/sform, voxel
    order), with a Slicer colour table (brats_<convention>.ctbl) next to it. A Kaggle LGG
    model writes OUT/<patient>/<patient>_<n>_mask.tif (0/255) and OUT/<patient>_seg.nii.gz; a 2D
    image model OUT/masks/<name>.png (0/255, each image's size).

    Under torchrun (torchrun --nproc-per-node N -m pipeline predict ... --device cuda) each process
    segments its share of the cases on its own GPU (LOCAL_RANK; CPU when --device cpu) and rank 0
    writes predictions.json.
    """
    from pipeline.inference.predict import predict as run_predict

    summary = run_predict(
        list(model_dirs),
        input_path,
        out,
        device=device,
        tta=tta,
        label_convention=label_convention,
        probabilities=probabilities,
        submission_names=submission_names,
        progress=not no_progress,
        uncertainty=uncertainty,
        shard=shard,
    )
    click.echo(str(summary))


@click.command(name="merge-shards")
@click.option("--out", required=True, type=EXISTING, help="The --out of the predict or evaluate shards (holding shards/K-of-N.json).")
@reports_errors
def merge_shards(out: Path) -> None:
    """Combine the shards of a predict or evaluate run made with --shard K/N.

    Checks that shards 1..N of one run are all in OUT/shards/ (same model, input or data list
    and split, every case once), then writes what one unsharded run writes: predictions.json
    (predict) or metrics.csv, summary.json and plots/ (evaluate), cases in the run's order.
    """
    from pipeline.evaluation.shard_merge import merge_shards as run_merge

    click.echo(f"merged -> {run_merge(out)}")


@click.command(name="export")
@click.option("--model", "model_dir", required=True, type=EXISTING, help="Run folder (inference.json + models/model.pt) or bundle folder (configs/inference.yaml + models/).")
@click.option("--format", "export_format", default="torchscript", show_default=True, type=ChoiceOf(Constant("pipeline.inference.export", "FORMATS")), help="TorchScript (MONAI ckpt_export), ONNX, or bundle: the run's weights become the bundle's shipped models/model.pt (hash recorded).")
@click.option("--out", default=None, type=PATH, help="File to write (default: MODEL/models/model.ts or model.onnx); for bundle the bundle folder (default: bundles/brats_segmentation).")
@click.option("--tolerance", default=Constant("pipeline.inference.export", "DEFAULT_TOLERANCE"), show_default=True, type=click.FloatRange(min=0), help="Largest logit difference from PyTorch accepted.")
@reports_errors
def export_command(model_dir: Path, export_format: str, out: Path | None, tolerance: float) -> None:
    """Export a trained network to TorchScript or ONNX, or as the bundle's shipped weights, and check it reproduces PyTorch.

    TorchScript goes through MONAI's ckpt_export (metadata.json and the config embedded);
    ONNX through torch.onnx.export with dynamic batch and spatial sizes (input `image`,
    output `logits`). A bundle folder holding only models/model.ts still loads for predict.
    """
    from pipeline.inference.export import export_model

    click.echo(str(export_model(model_dir, export_format, out=out, tolerance=tolerance)))
