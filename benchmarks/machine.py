"""The hardware and software a benchmark ran on, a short name for its results file and writing it, the device check and a process's peak memory."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from pipeline.core.errors import ConfigError
from pipeline.core.io import write_json, write_text

#: Dense bf16 tensor-core peak (FLOP/s) by GPU name fragment, most specific first (vendor data sheets).
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM
    ("H200", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10", 125e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
)


def cpu_model() -> str:
    """The CPU model name as ``lscpu`` reports it (``/proc/cpuinfo`` or the platform as fallbacks)."""
    try:
        listing = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, timeout=10).stdout
        match = re.search(r"^Model name:\s*(.+)$", listing, re.MULTILINE)
        if match:
            return match.group(1).strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/cpuinfo") as info:
            match = re.search(r"^model name\s*:\s*(.+)$", info.read(), re.MULTILINE)
            if match:
                return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def memory_gib() -> float | None:
    """Total memory of the machine in GiB (Linux), else ``None``."""
    try:
        with open("/proc/meminfo") as info:
            match = re.search(r"^MemTotal:\s*(\d+) kB", info.read(), re.MULTILINE)
        return round(int(match.group(1)) / 2**20, 1) if match else None
    except OSError:
        return None


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB, since it started its program.

    ``VmHWM`` of ``/proc/self/status`` (Linux): unlike ``getrusage``'s ``ru_maxrss``, which after an
    ``exec`` still holds the launching process's peak, it counts only this program's memory.
    Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as status:
            match = re.search(r"^VmHWM:\s*(\d+) kB", status.read(), re.MULTILINE)
        if match:
            return int(match.group(1)) / 1024
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe_machine(device: str = "cpu") -> dict[str, Any]:
    """Hardware and package versions, with the GPU's name and memory when ``device`` is ``cuda``."""
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_cores": cpu_cores(),
        "memory_gib": memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "monai": _version("monai"),
        "numpy": _version("numpy"),
        "nibabel": _version("nibabel"),
        "gpu": None,
    }
    if device == "cuda" and torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        info["gpu"] = {
            "name": properties.name,
            "memory_gib": round(properties.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
            "peak_bf16_tflops": (peak_bf16_flops(properties.name) or 0) / 1e12 or None,
        }
    return info


def machine_name(info: dict[str, Any]) -> str:
    """A short file-name-safe name: the GPU (when used) or the CPU model, and the core count, e.g. ``amd-epyc-2c``."""
    gpu = info.get("gpu")
    model = gpu["name"] if gpu else info["cpu_model"]
    model = re.sub(r"\((R|TM|tm|r)\)|\bCPU\b|\bProcessor\b|@.*$|\b\d+-Core\b", " ", model)
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-") or "unknown"
    return f"{slug[:40].rstrip('-')}-{info['cpu_cores']}c"


def peak_bf16_flops(gpu_name: str) -> float | None:
    """The dense bf16 peak of a GPU from :data:`PEAK_BF16_FLOPS`, ``None`` for an unlisted GPU."""
    for fragment, flops in PEAK_BF16_FLOPS:
        if fragment.lower() in gpu_name.lower():
            return flops
    return None


def check_device(device: str) -> None:
    """Raise a :class:`ConfigError` for an unknown device, or ``cuda`` without a usable GPU."""
    if device not in ("cpu", "cuda"):
        raise ConfigError("--device", f"unknown device {device!r}; choose cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device",
            f"cuda requested but no CUDA GPU is usable (torch {torch.__version__}, built with CUDA "
            f"{torch.version.cuda or 'none'}); run on a GPU machine with a CUDA build of PyTorch (make install TORCH_SPEC=torch)",
        )


def write_results(report: dict[str, Any], path: Path, table: str) -> None:
    """Write a benchmark's report as JSON and its markdown table beside it (same stem), print the table and name the file on stderr."""
    write_json(path, report)
    write_text(path.with_suffix(".md"), table)
    print(table)
    print(f"results: {path}", file=sys.stderr)
