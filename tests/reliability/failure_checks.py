"""Checks every failed or interrupted command must pass: one-line errors, untouched inputs, no leftover temporaries."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from pipeline.core.io import file_sha256


def checksums(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, by relative path (unreadable files are read as root or skipped)."""
    sums = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            sums[path.relative_to(root).as_posix()] = file_sha256(path)
        except PermissionError:
            sums[path.relative_to(root).as_posix()] = "unreadable"
    return sums


def assert_one_line_error(output: str, path: Path | str, pattern: str) -> str:
    """The command reported exactly one ``error: <path>: <problem>`` line, naming ``path`` and matching ``pattern``, and no traceback."""
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    line = errors[0]
    following = output.splitlines()[output.splitlines().index(line) + 1 :]
    for extra in following:  # only a list of further problems, each "<file>: <reason>", and their count may follow
        assert re.match(r"(/\S.*: \S|\d+ problem\(s\) in )", extra), f"the message goes on over several lines:\n{output}"
    assert str(path) in line, f"{path} not named in: {line}"
    assert re.search(pattern, line.split(str(path), 1)[1]), f"{pattern!r} not in: {line}"
    return line


def leftover_temporaries(*folders: Path) -> list[Path]:
    """Temporary files of :func:`pipeline.core.io.atomic_path` (``.<name>.<random>.tmp``) left under ``folders``."""
    found = []
    for folder in folders:
        if folder.exists():
            found += [p for p in folder.rglob("*") if p.name.startswith(".") and ".tmp" in p.name]
    return found


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def same_files(first: Path, second: Path, names: Iterable[str] | None = None) -> None:
    """Every file under ``first`` (or the listed relative names) has the same bytes under ``second``."""
    relative = sorted(names) if names is not None else sorted(p.relative_to(first).as_posix() for p in files_under(first))
    assert relative, f"nothing to compare under {first}"
    for name in relative:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
