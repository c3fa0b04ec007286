"""Checkpoints: their file names, weights-only loading, key matching, random states and the resume decision.

A run's ``models/`` folder holds two files::

    models/model.pt    KEPT: the kept weights (``keep_weights``: the final ones, their moving average,
                       or the best by the validation metric), a plain state_dict
    models/latest.pt   LATEST: the full training state after the last epoch (network, optimizer,
                       scheduler, AMP scaler, epoch, iteration, random states, best metric)

Every ``.pt`` file the package reads goes through :func:`load_checkpoint` (``weights_only=True``,
so a pickled object is refused and its code never runs); weights go into a network through
:func:`load_matching_state`, which names the first missing, unexpected or mismatching key.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.errors import ConfigError
from pipeline.core.io import atomic_path

__all__ = [
    "AS_TRAINING_STATE",
    "AS_WEIGHTS",
    "DEFAULT_EMA_DECAY",
    "DEFAULT_KEPT_WEIGHTS",
    "KEPT",
    "KEPT_WEIGHTS",
    "LATEST",
    "REFUSED_RUN_DIR",
    "check_ema_decay",
    "check_kept_weights",
    "decide_resume",
    "ema_state",
    "finished_epochs",
    "load_checkpoint",
    "load_matching_state",
    "load_training_state",
    "load_weights",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "state_dict_of",
    "unwrap",
]

#: The kept weights (a plain ``state_dict``) in a run's or bundle's ``models/`` folder.
KEPT = "model.pt"
#: The full training state after the last epoch, for resuming.
LATEST = "latest.pt"

#: What ``models/model.pt`` holds: the weights of the best validated epoch, the final weights, or
#: the exponential moving average of the weights over the training iterations.
KEPT_WEIGHTS: tuple[str, ...] = ("best", "last", "ema")
#: What it holds unless ``keep_weights`` says otherwise (configs/train.yaml sets the same).
DEFAULT_KEPT_WEIGHTS = "last"
#: The moving average's decay per training iteration under ``keep_weights: ema`` (configs/train.yaml sets the same).
DEFAULT_EMA_DECAY = 0.995


def check_kept_weights(keep: str) -> str:
    """``keep`` if it is one of :data:`KEPT_WEIGHTS`; otherwise the one-line config error."""
    if keep not in KEPT_WEIGHTS:
        raise ConfigError("keep_weights", f"choose one of {', '.join(KEPT_WEIGHTS)}, got {keep!r}")
    return keep


def check_ema_decay(decay: float) -> float:
    """``decay`` as a float if it lies strictly between 0 and 1; otherwise the one-line config error."""
    try:
        value = float(decay)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 < value < 1.0:
        raise ConfigError("ema_decay", f"the moving average's decay per iteration must lie between 0 and 1 (e.g. 0.995), got {decay!r}")
    return value

#: What a file is for, which decides the wording of its errors: plain weights or a training state.
AS_WEIGHTS, AS_TRAINING_STATE = "weights", "training state"
_UNREADABLE = {AS_WEIGHTS: "not a readable weights-only checkpoint", AS_TRAINING_STATE: "not a loadable checkpoint"}
_MISMATCH = {AS_WEIGHTS: "weights do not fit the network of the config", AS_TRAINING_STATE: "checkpoint does not match the configured network"}

#: Why a training run into a folder that already holds a checkpoint is refused.
REFUSED_RUN_DIR = "this run directory already holds a checkpoint; resume it (--resume) or choose another output folder"

_WRAPPER_PREFIXES = re.compile(r"^(module\.|_orig_mod\.)+")


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside ``DistributedDataParallel`` or ``torch.compile`` wrappers."""
    for attribute in ("module", "_orig_mod"):
        inner = getattr(network, attribute, None)
        if isinstance(inner, torch.nn.Module):
            return unwrap(inner)
    return network


def load_checkpoint(path: str | os.PathLike[str], role: str = AS_TRAINING_STATE) -> Any:
    """Load a ``.pt`` file with ``weights_only=True`` onto the CPU.

    Args:
        path: the file.
        role: :data:`AS_WEIGHTS` or :data:`AS_TRAINING_STATE`, for the wording of the error.

    Raises:
        ConfigError: naming the file when it is missing, truncated, corrupt or holds a pickled object.
    """
    source = Path(path)
    if not source.is_file():
        raise ConfigError(source, "checkpoint not found")
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and weights-only errors all mean an unusable file
        first_line = (str(err).strip().splitlines() or [""])[0][:200]  # torch's messages run over many lines
        raise ConfigError(source, f"{_UNREADABLE[role]} ({type(err).__name__}: {first_line})") from err


def state_dict_of(payload: Any, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The network weights in a loaded checkpoint, with ``DistributedDataParallel``/``torch.compile`` key prefixes removed.

    Accepts a plain ``state_dict`` and a full training state holding the weights under ``model``,
    ``network`` or ``state_dict``.

    Raises:
        ConfigError: the payload holds no ``state_dict`` of tensors.
    """
    state = payload
    if isinstance(state, Mapping):
        for key in ("model", "network", "state_dict"):
            if key in state and isinstance(state[key], Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(path, "does not hold a state_dict of tensors")
    return {_WRAPPER_PREFIXES.sub("", key): value for key, value in state.items()}


def load_matching_state(
    network: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike[str], role: str = AS_TRAINING_STATE
) -> torch.nn.Module:
    """Load ``state_dict`` into ``network`` (unwrapped), or raise naming the first missing, unexpected or mismatching key.

    Args:
        network: the configured network (DDP or compiled wrappers are unwrapped).
        state_dict: the weights, keys with or without wrapper prefixes.
        path: the file they came from (named in the error).
        role: :data:`AS_WEIGHTS` or :data:`AS_TRAINING_STATE`, for the wording of the error.

    Raises:
        ConfigError: the keys or tensor shapes differ from the network's.
    """
    target = unwrap(network)
    state = {_WRAPPER_PREFIXES.sub("", key): value for key, value in state_dict.items()}
    expected = target.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key!r} has shape {tuple(state[key].shape)} in the checkpoint but {tuple(value.shape)} in the network"
        for key, value in expected.items()
        if key in state and tuple(state[key].shape) != tuple(value.shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) (e.g. {missing[0]!r})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) (e.g. {unexpected[0]!r})")
    if mismatched:
        parts.append(f"{len(mismatched)} shape mismatch(es) (e.g. {mismatched[0]})")
    if parts:
        raise ConfigError(path, f"{_MISMATCH[role]}: " + "; ".join(parts))
    target.load_state_dict(state)
    return network


def load_weights(network: torch.nn.Module, path: str | os.PathLike[str]) -> torch.nn.Module:
    """Load a checkpoint's weights (``weights_only=True``) into ``network`` and return it.

    Accepts the keys of a ``DistributedDataParallel`` (``module.``) or ``torch.compile``
    (``_orig_mod.``) network, and a full training state holding the weights under ``model``,
    ``network`` or ``state_dict``.

    Raises:
        ConfigError: naming the file when it is missing, unreadable or corrupt, or when its keys
            or tensor shapes do not match the network built from the config.
    """
    state = state_dict_of(load_checkpoint(path, AS_WEIGHTS), path)
    return load_matching_state(network, state, path, AS_WEIGHTS)


def load_training_state(path: str | os.PathLike[str], network: torch.nn.Module | None = None) -> dict[str, Any]:
    """Load a full training state (:data:`LATEST`) and, given ``network``, load its weights into it.

    Raises:
        ConfigError: the file is missing or unloadable, holds no ``network`` state, or does not
            match ``network``.
    """
    state = load_checkpoint(path, AS_TRAINING_STATE)
    if not isinstance(state, dict) or not isinstance(state.get("network"), dict):
        raise ConfigError(path, "not a training checkpoint (no 'network' state)")
    if network is not None:
        load_matching_state(network, state["network"], path, AS_TRAINING_STATE)
    return state


def ema_state(state: Mapping[str, Any], path: str | os.PathLike[str]) -> dict[str, Any]:
    """The moving average of the weights in a loaded training state (``keep_weights: ema``).

    Raises:
        ConfigError: naming the file when the state holds none (it was trained keeping other weights).
    """
    average = state.get("ema")
    if not isinstance(average, dict):
        raise ConfigError(path, "holds no moving average of the weights to resume: it was trained without keep_weights: ema")
    return average


def save_checkpoint(payload: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``payload`` with ``torch.save``, atomically."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def rng_state() -> dict[str, Any]:
    """The Python, NumPy and torch random states, in tensors and plain types that ``weights_only`` loading accepts."""
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": {"version": py_version, "state": torch.tensor(py_internal, dtype=torch.int64), "gauss": py_gauss},
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": np_pos, "has_gauss": np_has_gauss, "gauss": np_gauss},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state((nps["name"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"], nps["gauss"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def finished_epochs(ckpt_dir: str | os.PathLike[str]) -> int:
    """Epochs recorded in ``ckpt_dir``'s :data:`LATEST` (0 when there is none)."""
    latest = Path(ckpt_dir) / LATEST
    if not latest.is_file():
        return 0
    return int(load_training_state(latest).get("epoch", 0))


def decide_resume(ckpt_dir: str | os.PathLike[str], resume: bool, same_configuration: bool = False) -> bool:
    """Whether a training run continues from ``ckpt_dir``'s :data:`LATEST` or starts afresh.

    Args:
        ckpt_dir: the run's checkpoint folder.
        resume: resuming was asked for (``--resume``): the checkpoint must then exist and load.
        same_configuration: the run folder holds a run of exactly this configuration (the same
            command run again), which resumes by itself.

    Raises:
        ConfigError: the folder holds a checkpoint of another run and resuming was not asked for.
    """
    latest = Path(ckpt_dir) / LATEST
    if resume or not latest.exists():
        return bool(resume)
    if same_configuration:
        return True
    raise ConfigError(latest, REFUSED_RUN_DIR)
