"""Export a trained network to TorchScript (MONAI ``ckpt_export``) or ONNX, checked against PyTorch.

``export_model(MODEL_DIR, "torchscript")`` writes ``MODEL_DIR/models/model.ts`` through MONAI's
:func:`monai.bundle.ckpt_export`, which scripts the network and stores the bundle's
``metadata.json`` and the model's config inside the file (``extra_files``), so the file alone
says what it expects. It is the command-line export of the model zoo::

    python -m monai.bundle ckpt_export network_def --filepath models/model.ts --ckpt_file models/model.pt \\
        --meta_file configs/metadata.json --config_file configs/inference.yaml

``export_model(MODEL_DIR, "onnx")`` writes ``MODEL_DIR/models/model.onnx`` with PyTorch's
``torch.export``-based ONNX exporter; batch and spatial sizes stay dynamic (the spatial sizes
multiples of the network's divisor). Its single input is ``image`` ``(N, C, X, Y[, Z])`` and its
output ``logits`` ``(N, K, X, Y[, Z])``, before softmax or sigmoid.

``MODEL_DIR`` is a run folder (``inference.json`` + ``models/model.pt``) or a bundle folder
(``configs/inference.yaml`` + ``models/model.pt``): the network is its inference config's
``network_def`` (:mod:`pipeline.inference.config`). Every export is run once on a random input
and compared with the PyTorch network (:func:`max_output_difference`); a difference above
``tolerance`` stops the export with an error. A TorchScript model in a bundle folder is picked
up by :func:`pipeline.inference.model.load_model` when ``models/model.pt`` is absent.

``export_model(RUN_DIR, "bundle")`` makes a run's weights the bundle's shipped model
(:func:`export_bundle_weights`): the bundle's own ``configs/inference.yaml`` must build a network
that gives the run's outputs with them; then ``models/model.pt`` is replaced and its SHA-256
recorded in ``configs/metadata.json`` (``model_sha256``), which loading checks.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.checkpoints import load_weights
from pipeline.core.errors import ConfigError
from pipeline.core.io import atomic_path, file_sha256
from pipeline.core.paths import BUNDLE_DIR
from pipeline.inference.config import WEIGHTS_SHA256_KEY, model_parser, parsed
from pipeline.networks import input_channels, output_channels, spatial_divisor
from pipeline.tasks.task import DEFAULT_TASK, Task, TaskSpec, model_task

__all__ = [
    "DEFAULT_TOLERANCE",
    "FORMATS",
    "ExportResult",
    "LoadedNetwork",
    "export_bundle_weights",
    "export_model",
    "export_onnx",
    "export_torchscript",
    "load_network",
    "max_output_difference",
    "network_data_format",
]

FORMATS: tuple[str, ...] = ("torchscript", "onnx", "bundle")
SUFFIXES: dict[str, str] = {"torchscript": ".ts", "onnx": ".onnx"}

#: The bundle shipped with the repository (its metadata describes every export).
METADATA = Path("configs") / "metadata.json"

#: Largest absolute difference of logits accepted between an export and the PyTorch network.
DEFAULT_TOLERANCE = 1e-3

#: Output channel descriptions of the BraTS glioma classes and regions; another task's name its classes and structures.
CLASS_NAMES: tuple[str, ...] = ("background", "necrotic and non-enhancing tumour core (NEC)", "peritumoral edema (ED)", "enhancing tumour (ET)")
REGION_NAMES: dict[str, str] = {
    "TC": "tumour core (TC = NEC + ET)",
    "WT": "whole tumour (WT = NEC + ED + ET)",
    "ET": "enhancing tumour (ET)",
}


def _output_names(task: Task) -> list[str]:
    """What each output channel of ``task``'s network is: background and the classes, or the regions."""
    glioma = (task.classes, dict(task.structures)) == (DEFAULT_TASK.classes, dict(DEFAULT_TASK.structures))
    if task.target == "regions":
        if glioma:
            return [REGION_NAMES[name] for name in task.regions]
        return [name if len(task.structures[name]) == 1 else f"{name} ({' + '.join(task.structures[name])})" for name in task.regions]
    return list(CLASS_NAMES) if glioma else ["background", *task.classes]


@dataclass(frozen=True)
class ExportResult:
    """An exported model file and how closely it reproduces the PyTorch network."""

    path: Path
    format: str
    max_abs_difference: float

    def __str__(self) -> str:
        return f"{self.format} model -> {self.path} (max |logit difference| against PyTorch: {self.max_abs_difference:.2e})"


@dataclass
class LoadedNetwork:
    """A network built from a run or bundle folder's inference config (``config``), with its weights and settings."""

    network: torch.nn.Module
    config: dict[str, Any]
    mode: str
    context: int
    output_mode: str
    divisor: int
    task: Task = DEFAULT_TASK

    @property
    def spatial_dims(self) -> int:
        return 3 if self.mode == "3d" else 2

    @property
    def in_channels(self) -> int:

        return input_channels(self.mode, self.context, self.task)

    def example_input(self, batch: int = 2, multiple: int = 3, seed: int = 0) -> torch.Tensor:
        """A random input of a valid shape: ``multiple`` (at least 2) times the divisor along the first spatial axis, one more along the next."""
        generator = torch.Generator().manual_seed(seed)
        sizes = [self.divisor * (multiple + axis) for axis in range(self.spatial_dims)]
        return torch.randn(batch, self.in_channels, *sizes, generator=generator)


def load_network(model_dir: str | os.PathLike[str]) -> LoadedNetwork:
    """Build the ``network_def`` of a run or bundle folder's inference config and load its ``checkpoint`` (``weights_only``)."""

    parser, config_path = model_parser(model_dir)
    network = parsed(parser, "network_def", config_path)
    settings = {key: parsed(parser, key, config_path) for key in ("mode", "context", "output_mode", "checkpoint")}
    task = model_task(parsed(parser, "task", config_path) if "task" in parser else None, settings["output_mode"])
    load_weights(network, settings["checkpoint"])
    return LoadedNetwork(
        network=network.eval(),
        config=parser.get(),
        mode=str(settings["mode"]),
        context=int(settings["context"]),
        output_mode=task.target,
        divisor=spatial_divisor(network),
        task=task,
    )


def network_data_format(mode: str = "2.5d", context: int = 2, output_mode: str | None = None, divisor: int = 8, task: TaskSpec = None) -> dict[str, Any]:
    """The bundle metadata's ``network_data_format`` for a network built by :func:`pipeline.networks.build_network`.

    Input channels are the task's (BraTS: T1, T1ce, T2, FLAIR), ordered slice-major: in 2.5D,
    slices ``z-k .. z+k``, each with every channel (:func:`pipeline.training.loaders.stack_context`). Output
    channels are background and the task's classes (softmax) or its regions (``output_mode``
    ``regions``; ``None``: the task's target). Spatial sizes must be multiples of ``divisor``
    (the product of the strides) and leave more than one voxel per axis at the lowest level
    (instance normalisation needs it): ``2 * divisor * n`` satisfies both.
    """

    task = model_task(task, output_mode)
    names = [task.channel_name(channel) for channel in task.channels]
    if mode == "2.5d":
        offsets = [f"z{offset:+d}" if offset else "z" for offset in range(-context, context + 1)]
        channel_def = {str(index): f"{name}, slice {offset}" for index, (offset, name) in enumerate((o, n) for o in offsets for n in names)}
    else:
        channel_def = {str(index): name for index, name in enumerate(names)}
    spatial = [f"{2 * divisor}*n"] * (3 if mode == "3d" else 2)
    out_def = {str(index): name for index, name in enumerate(_output_names(task))}
    output_mode = task.target
    return {
        "inputs": {
            "image": {
                "type": "image",
                "format": "magnitude",
                "modality": "MR",
                "num_channels": input_channels(mode, context, task),
                "spatial_shape": spatial,
                "dtype": "float32",
                "value_range": [],
                "is_patch_data": mode == "3d",
                "channel_def": channel_def,
            }
        },
        "outputs": {
            "pred": {
                "type": "image",
                "format": "segmentation" if output_mode == "softmax" else "multilabel",
                "num_channels": output_channels(output_mode, task),
                "spatial_shape": spatial,
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": mode == "3d",
                "channel_def": out_def,
            }
        },
    }


def max_output_difference(reference: torch.nn.Module, exported: Any, inputs: torch.Tensor) -> float:
    """Largest absolute difference between the PyTorch network's logits and an export's (a TorchScript module or an ONNX file path)."""
    with torch.no_grad():
        expected = reference(inputs).numpy()
        if isinstance(exported, (str, os.PathLike)):
            import onnxruntime

            session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
            actual = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]
        else:
            actual = exported(inputs).numpy()
    if actual.shape != expected.shape:
        raise ConfigError("export", f"exported model returns shape {actual.shape}, PyTorch {expected.shape}")
    return float(np.abs(actual - expected).max())


def _metadata_file(root: Path) -> Path:
    own = root / METADATA
    return own if own.is_file() else BUNDLE_DIR / METADATA


def export_torchscript(loaded: LoadedNetwork, root: Path, out: Path) -> None:
    """Script the network with MONAI's ``ckpt_export``, metadata and config embedded."""
    from monai.bundle import ckpt_export

    with tempfile.TemporaryDirectory() as scratch:
        # ckpt_export loads a plain state_dict: hand it the weights as load_weights resolved them
        # (DDP / torch.compile prefixes and full training states unwrapped).
        weights = Path(scratch) / "model.pt"
        torch.save(loaded.network.state_dict(), weights)
        # the inference config as loaded (a run's derived one included), stored as config.json (as in the ONNX metadata)
        config = Path(scratch) / "config.json"
        config.write_text(json.dumps(loaded.config, default=str))
        ckpt_export(
            net_id="network_def",
            filepath=str(out),
            ckpt_file=str(weights),
            meta_file=str(_metadata_file(root)),
            config_file=str(config),
            bundle_root=str(root),
            **{"_meta_#network_data_format": network_data_format(loaded.mode, loaded.context, loaded.output_mode, loaded.divisor, loaded.task)},
        )


def bundle_metadata(loaded: LoadedNetwork, root: Path) -> dict[str, Any]:
    """The bundle's ``metadata.json`` with ``network_data_format`` describing ``loaded``'s network."""
    metadata = json.loads(_metadata_file(root).read_text())
    metadata["network_data_format"] = network_data_format(loaded.mode, loaded.context, loaded.output_mode, loaded.divisor, loaded.task)
    return metadata


def export_onnx(loaded: LoadedNetwork, root: Path, out: Path, opset_version: int = 18) -> None:
    """Export with ``torch.onnx.export`` (the ``torch.export`` path), dynamic batch and spatial sizes.

    The bundle metadata and the model's config are stored in the model's ``metadata_props``
    (keys ``metadata.json`` and ``config.json``).
    """
    import onnx
    from torch.export import Dim

    example = loaded.example_input(batch=2)
    axes = {0: Dim("batch", min=1, max=4096)}
    for axis, name in enumerate(("x", "y", "z")[: loaded.spatial_dims]):
        # sizes stay multiples of the divisor, as the network requires
        axes[axis + 2] = loaded.divisor * Dim(f"{name}_blocks", min=1, max=1024)
    network = copy.deepcopy(loaded.network).eval()
    try:
        torch.onnx.export(
            network,
            (example,),
            str(out),
            input_names=["image"],
            output_names=["logits"],
            dynamo=True,
            dynamic_shapes={next(iter(_forward_arguments(network))): axes},
            opset_version=opset_version,
            external_data=False,
        )
    except Exception as err:  # the exporter raises many error types
        raise ConfigError(out, f"ONNX export failed ({type(err).__name__}: {str(err).splitlines()[0][:300]})") from err
    model = onnx.load(str(out))
    onnx.helper.set_model_props(model, {"metadata.json": json.dumps(bundle_metadata(loaded, root)), "config.json": json.dumps(loaded.config, default=str)})
    onnx.save(model, str(out))  # atomic: `out` is in export_model's scratch folder, renamed into place there


def export_bundle_weights(loaded: LoadedNetwork, root: Path, bundle_dir: Path, tolerance: float = DEFAULT_TOLERANCE) -> tuple[Path, float]:
    """Install a run's weights as ``bundle_dir``'s ``models/model.pt`` and record their SHA-256; return the file and the output difference.

    Raises:
        ConfigError: the bundle's inference config builds a network the weights do not fit, or
            one whose outputs differ from the run's by more than ``tolerance``.
    """
    weights = Path(parsed(model_parser(root)[0], "checkpoint", root))
    parser, config_path = model_parser(bundle_dir)
    network = parsed(parser, "network_def", config_path)
    load_weights(network, weights)
    difference = max_output_difference(loaded.network, network.eval(), loaded.example_input(batch=2, multiple=2, seed=1))
    if not difference <= tolerance:
        raise ConfigError(config_path, f"builds a network whose outputs differ from {root}'s by {difference:.3g}: set its network keys as the run's")
    target = bundle_dir / "models" / "model.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as partial:
        shutil.copyfile(weights, partial)
    metadata_file = bundle_dir / "configs" / "metadata.json"
    metadata = json.loads(metadata_file.read_text())
    metadata[WEIGHTS_SHA256_KEY] = file_sha256(target)
    with atomic_path(metadata_file) as partial:  # the file's own key order kept (write_json sorts)
        partial.write_text(json.dumps(metadata, indent=4, ensure_ascii=False) + "\n")
    return target, difference


def _forward_arguments(network: torch.nn.Module) -> list[str]:
    import inspect

    return [name for name in inspect.signature(network.forward).parameters if name != "self"]


def export_model(
    model_dir: str | os.PathLike[str],
    format: str = "torchscript",
    out: str | os.PathLike[str] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ExportResult:
    """Export the trained network of a run or bundle folder and check it against PyTorch.

    Args:
        model_dir: a run folder (``inference.json`` + ``models/model.pt``) or a bundle folder
            (``configs/inference.yaml`` + ``models/model.pt``).
        format: ``torchscript`` (``models/model.ts``), ``onnx`` (``models/model.onnx``) or ``bundle``
            (the weights become a bundle's shipped ``models/model.pt``: :func:`export_bundle_weights`).
        out: the file to write (default: ``MODEL_DIR/models/model.ts`` or ``.onnx``); for ``bundle``
            the bundle folder (default: the repository's bundle).
        tolerance: the largest absolute logit difference accepted against PyTorch.

    Returns:
        The written file and its largest difference from the PyTorch network on a random input.

    Raises:
        ConfigError: an unknown format, a missing or unfitting config or checkpoint, a failed
            export, or outputs that differ by more than ``tolerance``.
    """
    if format not in FORMATS:
        raise ConfigError("format", f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    root = Path(model_dir)
    loaded = load_network(root)
    if format == "bundle":
        path, difference = export_bundle_weights(loaded, root, Path(out) if out is not None else BUNDLE_DIR, tolerance)
        return ExportResult(path=path, format=format, max_abs_difference=difference)
    target = Path(out) if out is not None else root / "models" / f"model{SUFFIXES[format]}"
    target.parent.mkdir(parents=True, exist_ok=True)
    # The exporters write in place: export into a scratch folder beside the target, then rename (atomic for readers).
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as scratch:
        partial = Path(scratch) / target.name
        if format == "torchscript":
            export_torchscript(loaded, root, partial)
            exported: Any = torch.jit.load(str(partial), map_location="cpu")
        else:
            export_onnx(loaded, root, partial)
            exported = partial
        difference = max_output_difference(loaded.network, exported, loaded.example_input(batch=3, multiple=2, seed=1))
        if not difference <= tolerance:
            raise ConfigError(target, f"exported outputs differ from PyTorch by {difference:.3g} (tolerance {tolerance:g})")
        os.replace(partial, target)
    return ExportResult(path=target, format=format, max_abs_difference=difference)
