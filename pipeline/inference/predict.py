"""Segment new cases and write NIfTI files for 3D Slicer: the ``predict`` command.

``--input`` may be one case folder (any supported naming, also a folder not named after its
case), one MSD Task01 4D image, a data list JSON (every case it lists, with or without ground
truth), or a data root (every case :func:`pipeline.datasets.discover` finds: BraTS 2017-2021,
2023+, MSD).

``--input`` may also be a Kaggle LGG root, one patient folder, a 2D image/mask root or one 2D
image (PNG, JPG, TIFF) for a model of a 2D task: each case's masks are written in its own format
(:func:`pipeline.inference.writers.write_planar_masks`), a Kaggle patient's as
``OUT/<folder>/<folder>_<n>_mask.tif`` (0/255, a mirror of its input folder) plus
``OUT/<folder>_seg.nii.gz`` (its volume, unit spacing, for viewers), a 2D image's as
``OUT/masks/<name>.png`` (0/255, the image's own size); never beside the input files.

The output folder receives, per case, ``<case_id>_seg.nii.gz`` (or ``<case_id>.nii.gz`` with
BraTS submission naming) on exactly the input's grid, a 3D Slicer colour table per label
convention used (``brats_<convention>.ctbl``), optional probability maps (8-bit, scaled to [0, 1])
(``<case_id>_probabilities.nii.gz``, channels last), optional uncertainty maps (float32 in [0, 1]:
``<case_id>_uncertainty.nii.gz``, the normalised entropy, and with more than one pass
``<case_id>_disagreement.nii.gz``; see :mod:`pipeline.inference.uncertainty`), and ``predictions.json``
listing what was written with the settings used (and each case's uncertainty scores).

``model`` may be several folders (an ensemble): their probabilities are averaged before decoding.

Under torchrun each process segments its share of the cases and rank 0 writes ``predictions.json``;
with ``shard`` one shard's entries go to ``OUT/shards/K-of-N.json`` for
:func:`merge_prediction_shards` (:mod:`pipeline.core.distributed`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from pipeline.core.distributed import (
    Shard,
    gather_to_all,
    is_rank_zero,
    local_device,
    process_group,
    rank_shard,
    shard_conventions,
    shard_devices,
    shard_positions,
    write_shard,
)
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.io import write_json
from pipeline.datasets import discover, discover_case, kaggle_lgg
from pipeline.datasets.datalist import SPLITS, load_datalist
from pipeline.datasets.kaggle_lgg import list_slices
from pipeline.datasets.records import (
    IMAGE_2D,
    KAGGLE_LGG,
    PLANAR_LAYOUTS,
    CaseRecord,
    for_channels,
)
from pipeline.inference.model import (
    SegmentationModel,
    check_output_convention,
    load_model,
    output_convention,
)
from pipeline.inference.writers import (
    UNCERTAINTY_MAPS,
    case_mask_names,
    colour_table_filename,
    planar_mask_names,
    probability_filename,
    segmentation_filename,
    uncertainty_filename,
    write_colour_table,
    write_planar_masks,
    write_probabilities,
    write_segmentation,
    write_uncertainty,
)
from pipeline.tasks.labels import written_convention
from pipeline.tasks.task import DEFAULT_TASK, Task, resolve_task, task_from_dict

__all__ = [
    "PredictionSummary",
    "check_outputs_spare_inputs",
    "merge_prediction_shards",
    "model_settings",
    "predict",
    "resolve_cases",
    "write_case_prediction",
    "write_colour_tables",
    "write_case_uncertainty",
]


MANIFEST = "predictions.json"

logger = logging.getLogger(__name__)


@dataclass
class PredictionSummary:
    """What :func:`predict` wrote."""

    out_dir: Path
    segmentations: dict[str, Path] = field(default_factory=dict)
    probabilities: dict[str, Path] = field(default_factory=dict)
    uncertainty: dict[str, list[Path]] = field(default_factory=dict)
    colour_tables: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        return f"{len(self.segmentations)} case(s) segmented -> {self.out_dir} ({self.seconds:.1f} s)"


def _has_nifti_files(folder: Path) -> bool:
    return any(p.is_file() and (p.name.endswith(".nii") or p.name.endswith(".nii.gz")) for p in folder.iterdir())


def resolve_cases(input_path: str | os.PathLike[str], task: Task | None = None) -> list[CaseRecord]:
    """Every case an ``--input`` names: a case folder, an MSD 4D file, a data list JSON or a data root, with the files of ``task``'s channels (default: the BraTS glioma task)."""

    source = Path(input_path)
    if not source.exists():
        raise InputError(source, "input not found")
    if source.is_file() and source.suffix == ".json":
        datalist = load_datalist(source)
        channels = resolve_task(task).channels
        return [for_channels(record, channels) for split in SPLITS for record in datalist.records[split]]
    if source.is_file() or _has_nifti_files(source) or kaggle_lgg.is_patient_folder(source):
        return [discover_case(source, task=task)]
    found = discover(source, task=task)
    for line in found.warnings:
        logger.warning("warning: %s", line)
    problems = [line for lines in found.problems.values() for line in lines]
    if problems:
        where, _, problem = problems[0].partition(": ")
        more = f" ({len(problems) - 1} more problem(s) under {source})" if len(problems) > 1 else ""
        raise InputError(where, problem + more)
    return list(found.records)


def check_outputs_spare_inputs(
    records: list[CaseRecord], out_dir: Path, submission_names: bool = False, probabilities: bool = False, uncertainty: bool = False
) -> None:
    """Refuse, before anything is written, an output folder where a prediction would replace an input file.

    ``--out`` set to a case folder would otherwise write ``<case>_seg.nii.gz`` over its ground
    truth. A 2D-layout case's masks are also refused in a folder holding its input files (a
    Kaggle patient folder, an ``images/`` or ``masks/`` folder): they go to a mirror of it.
    """
    inputs = {path.resolve() for record in records for path in _input_files(record)}
    planar_folders = {path.parent for record in records if record.layout in PLANAR_LAYOUTS for path in _input_files(record)}
    # An image of an images/ + masks/ folder: its mask (unknown to an unlabelled record) is in masks/.
    planar_folders |= {folder.parent / "masks" for folder in set(planar_folders) if folder.name == "images"}
    for record in records:
        names = [segmentation_filename(record.case_id, submission_names)] + ([probability_filename(record.case_id)] if probabilities else [])
        names += [uncertainty_filename(record.case_id, kind) for kind in UNCERTAINTY_MAPS] if uncertainty else []
        if record.layout in PLANAR_LAYOUTS:
            names += planar_mask_names(record.layout, record.case_id, _planar_images(record))
        for name in names:
            target = (Path(out_dir) / name).resolve()
            if target in inputs:
                raise InputError(target, f"is an input file of case {record.case_id}; predictions never overwrite source data, choose another output folder")
            if record.layout in PLANAR_LAYOUTS and target.parent in planar_folders:
                raise InputError(target, f"would be written beside the input files of case {record.case_id}; choose an output folder outside the inputs")


def _planar_images(record: CaseRecord) -> list[Path]:
    """The image file of every slice of a 2D-layout case, in order."""
    if record.layout == KAGGLE_LGG:
        return [s.image for s in list_slices(record.images[0])[0]]
    return [record.images[0]]


def _input_files(record: CaseRecord) -> list[Path]:
    """Every file a case is read from (a Kaggle patient: its slices and masks), resolved."""
    files = [*record.images, *((record.label,) if record.label is not None else ())]
    if record.layout == KAGGLE_LGG:
        files = [path for s in list_slices(record.images[0])[0] for path in (s.image, s.mask) if path is not None]
    return [path.resolve() for path in files]


def write_case_prediction(
    prediction: Any,
    out_dir: Path,
    label_convention: str = "auto",
    submission_names: bool = False,
    task: Task = DEFAULT_TASK,
) -> tuple[Path, Path | None, str]:
    """Write one :class:`pipeline.inference.model.CasePrediction`: the segmentation and, if present, the probabilities.

    A 2D-layout case's masks are written first (:func:`pipeline.inference.writers.write_planar_masks`); a 2D
    image has no volume (nor probabilities), a Kaggle patient's volume follows.

    Returns:
        The segmentation path (a 2D image's mask), the probability path (or None) and the convention written.
    """
    convention = output_convention(prediction.record, label_convention, task)
    layout = prediction.record.layout
    if layout in PLANAR_LAYOUTS:
        masks = write_planar_masks(prediction.labels, prediction.meta, out_dir, written_convention(task, convention))
        if layout == IMAGE_2D:
            return masks[0], None, convention
    seg_path = write_segmentation(
        prediction.labels,
        prediction.reference,
        out_dir / segmentation_filename(prediction.case_id, submission_names),
        written_convention(task, convention),
    )
    prob_path = None
    if prediction.probabilities is not None:
        prob_path = write_probabilities(prediction.probabilities, prediction.reference, out_dir / probability_filename(prediction.case_id))
    return seg_path, prob_path, convention


def write_case_uncertainty(prediction: Any, out_dir: Path) -> list[Path]:
    """Write a :class:`pipeline.inference.model.CasePrediction`'s uncertainty maps (entropy; disagreement with >1 pass) on the input's grid."""
    if prediction.uncertainty is None:
        return []
    maps = {"uncertainty": prediction.uncertainty.entropy, "disagreement": prediction.uncertainty.disagreement}
    return [
        write_uncertainty(values, prediction.reference, out_dir / uncertainty_filename(prediction.case_id, kind))
        for kind, values in maps.items()
        if values is not None
    ]


def predict(
    model: SegmentationModel | str | os.PathLike[str] | list[str | os.PathLike[str]],
    input_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    device: str = "cpu",
    tta: bool | None = None,
    label_convention: str = "auto",
    probabilities: bool = False,
    submission_names: bool = False,
    progress: bool = True,
    uncertainty: bool = False,
    shard: Shard | str | None = None,
) -> PredictionSummary:
    """Segment every case of ``input_path`` with ``model`` and write the NIfTI files into ``out_dir``.

    Args:
        model: a loaded model, a run or bundle folder, or a list of folders (an ensemble).
        input_path: a case folder, an MSD 4D file, a data list JSON or a data root.
        out_dir: where the predictions go (created).
        device: where the network runs (when ``model`` is a folder).
        tta: override the model's test-time augmentation (when ``model`` is a folder).
        label_convention: ``auto`` (each case's own) or one of the model's task's conventions
            (BraTS glioma: ``brats2017``, ``brats2023``, ``msd``, ``internal``).
        probabilities: also write probability maps (8-bit, scaled to [0, 1]).
        submission_names: name files ``<case_id>.nii.gz`` (BraTS portals) instead of ``<case_id>_seg.nii.gz``.
        progress: show a progress bar.
        uncertainty: also write the uncertainty maps and record each case's uncertainty scores.
        shard: segment only shard K of N of the cases (``"K/N"``, 1-based; :mod:`pipeline.core.distributed`)
            and write ``shards/K-of-N.json`` instead of ``predictions.json`` (``merge-shards`` writes it).
            Under torchrun each rank takes its own shard and rank 0 writes ``predictions.json``.
    """
    started = time.perf_counter()
    out = Path(out_dir)
    wanted = Shard.parse(shard) if isinstance(shard, str) else shard
    if not isinstance(model, SegmentationModel):
        model = load_model(model, device=local_device(device), tta=tta)
    elif tta is not None:
        model.inferer.tta = bool(tta)
    check_output_convention(label_convention, model.task)
    records = resolve_cases(input_path, model.task)
    if probabilities and any(record.layout == IMAGE_2D for record in records):
        raise ConfigError("--probabilities", "2D images are predicted as masks only (masks/<name>.png); leave --probabilities out")
    check_outputs_spare_inputs(records, out, submission_names, probabilities, uncertainty)
    summary = PredictionSummary(out_dir=out)
    with process_group(wanted) as mine:
        items: list[tuple[int, dict[str, Any]]] = []
        conventions: set[str] = set()
        positions = shard_positions([record.case_id for record in records], mine)
        for position in tqdm(positions, desc="predict", unit="case", disable=not progress or not is_rank_zero()):
            record = records[position]
            case_started = time.perf_counter()
            # The ground truth plays no part in a prediction: it is not read (nor checked) here.
            prediction = model.predict_case(replace(record, label=None), probabilities=probabilities, uncertainty=uncertainty)
            seg_path, prob_path, convention = write_case_prediction(prediction, out, label_convention, submission_names, model.task)
            uncertainty_paths = write_case_uncertainty(prediction, out)
            if record.layout != IMAGE_2D:  # a colour table for the NIfTI volumes
                conventions.add(convention)
            summary.segmentations[record.case_id] = seg_path
            entry: dict[str, Any] = {
                "case_id": record.case_id,
                "segmentation": seg_path.relative_to(out).as_posix(),
                **({"masks": case_mask_names(prediction.meta)} if record.layout in PLANAR_LAYOUTS else {}),
                "label_convention": convention,
                "source": [str(p) for p in record.images],
                "voxels": {name: int(np.count_nonzero(prediction.labels == model.task.class_value(name))) for name in model.task.classes},
                "seconds": round(time.perf_counter() - case_started, 3),
            }
            if prob_path is not None:
                summary.probabilities[record.case_id] = prob_path
                entry["probabilities"] = prob_path.name
                entry["probability_channels"] = list(prediction.channel_names)
            if prediction.uncertainty is not None:
                summary.uncertainty[record.case_id] = uncertainty_paths
                entry["uncertainty_maps"] = [path.name for path in uncertainty_paths]
                entry["uncertainty_passes"] = prediction.uncertainty.passes
                entry["uncertainty_scores"] = prediction.uncertainty.scores
            items.append((position, entry))
        if mine is not None and rank_shard() is None:  # --shard: this part of the run; merge-shards writes the manifest
            settings = model_settings(model)
            write_shard(
                out, mine, "predict", len(records), items, model={**settings, "device": None}, input=str(input_path), task=model.task.to_dict(),
                shard_device=settings["device"], shard_conventions=sorted(conventions),
            )
        else:
            gathered = gather_to_all((items, sorted(conventions)))
            if is_rank_zero():
                entries = [entry for _, entry in sorted((item for part, _ in gathered for item in part), key=lambda item: item[0])]
                summary.colour_tables = write_colour_tables(out, {name for _, names in gathered for name in names}, model.task)
                write_json(out / MANIFEST, {"model": model_settings(model), "input": str(input_path), "cases": entries})
    summary.seconds = time.perf_counter() - started
    return summary


def write_colour_tables(out: Path, conventions: set[str], task: Task) -> list[Path]:
    """A 3D Slicer colour table per label convention written, in ``out``."""
    written = [written_convention(task, name) for name in sorted(conventions)]
    return [write_colour_table(out / colour_table_filename(convention, task), convention, task) for convention in written]


def merge_prediction_shards(out_dir: str | os.PathLike[str], contexts: list[dict[str, Any]], entries: list[dict[str, Any]]) -> Path:
    """``predictions.json`` and the colour tables of a ``--shard`` run from its shards' parts (:func:`pipeline.core.distributed.read_shards`), as one run writes them."""
    out = Path(out_dir)
    write_colour_tables(out, shard_conventions(contexts), task_from_dict(contexts[0]["task"]))
    model = {**contexts[0]["model"], "device": shard_devices(contexts)}
    write_json(out / MANIFEST, {"model": model, "input": contexts[0]["input"], "cases": entries})
    return out / MANIFEST


def model_settings(model: SegmentationModel) -> dict[str, Any]:
    """The settings that shaped a prediction, for manifests and summaries.

    An ensemble reports its first member's inference settings and, under ``ensemble``, each
    member's folder (or checkpoint) with its own settings.
    """
    return {
        "source": str(model.source) if model.source else None,
        **_inferer_settings(model.inferer),
        "device": str(model.device),
        "postprocessing": model.postprocessing.to_config(),
    }


def _inferer_settings(inferer: Any) -> dict[str, Any]:
    members = getattr(inferer, "members", None)
    if members is not None:
        return {**_inferer_settings(members[0]), "ensemble": [{"source": name, **_inferer_settings(member)} for name, member in zip(inferer.names, members)]}
    return {
        "task": inferer.task.name,
        "mode": inferer.mode,
        "context": inferer.context,
        "output_mode": inferer.output_mode,
        "roi_size": list(inferer.roi_size) if inferer.roi_size else None,
        "sw_batch_size": inferer.sw_batch_size,
        "overlap": inferer.overlap,
        "tta": inferer.tta,
    }
