"""Load a trained model and segment cases with it, from Python.

Example (in the repository after ``make demo``, which trains ``outputs/demo/run``):
    >>> import pipeline
    >>> model = pipeline.load_model("outputs/demo/run")            # a run folder or a bundle folder
    >>> image = model.segment("data/synthetic/BraTS2021_00004")    # a case folder of any BraTS release
    >>> image.get_data_dtype().name, image.shape                   # uint8 labels 0/1/2/4 on the input's grid
    ('uint8', (...))
    >>> image.to_filename("BraTS2021_00004_seg.nii.gz")

Every case goes through the one inference path the CLI and the bundle configs use
(:meth:`SegmentationModel.predict_case`): raw NIfTI -> :func:`pipeline.preprocessing.prepare.prepare_case`
(the preprocessing of training) -> :class:`pipeline.inference.inferers.VolumeInferer` -> post-processing
(:class:`pipeline.inference.postprocess.PostProcessing`) -> :func:`pipeline.core.geometry.restore_to_original`
-> labels in the case's own convention on the input's grid.

Several folders (e.g. the five folds of one configuration) load as one ensemble:
``load_model([fold0, fold1, ...])`` averages the members' probabilities
(:class:`pipeline.inference.inferers.EnsembleInferer`) before decoding and post-processing; a bundle does
the same with a list of checkpoints as its ``checkpoint`` key. ``segment(..., uncertainty=True)``
also returns the voxel-wise uncertainty maps (:mod:`pipeline.inference.uncertainty`).

A *run folder* holds ``inference.json`` (the bundle's ``inference.yaml`` resolved with the run's
network keys, written by training next to ``config.json``) and ``models/model.pt``; a *bundle
folder* holds ``configs/inference.yaml`` and ``models/model.pt`` (or a TorchScript
``models/model.ts``). Both load the same way: :func:`load_model` instantiates the config's
``model`` component (:mod:`pipeline.inference.config`). Weights are read by
:func:`pipeline.core.checkpoints.load_weights` (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from pipeline.core.checkpoints import KEPT, load_weights
from pipeline.core.errors import ConfigError
from pipeline.core.geometry import from_planar_size, restore_to_original
from pipeline.core.io import load_nifti
from pipeline.datasets import case_from_files, discover_case
from pipeline.datasets.records import PLANAR_LAYOUTS, CaseRecord, for_channels
from pipeline.inference.config import check_bundle_weights, model_parser, parsed
from pipeline.inference.inferers import EnsembleInferer
from pipeline.inference.postprocess import PostProcessing
from pipeline.inference.uncertainty import (
    Uncertainty,
    uncertainty_maps,
    uncertainty_scores,
)
from pipeline.inference.writers import (
    planar_reference,
    segmentation_image,
    uncertainty_image,
)
from pipeline.networks import spatial_divisor
from pipeline.preprocessing.prepare import prepare_case
from pipeline.tasks.labels import CONVENTIONS, written_convention
from pipeline.tasks.task import DEFAULT_TASK, TASKS, Task, resolve_task

__all__ = [
    "OUTPUT_CONVENTIONS",
    "WEIGHTS",
    "CasePrediction",
    "SegmentationModel",
    "SegmentationResult",
    "case_record",
    "check_output_convention",
    "ensemble",
    "load_model",
    "output_convention",
    "segment",
]

WEIGHTS = Path("models") / KEPT
TORCHSCRIPT = Path("models") / "model.ts"

#: Label conventions a prediction can be written in; ``auto`` is each case's own.
#: What ``--label-convention`` offers: ``auto`` (each case's own) and every built-in task's conventions (glioma's first); a model accepts its own task's.
OUTPUT_CONVENTIONS: tuple[str, ...] = ("auto", *dict.fromkeys([*CONVENTIONS, *(name for task in TASKS.values() for name in task.conventions)]))


@dataclass(frozen=True)
class CasePrediction:
    """The result of segmenting one case.

    Attributes:
        record: the case.
        labels: internal labels (0-3) on the source grid ``(X0, Y0, Z0)``, post-processed; for a
            2D layout ``(rows, columns, slices)``, slice ``z`` that of ``meta["original"]["slices"][z]``.
        reference: the image whose header the prediction copies (the first modality; for a 2D
            layout :func:`pipeline.inference.writers.planar_reference`, unit spacing).
        cache_image: the preprocessed image ``(Z, C, X, Y)`` (RAS voxel order, cropped).
        cache_labels: the post-processed internal labels on the cache grid ``(Z, X, Y)``.
        cache_ground_truth: the ground truth on the cache grid, or None.
        meta: the preprocessing manifest (grid bookkeeping, spacing).
        probabilities: class or region probabilities on the source grid ``(K, X0, Y0, Z0)`` when asked for.
        channel_names: the names of the probability channels.
        uncertainty: the uncertainty maps on the source grid and the per-case scores, when asked for.
    """

    record: CaseRecord
    labels: np.ndarray
    reference: nib.Nifti1Image
    cache_image: np.ndarray
    cache_labels: np.ndarray
    cache_ground_truth: np.ndarray | None
    meta: dict
    probabilities: np.ndarray | None = None
    channel_names: tuple[str, ...] = ()
    uncertainty: Uncertainty | None = None

    @property
    def case_id(self) -> str:
        return self.record.case_id

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size (mm) along the source grid's axes."""
        return tuple(float(z) for z in self.reference.header.get_zooms()[:3])


@dataclass(frozen=True)
class SegmentationResult:
    """What :meth:`SegmentationModel.segment` returns with ``uncertainty=True``.

    Attributes:
        image: the uint8 segmentation on the input's grid.
        uncertainty: the normalised entropy map (float32 NIfTI on the input's grid).
        disagreement: the passes' disagreement map (float32 NIfTI), or None with a single pass.
        scores: the per-case uncertainty scores (:func:`pipeline.inference.uncertainty.uncertainty_scores`).
    """

    image: nib.Nifti1Image
    uncertainty: nib.Nifti1Image
    disagreement: nib.Nifti1Image | None
    scores: dict[str, float]


class SegmentationModel:
    """A trained network with its whole-volume inference and post-processing.

    Args:
        network: the network (weights loaded, or loaded from ``checkpoint``); for an ensemble,
            a ``torch.nn.ModuleList`` of the members' networks.
        inferer: a :class:`pipeline.inference.inferers.VolumeInferer`, or for an ensemble a
            :class:`pipeline.inference.inferers.EnsembleInferer` (see :func:`ensemble`).
        postprocessing: a :class:`PostProcessing` or its config mapping (``None``: none; a
            loaded model takes its inference config's ``postprocessing`` component); it edits
            the structures of the inferer's task.
        device: where the network runs.
        checkpoint: a state_dict file to load into ``network``; a list of files makes an ensemble
            of copies of ``network``, one per file, all run by ``inferer``.
        allow_resection_cavity: read BraTS 2024 ground truth with label 4 (mapped to background).
        source: the run or bundle folder the model came from (reports read its logs).

    Example:
        >>> from pipeline.inference.inferers import VolumeInferer
        >>> from pipeline.networks import build_network
        >>> model = SegmentationModel(build_network("2d"), VolumeInferer("2d"))
        >>> seg = model.segment("/data/BraTS2021_00006")   # doctest: +SKIP
    """

    def __init__(
        self,
        network: torch.nn.Module,
        inferer: Any,
        postprocessing: PostProcessing | Mapping | None = None,
        device: str | torch.device = "cpu",
        checkpoint: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        allow_resection_cavity: bool = False,
        source: str | os.PathLike[str] | None = None,
    ) -> None:
        self.device = _device(device)
        if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
            import copy

            checkpoints = [str(path) for path in checkpoint]
            network = torch.nn.ModuleList([load_weights(copy.deepcopy(network), path) for path in checkpoints])
            inferer = EnsembleInferer([inferer] * len(checkpoints), names=checkpoints)
        elif checkpoint is not None:
            load_weights(network, checkpoint)
        self.network = network.to(self.device).eval()
        self.inferer = inferer
        self.postprocessing = PostProcessing.from_config(postprocessing).for_task(self.task)
        self.allow_resection_cavity = allow_resection_cavity
        self.source = Path(source) if source is not None else None

    def __repr__(self) -> str:
        members = getattr(self.inferer, "members", None)
        if members is not None:
            return f"SegmentationModel(ensemble of {len(members)}, output_mode={self.inferer.output_mode!r}, tta={self.inferer.tta}, device={str(self.device)!r})"
        return (
            f"SegmentationModel(mode={self.inferer.mode!r}, output_mode={self.inferer.output_mode!r}, "
            f"tta={self.inferer.tta}, device={str(self.device)!r}, source={str(self.source) if self.source else None!r})"
        )

    @property
    def task(self) -> Task:
        """What the network predicts (its inferer's task)."""
        return self.inferer.task

    @property
    def channel_names(self) -> tuple[str, ...]:
        """Names of the probability channels the network outputs: the task's regions, or background and its classes."""
        return self.task.regions if self.inferer.output_mode == "regions" else ("background", *self.task.classes)

    def predict_case(
        self,
        case: CaseRecord | str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        probabilities: bool = False,
        uncertainty: bool = False,
    ) -> CasePrediction:
        """Segment one case: preprocess, infer, post-process, and map back onto the source grid.

        Args:
            case: a :class:`CaseRecord`, a case folder, an MSD 4D file, the four modality
                files in canonical order (T1, T1ce, T2, FLAIR), a Kaggle LGG patient folder or
                one 2D image.
            probabilities: also return the probabilities on the source grid.
            uncertainty: also return the uncertainty maps on the source grid and their scores
                (:mod:`pipeline.inference.uncertainty`); without it nothing extra is computed.
        """

        record = case_record(case, self.task)
        prepared = prepare_case(record, allow_resection_cavity=self.allow_resection_cavity, task=self.task)
        pass_entropy = None
        if uncertainty:
            scores, pass_entropy = self.inferer.with_pass_entropy(self.network, prepared.image, self.device)
        else:
            scores = self.inferer(self.network, prepared.image, self.device)
        cache_labels = self.postprocessing(self.inferer.to_labels(scores))
        if "resizing" in prepared.meta:  # resampled images: the labels of the probabilities resampled back, not resampled labels
            labels = restore_to_original(self.postprocessing(self.inferer.to_labels(from_planar_size(np.asarray(scores), prepared.meta))), prepared.meta)
        else:
            labels = restore_to_original(cache_labels, prepared.meta, fill=0)
        case_uncertainty = None
        if pass_entropy is not None:
            case_uncertainty = self._uncertainty(scores, pass_entropy, cache_labels, prepared.meta)
        restored = None
        if probabilities:
            scores = scores.numpy()
            restored = restore_to_original(scores, prepared.meta, fill=0)
            if self.inferer.output_mode != "regions":
                # Outside the brain crop the prediction is background with certainty.
                restored[0] = restore_to_original(scores[0], prepared.meta, fill=1)
        return CasePrediction(
            record=record,
            labels=labels,
            reference=planar_reference(prepared.meta) if record.layout in PLANAR_LAYOUTS else load_nifti(record.images[0]),
            cache_image=prepared.image,
            cache_labels=cache_labels,
            cache_ground_truth=prepared.label,
            meta=prepared.meta,
            probabilities=restored,
            channel_names=self.channel_names,
            uncertainty=case_uncertainty,
        )

    def _uncertainty(self, scores: torch.Tensor, pass_entropy: torch.Tensor, cache_labels: np.ndarray, meta: dict) -> Uncertainty:
        """The uncertainty maps on the source grid (certain outside the brain crop) and the per-case scores."""

        passes = self.inferer.passes
        entropy, disagreement = uncertainty_maps(scores, pass_entropy, passes, self.inferer.output_mode)
        return Uncertainty(
            entropy=restore_to_original(entropy, meta, fill=0),
            disagreement=restore_to_original(disagreement, meta, fill=0) if disagreement is not None else None,
            passes=passes,
            scores=uncertainty_scores(entropy, disagreement, cache_labels),
        )

    def segment(
        self,
        case: CaseRecord | str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        label_convention: str = "auto",
        uncertainty: bool = False,
    ) -> nib.Nifti1Image | SegmentationResult:
        """Segment one case and return the uint8 NIfTI image on the input's grid.

        Args:
            case: see :meth:`predict_case`.
            label_convention: ``auto`` (the case's own: 0/1/2/4 for BraTS 2017-2021, 0/1/2/3 for
                2023+, MSD's for MSD) or a convention name.
            uncertainty: return a :class:`SegmentationResult` holding the image, the uncertainty
                maps (float32 NIfTI on the input's grid) and the per-case scores.
        """

        prediction = self.predict_case(case, uncertainty=uncertainty)
        convention = written_convention(self.task, output_convention(prediction.record, label_convention, self.task))
        image = segmentation_image(convention.from_internal(prediction.labels), prediction.reference)
        if prediction.uncertainty is None:
            return image
        maps = prediction.uncertainty
        return SegmentationResult(
            image=image,
            uncertainty=uncertainty_image(maps.entropy, prediction.reference),
            disagreement=uncertainty_image(maps.disagreement, prediction.reference) if maps.disagreement is not None else None,
            scores=maps.scores,
        )


def check_output_convention(label_convention: str, task: Task = DEFAULT_TASK) -> str:
    """``label_convention`` if it is ``auto`` or one of the task's conventions, else a :class:`ConfigError` naming the ones it writes."""
    choices = ("auto", *task.conventions)
    if label_convention not in choices:
        raise ConfigError("label_convention", f"the model's task {task.name} does not write {label_convention!r}; choose one of {', '.join(choices)}")
    return label_convention


def output_convention(record: CaseRecord, label_convention: str = "auto", task: Task = DEFAULT_TASK) -> str:
    """The convention a case's prediction is written in (``auto``: the case's own)."""
    check_output_convention(label_convention, task)
    return record.label_convention if label_convention == "auto" else label_convention


def _device(device: str | torch.device) -> torch.device:
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError("device", f"not a device: {device!r}") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", f"{device} requested but CUDA is not available")
    return resolved


def case_record(case: CaseRecord | str | os.PathLike[str] | Sequence[str | os.PathLike[str]], task: Task | None = None) -> CaseRecord:
    """A :class:`CaseRecord` of ``task``'s channels from a record, a case folder, an MSD 4D file, or four modality files (:mod:`pipeline.datasets`).

    A record listed with more channels than the task reads (a four-modality data list and a
    FLAIR-only model) holds only the task's channels, in its order.
    """

    task = resolve_task(task)
    if isinstance(case, CaseRecord):
        return for_channels(case, task.channels)

    if isinstance(case, (str, os.PathLike)):
        return discover_case(case, task=task)
    return for_channels(case_from_files(case), task.channels)


def ensemble(models: Sequence[SegmentationModel], names: Sequence[str | os.PathLike[str]] | None = None) -> SegmentationModel:
    """One model averaging the probabilities of ``models`` (each with its own inference and TTA) before decoding.

    The first model's post-processing, device and label handling apply to the ensemble.

    Args:
        models: the members, e.g. the folds of one configuration.
        names: the members' folders, for errors and manifests (default: each model's ``source``).

    Raises:
        ConfigError: naming the member whose outputs (output mode) differ from the first member's.
    """

    names = [str(name) for name in names] if names is not None else [str(model.source) for model in models]
    inferer = EnsembleInferer([model.inferer for model in models], names=names)
    first = models[0]
    return SegmentationModel(
        torch.nn.ModuleList([model.network for model in models]),
        inferer,
        postprocessing=first.postprocessing,
        device=first.device,
        allow_resection_cavity=first.allow_resection_cavity,
    )


def load_model(
    bundle_or_run_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    device: str | torch.device = "cpu",
    tta: bool | None = None,
    postprocessing: PostProcessing | Mapping | None = None,
) -> SegmentationModel:
    """Load a trained model from a run folder or a bundle folder: the ``model`` component of its inference config.

    Args:
        bundle_or_run_dir: a run folder (``inference.json`` or ``config.json`` + ``models/model.pt``)
            or a bundle folder (``configs/inference.yaml`` + ``models/model.pt`` or ``models/model.ts``);
            see :mod:`pipeline.inference.config`. A list of folders loads each and returns their
            :func:`ensemble` (a list of one folder: that folder's model).
        device: where the network runs (``cpu``, ``cuda``, ``cuda:1``).
        tta: override the config's test-time augmentation setting.
        postprocessing: override the config's ``postprocessing`` component.

    Returns:
        The model, ready for :meth:`SegmentationModel.segment`.

    Raises:
        ConfigError: naming the file when the folder, config or weights are missing or do not fit.

    Example:
        >>> model = load_model("runs/synthetic_2.5d_fold0", device="cpu")     # doctest: +SKIP
        >>> model.segment("/data/BraTS2021_00006").shape             # doctest: +SKIP
        (240, 240, 155)
    """

    if not isinstance(bundle_or_run_dir, (str, os.PathLike)):
        folders = list(bundle_or_run_dir)
        if not folders:
            raise ConfigError("--model", "no model folder given")
        models = [load_model(folder, device=device, tta=tta, postprocessing=postprocessing) for folder in folders]
        return models[0] if len(models) == 1 else ensemble(models, names=folders)
    root = Path(bundle_or_run_dir)
    parser, config_path = model_parser(root, device=str(device))
    if tta is not None:
        parser["tta"] = bool(tta)
    if postprocessing is not None:
        parser["postprocessing"] = postprocessing
    network = parsed(parser, "network_def", config_path)
    if not isinstance(network, torch.nn.Module):
        raise ConfigError(config_path, f"'network_def' built a {type(network).__name__}, not a torch module")
    checkpoint = parsed(parser, "checkpoint", config_path)
    single = isinstance(checkpoint, (str, os.PathLike))  # else a list of checkpoints: an ensemble of this network
    missing = [Path(path) for path in ([checkpoint] if single else checkpoint) if not Path(path).is_file()]
    if single and missing and (root / TORCHSCRIPT).is_file():
        try:
            scripted = torch.jit.load(str(root / TORCHSCRIPT), map_location="cpu")
        except Exception as err:
            raise ConfigError(root / TORCHSCRIPT, f"not a readable TorchScript model ({type(err).__name__})") from err
        # The scripted network no longer tells its divisor: take it from the config's network.
        parser["inferer#divisor"] = spatial_divisor(network)
        parser["network_def"], parser["checkpoint"] = scripted, None
    elif missing:
        raise ConfigError(missing[0], "checkpoint not found (train a model first, or point --model at a run folder)")
    elif single:
        check_bundle_weights(root, checkpoint)
    model = parsed(parser, "model", config_path)
    if not isinstance(model, SegmentationModel):
        raise ConfigError(config_path, f"'model' built a {type(model).__name__}, not a SegmentationModel")
    return model


def segment(
    case_files_or_dir: CaseRecord | str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    model: SegmentationModel | str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    label_convention: str = "auto",
    device: str | torch.device = "cpu",
    uncertainty: bool = False,
) -> nib.Nifti1Image | SegmentationResult:
    """Segment one case with a model (a :class:`SegmentationModel`, a run/bundle folder, or a list of them: an ensemble).

    With ``uncertainty=True`` the result is a :class:`SegmentationResult` (image, uncertainty maps, scores).

    Example:
        >>> image = segment("/data/BraTS2021_00006", model="runs/synthetic_2.5d_fold0")   # doctest: +SKIP
        >>> result = segment("/data/BraTS2021_00006", model=["runs/f0", "runs/f1"], uncertainty=True)   # doctest: +SKIP
    """
    if not isinstance(model, SegmentationModel):
        model = load_model(model, device=device)
    return model.segment(case_files_or_dir, label_convention=label_convention, uncertainty=uncertainty)
