"""The inference config of a trained model, found the same way in a bundle folder and a run folder.

The bundle's ``configs/inference.yaml`` is the one definition of a trained model's inference:
network (``network_def``), whole-volume inferer (``inferer``), post-processing
(``postprocessing``, a :class:`pipeline.inference.postprocess.PostProcessing`) and the model that ties them
to the weights (``model``, a :class:`pipeline.inference.model.SegmentationModel`). Every consumer
(:func:`pipeline.inference.model.load_model`, ``predict``, ``evaluate``, ``export`` and
``python -m monai.bundle run inference|evaluating``) instantiates these components::

    BUNDLE/configs/inference.yaml   a bundle folder (weights: BUNDLE/models/model.pt or model.ts)
    RUN_DIR/inference.json          a run folder: written by training, inference.yaml with the run's
                                    network and inference keys (TRAINED_KEYS) and its own checkpoint;
                                    its postprocessing may be set later, chosen on the run's folds
                                    (pipeline.evaluation.postprocess_tuning, write_run_postprocessing)
    RUN_DIR/config.json             a run folder trained before runs carried inference.json: the same
                                    inference config is derived from its training config on load

A run's ``task`` (:mod:`pipeline.tasks.task`) is one of its trained keys: training sets it to the task
mapping (the data list's, :func:`pipeline.training.workflow.set_run_task`) before writing ``config.json``
and ``inference.json``; a run folder whose training config holds no task predicts the BraTS
glioma task (a null task is the default task).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipeline.core.errors import ConfigError, PipelineError, unwrap_pipeline_errors
from pipeline.core.io import file_sha256, write_json
from pipeline.core.paths import BUNDLE_DIR
from pipeline.inference.postprocess import PostProcessing, task_postprocessing

__all__ = [
    "BUNDLE_CONFIG",
    "INFERENCE_CONFIG",
    "RUN_CONFIG",
    "RUN_INFERENCE_CONFIG",
    "TRAINED_KEYS",
    "WEIGHTS_SHA256_KEY",
    "check_bundle_weights",
    "model_config",
    "model_parser",
    "parsed",
    "run_inference_config",
    "run_training_setting",
    "write_run_inference_config",
    "write_run_postprocessing",
]

#: The bundle shipped with the repository and its inference config.
INFERENCE_CONFIG = BUNDLE_DIR / "configs" / "inference.yaml"

#: A run folder's training config and inference config, and a bundle folder's inference config.
RUN_CONFIG = "config.json"
RUN_INFERENCE_CONFIG = "inference.json"
#: The key of a bundle's ``configs/metadata.json`` that records the SHA-256 of its ``models/model.pt``.
WEIGHTS_SHA256_KEY = "model_sha256"
BUNDLE_CONFIG = Path("configs") / "inference.yaml"

#: The keys of ``inference.yaml`` a training run decides: its network and whole-volume inference.
TRAINED_KEYS: tuple[str, ...] = (
    "task", "mode", "context", "output_mode", "network_name", "channels", "strides", "num_res_units", "dropout", "norm", "init_filters", "deep_supervision",
    "roi_size", "sw_batch_size", "overlap", "tta", "network_def",
)  # fmt: skip


def _read(path: Path) -> dict[str, Any]:
    from monai.bundle import ConfigParser

    try:
        config = ConfigParser.load_config_file(str(path))
    except Exception as err:  # json/yaml errors
        raise ConfigError(path, f"cannot read config: {err}") from err
    if not isinstance(config, dict):
        raise ConfigError(path, "not a config mapping")
    return config


def run_inference_config(training: Any, run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``inference.yaml`` with a training run's :data:`TRAINED_KEYS` (its task mapping included) and the run folder as ``bundle_root``.

    Args:
        training: the run's training config (a ``ConfigParser`` or a raw config mapping).
        run_dir: the run folder (its ``models/model.pt`` becomes the checkpoint).

    Returns:
        A raw config mapping (JSON-serialisable): expressions of the training config, such as
        ``gpu_train.yaml``'s, are resolved to their values; ``network_def`` is copied as written.
    """
    from monai.bundle import ConfigParser

    parser = training if isinstance(training, ConfigParser) else ConfigParser(dict(training))
    config = _read(INFERENCE_CONFIG)
    config["bundle_root"] = str(Path(run_dir).absolute())
    for key in TRAINED_KEYS:
        if key not in parser:
            continue
        try:
            value = parser.get(key) if key == "network_def" else parser.get_parsed_content(key, instantiate=False)
            config[key] = json.loads(json.dumps(value))
        except Exception as err:  # MONAI wraps every parse failure in its own error types
            raise ConfigError(Path(run_dir) / RUN_CONFIG, f"cannot read {key!r} of the training config: {err}") from err
    config["postprocessing"] = _task_postprocessing(config.get("postprocessing"), config.get("task"))
    return config


def _task_postprocessing(component: Any, task: Any) -> Any:
    """The task's own default post-processing where it declares one (Kaggle LGG: the largest tumour component), else the bundle's restricted to the structures the run's task has (none left for a task without them)."""

    if not isinstance(component, dict):
        return component
    declared = task_postprocessing(task)
    if declared is not None:
        return {"_target_": component["_target_"], **{key: value for key, value in declared.to_config().items() if value}, "task": "@task"}
    if PostProcessing.from_config(component).fits(task):
        return component
    kept = PostProcessing.from_config(component).restricted_to(task)
    settings = {
        "min_component_voxels": {name: voxels for name, voxels in kept.min_component_voxels.items() if voxels},
        "keep_largest": list(kept.keep_largest),
        "min_et_voxels": kept.min_et_voxels,
        "connectivity": component.get("connectivity"),
    }
    return {"_target_": component["_target_"], **{key: value for key, value in settings.items() if value}}


def write_run_inference_config(training: Any, run_dir: str | os.PathLike[str]) -> Path:
    """Write ``RUN_DIR/inference.json`` (:func:`run_inference_config`, atomically) and return its path."""

    path = Path(run_dir) / RUN_INFERENCE_CONFIG
    write_json(path, run_inference_config(training, run_dir))
    return path


def run_training_setting(run_dir: str | os.PathLike[str], key: str) -> Any:
    """The value of ``key`` in a run folder's training config (``RUN_DIR/config.json``), expressions resolved.

    Raises:
        ConfigError: naming the file when the folder has no training config or the key is absent.
    """
    from monai.bundle import ConfigParser

    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise ConfigError(Path(run_dir), f"not a run folder: no {RUN_CONFIG} to take its {key!r} from")
    parser = ConfigParser(_read(path))
    if key not in parser:
        raise ConfigError(path, f"the training config has no {key!r}")
    try:
        return parser.get_parsed_content(key, instantiate=False)
    except Exception as err:  # MONAI wraps every parse failure in its own error types
        raise ConfigError(path, f"cannot read {key!r} of the training config: {err}") from err


def write_run_postprocessing(run_dir: str | os.PathLike[str], postprocessing: dict[str, Any], record: dict[str, Any]) -> Path:
    """Set the ``postprocessing`` component of ``RUN_DIR/inference.json`` (atomically) and return its path.

    A run trained before runs carried ``inference.json`` gets one, derived from its ``config.json``.
    The replaced component is kept in the file, under ``postprocessing_tuning.previous``, next to
    ``record`` (what chose the new one).

    Args:
        run_dir: the run folder.
        postprocessing: the new component (``_target_`` and its arguments).
        record: provenance of the choice, stored as ``postprocessing_tuning``.

    Raises:
        ConfigError: naming the folder when it is not a run folder (a bundle folder is not rewritten).
    """

    root = Path(run_dir)
    path = root / RUN_INFERENCE_CONFIG
    if path.is_file():
        config = _read(path)
    elif (root / RUN_CONFIG).is_file():
        config = run_inference_config(_read(root / RUN_CONFIG), root)
    else:
        raise ConfigError(root, f"not a run folder: neither {RUN_INFERENCE_CONFIG} nor {RUN_CONFIG}")
    previous = config.get("postprocessing")
    if isinstance(previous, dict):  # a plain copy: nothing instantiates it
        previous = {key: value for key, value in previous.items() if key != "_target_"}
    config["postprocessing"] = dict(postprocessing)
    config["postprocessing_tuning"] = {**record, "previous": previous}
    write_json(path, config)
    return path


def model_config(model_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], Path]:
    """The inference config of a run or bundle folder, and the file it came from.

    Raises:
        ConfigError: naming the folder when it is neither a run folder nor a bundle folder, or the
            config file when it cannot be read.
    """
    root = Path(model_dir)
    if not root.is_dir():
        raise ConfigError(root, "model folder not found" if not root.exists() else "expected a run or bundle folder")
    for candidate in (root / RUN_INFERENCE_CONFIG, root / BUNDLE_CONFIG):
        if candidate.is_file():
            return _read(candidate), candidate
    if (root / RUN_CONFIG).is_file():  # a run trained before runs wrote inference.json
        return run_inference_config(_read(root / RUN_CONFIG), root), root / RUN_CONFIG
    raise ConfigError(root, f"neither a run folder ({RUN_INFERENCE_CONFIG} or {RUN_CONFIG}) nor a bundle folder ({BUNDLE_CONFIG.as_posix()})")


def model_parser(model_dir: str | os.PathLike[str], **overrides: Any) -> tuple[Any, Path]:
    """A ``ConfigParser`` over a folder's inference config with ``bundle_root`` set to the folder, and the config file.

    Args:
        model_dir: a run or bundle folder.
        overrides: config keys (``#``-separated ids) set after loading.
    """
    from monai.bundle import ConfigParser

    root = Path(model_dir)
    config, path = model_config(root)
    if "network_def" not in config:
        raise ConfigError(path, "config has no 'network_def'")
    parser = ConfigParser(config)
    parser["bundle_root"] = str(root)
    for key, value in overrides.items():
        parser[key] = value
    return parser, path


def parsed(parser: Any, key: str, where: str | os.PathLike[str]) -> Any:
    """``parser.get_parsed_content(key)``; a failure is a :class:`ConfigError` naming ``where`` (a pipeline error passes through)."""

    try:
        with unwrap_pipeline_errors():
            return parser.get_parsed_content(key)
    except PipelineError:
        raise
    except Exception as err:  # MONAI wraps every parse failure in its own error types
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(where, f"cannot build {key!r}: {first_line}") from err


def check_bundle_weights(bundle_dir: str | os.PathLike[str], checkpoint: str | os.PathLike[str]) -> None:
    """Check a bundle's own ``models/model.pt`` against the SHA-256 its ``configs/metadata.json`` records (nothing recorded: nothing to check).

    Raises:
        ConfigError: naming the weights file when its hash differs (a Git LFS pointer, a truncated
            download, or weights replaced without updating the metadata).
    """
    root, weights = Path(bundle_dir), Path(checkpoint)
    metadata = root / "configs" / "metadata.json"
    if not metadata.is_file() or weights.resolve() != (root / "models" / "model.pt").resolve():
        return
    expected = _read(metadata).get(WEIGHTS_SHA256_KEY)
    if expected and file_sha256(weights) != expected:
        raise ConfigError(weights, f"its SHA-256 differs from the {WEIGHTS_SHA256_KEY} recorded in {metadata} (a Git LFS pointer, a damaged copy, or weights replaced without recording their hash)")
