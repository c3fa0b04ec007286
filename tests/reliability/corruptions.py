"""Ways to damage one tiny BraTS 2021 case, and the checks every failed command must pass.

Each corruption takes a case folder (``<root>/<case_id>/<case_id>_{t1,t1ce,t2,flair,seg}.nii.gz``)
and returns the file it damaged, which the error message must name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import nibabel as nib
import numpy as np

from pipeline.io import file_sha256


def modality_file(case_dir: Path, suffix: str) -> Path:
    """The file of one modality (``t1``, ``t1ce``, ``t2``, ``flair``) or ``seg`` of a BraTS 2021 case folder."""
    return case_dir / f"{case_dir.name}_{suffix}.nii.gz"


def rewrite(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Replace a NIfTI file's voxels (and optionally its affine), keeping the rest of its header."""
    original = nib.load(path)
    header = original.header.copy()
    header.set_data_dtype(data.dtype)
    affine = original.affine if affine is None else affine
    image = nib.Nifti1Image(data, affine, header=header)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    path.unlink()
    nib.save(image, path)
    return path


def voxels(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def missing_modality(case_dir: Path) -> Path:
    path = modality_file(case_dir, "flair")
    path.unlink()
    return path


def shape_mismatch(case_dir: Path) -> Path:
    path = modality_file(case_dir, "t2")
    return rewrite(path, np.ascontiguousarray(voxels(path)[:-2]))


def affine_mismatch(case_dir: Path) -> Path:
    path = modality_file(case_dir, "t2")
    affine = nib.load(path).affine.copy()
    affine[0, 3] += 2.0  # 2 mm shift: far beyond the 0.001 mm tolerance
    return rewrite(path, voxels(path), affine)


def four_d(case_dir: Path) -> Path:
    path = modality_file(case_dir, "t1")
    volume = voxels(path)
    return rewrite(path, np.stack([volume, volume], axis=-1))


def _with_value(case_dir: Path, value: float) -> Path:
    path = modality_file(case_dir, "t1ce")
    volume = voxels(path).astype(np.float32)
    volume[volume.shape[0] // 2, volume.shape[1] // 2, volume.shape[2] // 2] = value
    return rewrite(path, volume)


def nan_voxels(case_dir: Path) -> Path:
    return _with_value(case_dir, np.nan)


def inf_voxels(case_dir: Path) -> Path:
    return _with_value(case_dir, np.inf)


def all_zero_modality(case_dir: Path) -> Path:
    path = modality_file(case_dir, "t2")
    return rewrite(path, np.zeros_like(voxels(path)))


def truncated(case_dir: Path) -> Path:
    path = modality_file(case_dir, "flair")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def not_nifti(case_dir: Path) -> Path:
    path = modality_file(case_dir, "t1")
    path.write_bytes(b"case notes, not an image\n" * 20)
    return path


def seg_unknown_labels(case_dir: Path) -> Path:
    path = modality_file(case_dir, "seg")
    seg = voxels(path).copy()
    seg[seg == 4] = 3  # BraTS 2017-2021 has no label 3
    seg.flat[0] = 3
    return rewrite(path, seg)


def seg_other_shape(case_dir: Path) -> Path:
    path = modality_file(case_dir, "seg")
    return rewrite(path, np.ascontiguousarray(voxels(path)[:, :-3]))


def unreadable(case_dir: Path) -> Path:
    """Make the T1 file unreadable: ``chmod 000``, which only works when not running as root (see :func:`deny_reads_as_root`)."""
    path = modality_file(case_dir, "t1")
    path.chmod(0)
    return path


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def deny_reads_as_root(monkeypatch, path: Path) -> None:
    """Make ``open`` raise ``PermissionError`` for ``path``, as ``chmod 000`` does for a user other than root.

    Root reads any file whatever its mode, so the permission check is simulated where every
    reader (nibabel, gzip, plain ``open``) ends up: ``builtins.open`` and ``io.open``.
    """
    import builtins
    import io

    target = str(path.resolve())
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.realpath(os.fspath(file)) == target:
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)


#: Data corruptions: name -> (damage, words the one-line error must contain besides the file name).
IMAGE_CORRUPTIONS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing_modality": (missing_modality, r"missing|not found"),
    "shape_mismatch": (shape_mismatch, r"shape"),
    "affine_mismatch": (affine_mismatch, r"affine"),
    "4d_instead_of_3d": (four_d, r"3D"),
    "nan_voxels": (nan_voxels, r"NaN"),
    "inf_voxels": (inf_voxels, r"infinit"),
    "all_zero_modality": (all_zero_modality, r"entirely zero"),
    "truncated_gz": (truncated, r"truncated|damaged"),
    "not_nifti": (not_nifti, r"not a (readable )?NIfTI"),
    "unreadable": (unreadable, r"Permission denied"),
}
SEG_CORRUPTIONS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "seg_unknown_labels": (seg_unknown_labels, r"labels? \[?3\]? .*(not in|convention)|convention"),
    "seg_other_shape": (seg_other_shape, r"shape"),
}


def damage(case_dir: Path, name: str, monkeypatch) -> tuple[Path, str]:
    """Apply corruption ``name`` to a case; returns the damaged file and the expected problem pattern."""
    corrupt, pattern = {**IMAGE_CORRUPTIONS, **SEG_CORRUPTIONS}[name]
    path = corrupt(case_dir)
    if name == "unreadable" and running_as_root():
        path.chmod(0o644)
        deny_reads_as_root(monkeypatch, path)
    return path, pattern


# ----------------------------------------------------------------------------- checks


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
    """Temporary files of :func:`pipeline.io.atomic_path` (``.<name>.<random>.tmp``) left under ``folders``."""
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
