"""Which cases belong to shard K of N, and the ``torch.distributed`` process group of a sharded run.

One rule splits a run's cases over machines (``--shard K/N`` of ``predict``, ``evaluate`` and
``preprocess``) and over the processes ``torchrun`` starts: the cases are sorted by id and shard
``K`` (1-based, ``1 <= K <= N``) takes every N-th of them starting at the K-th
(:func:`shard_positions`). Each shard keeps its cases in the run's own order.

Under ``torchrun`` (``WORLD_SIZE`` > 1) :func:`process_group` joins PyTorch's process group and
gives rank ``r`` shard ``r + 1`` of the world size; rank 0 gathers the others' results
(``all_gather_object``) and writes the run's reports. A plain ``--shard`` run instead writes its
part to ``OUT/shards/K-of-N.json`` (:func:`write_shard`); :func:`read_shards` checks that all N
parts are there and agree, and ``brats-pipeline merge-shards`` (:mod:`pipeline.evaluation.shard_merge`) writes the full reports from them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import ConfigError, InputError
from pipeline.core.io import write_text

__all__ = [
    "SHARDS_DIR",
    "Shard",
    "gather_to_all",
    "is_rank_zero",
    "local_device",
    "process_group",
    "rank_shard",
    "read_shards",
    "shard_conventions",
    "shard_devices",
    "shard_file",
    "shard_positions",
    "world_size",
    "write_shard",
]

#: Where a ``--shard`` run of ``predict`` or ``evaluate`` writes its part (``K-of-N.json``).
SHARDS_DIR = "shards"

_SHARD_FILE = re.compile(r"^(\d+)-of-(\d+)\.json$")


@dataclass(frozen=True)
class Shard:
    """Shard ``number`` (1-based) of ``count``.

    Args:
        number: which shard, 1 to ``count``.
        count: how many shards the cases are split into.
    """

    number: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.number <= self.count:
            raise ConfigError("--shard", f"{self.number}/{self.count}: K must be 1 to N, e.g. 1/4 ... 4/4")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"2/4"`` -> ``Shard(2, 4)``; anything else is a :class:`ConfigError` naming ``--shard``."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match:
            raise ConfigError("--shard", f"{text!r} is not K/N (shard K of N, 1-based, e.g. 1/4 ... 4/4)")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.number}/{self.count}"


def shard_positions(case_ids: Sequence[str], shard: Shard | None) -> list[int]:
    """The positions in ``case_ids`` of shard ``shard``'s cases, in their order (all positions without a shard).

    Cases sorted by id, every ``count``-th from the ``number``-th: the same cases whatever order
    the list gives them in, and shards that differ by at most one case.
    """
    if shard is None:
        return list(range(len(case_ids)))
    by_id = sorted(range(len(case_ids)), key=lambda position: case_ids[position])
    return sorted(by_id[shard.number - 1 :: shard.count])


# ----------------------------------------------------------------------------- torchrun


def _launched_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _in_process_group() -> bool:
    if "torch" not in sys.modules:  # nothing can have joined one; keeps torch out of processes that need none
        return False
    import torch

    return torch.distributed.is_available() and torch.distributed.is_initialized()


def is_rank_zero() -> bool:
    """True outside a process group and on rank 0 within it."""
    shard = rank_shard()
    return shard is None or shard.number == 1


def world_size() -> int:
    """Number of processes in the process group (1 without one)."""
    shard = rank_shard()
    return 1 if shard is None else shard.count


def rank_shard() -> Shard | None:
    """This process's shard in an initialised process group (rank r of W: shard r + 1 of W); None outside one."""
    if not _in_process_group():
        return None
    import torch

    return Shard(torch.distributed.get_rank() + 1, torch.distributed.get_world_size())


def local_device(device: str) -> str:
    """``cuda`` under torchrun -> this process's GPU (``cuda:LOCAL_RANK``); any other device as given."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


@contextlib.contextmanager
def process_group(shard: Shard | None = None) -> Iterator[Shard | None]:
    """The shard this process works on: ``shard`` when given, its rank's under torchrun, else None (every case).

    Under torchrun the process group is joined (and left on exit) unless the caller already
    did; ``gloo`` serves on GPUs too, since only per-case results pass between ranks, never images.

    Raises:
        ConfigError: ``shard`` given under torchrun (the ranks already split the cases).
    """
    import torch

    joined = False
    if _launched_distributed() and not torch.distributed.is_available():
        raise ConfigError("torchrun", "this PyTorch build has no torch.distributed; run one process, or --shard K/N per process")
    if _launched_distributed() and not torch.distributed.is_initialized():
        if shard is not None:
            raise ConfigError("--shard", "not under torchrun: its processes already split the cases (one shard per rank)")
        torch.distributed.init_process_group(backend="gloo")
        joined = True
    elif shard is not None and rank_shard() is not None:
        raise ConfigError("--shard", "not under torchrun: its processes already split the cases (one shard per rank)")
    try:
        yield shard if shard is not None else rank_shard()
    finally:
        if joined:
            torch.distributed.destroy_process_group()


def gather_to_all(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (``[value]`` outside a process group)."""
    if rank_shard() is None:
        return [value]
    import torch

    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, value)
    return gathered


# ----------------------------------------------------------------------------- --shard files


def shard_file(out_dir: str | os.PathLike[str], shard: Shard) -> Path:
    """``OUT/shards/K-of-N.json``: what a ``--shard`` run of ``predict`` or ``evaluate`` writes besides its cases."""
    return Path(out_dir) / SHARDS_DIR / f"{shard.number}-of-{shard.count}.json"


def _plain(value: Any) -> Any:
    """``value`` with NumPy scalars as Python numbers, for JSON."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value.item() if isinstance(value, np.generic) else value


def write_shard(out_dir: str | os.PathLike[str], shard: Shard, kind: str, total: int, items: Sequence[tuple[int, Any]], **context: Any) -> Path:
    """Write shard ``shard``'s part of a run of ``kind`` (``predict`` or ``evaluate``): its (position, result) items and the run's context.

    Args:
        out_dir: the run's output folder.
        shard: which shard.
        kind: the command.
        total: how many cases the whole run has.
        items: (position among the run's cases, that case's result) of this shard's cases.
        context: what :func:`read_shards` requires every shard to agree on (model, data list, split...),
            except keys starting with ``shard_`` (this shard's own figures, e.g. seconds).
    """
    path = shard_file(out_dir, shard)
    payload = {"kind": kind, "shard": [shard.number, shard.count], "total": total, "items": [[p, r] for p, r in items], "context": context}
    write_text(path, json.dumps(_plain(payload), indent=1) + "\n")  # not write_json: its sorted keys would reorder the metric columns
    return path


def read_shards(out_dir: str | os.PathLike[str]) -> tuple[str, list[Any], list[dict[str, Any]]]:
    """Read every ``OUT/shards/K-of-N.json`` of one run and put the cases back in the run's order.

    Returns:
        The kind of run, every case's result in the run's order, and each shard's context (by shard number).

    Raises:
        InputError: no shard files, shards of different splits (N), a missing shard, or shards of
            different runs (kind, number of cases, context), or cases missing or held twice.
    """
    folder = Path(out_dir) / SHARDS_DIR
    found = sorted(folder.glob("*-of-*.json")) if folder.is_dir() else []
    numbered = {path: _SHARD_FILE.match(path.name) for path in found}
    counts = {int(match.group(2)) for match in numbered.values() if match}
    if not counts:
        raise InputError(folder, "no shard files (K-of-N.json); run predict or evaluate with --shard K/N first")
    if len(counts) > 1:
        raise InputError(folder, f"shard files of different splits ({', '.join(f'of {n}' for n in sorted(counts))}); keep one run's")
    count = counts.pop()
    payloads: dict[int, dict[str, Any]] = {}
    for path, match in numbered.items():
        if match:
            try:
                payloads[int(match.group(1))] = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise InputError(path, f"not a readable shard file ({err})") from None
    missing = [str(number) for number in range(1, count + 1) if number not in payloads]
    if missing:
        raise InputError(folder, f"shard(s) {', '.join(missing)} of {count} missing; run them with --shard K/{count} first")
    first = payloads[1]

    def shared(payload: dict[str, Any]) -> tuple[Any, ...]:
        context = {key: value for key, value in payload["context"].items() if not key.startswith("shard_")}
        return payload["kind"], payload["total"], context

    for number, payload in sorted(payloads.items()):
        if shared(payload) != shared(first):
            raise InputError(shard_file(out_dir, Shard(number, count)), "belongs to another run than shard 1 (model, cases or settings differ)")
    results: dict[int, Any] = {}
    for payload in payloads.values():
        for position, result in payload["items"]:
            if position in results:
                raise InputError(folder, f"case {position + 1} of the run is in two shards")
            results[position] = result
    if sorted(results) != list(range(first["total"])):
        raise InputError(folder, f"the shards hold {len(results)} of the run's {first['total']} cases")
    return first["kind"], [results[position] for position in range(first["total"])], [payloads[n]["context"] for n in range(1, count + 1)]


def shard_devices(contexts: Sequence[Mapping[str, Any]]) -> str:
    """The device(s) the shards ran on (their ``shard_device``), as a manifest records one: ``cpu`` or ``cuda:0, cpu``."""
    return ", ".join(dict.fromkeys(str(context["shard_device"]) for context in contexts))


def shard_conventions(contexts: Sequence[Mapping[str, Any]]) -> set[str]:
    """The label conventions the shards wrote (their ``shard_conventions``): one colour table each, written by the merge."""
    return {name for context in contexts for name in context["shard_conventions"]}
