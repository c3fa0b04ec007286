"""Ways to damage one tiny BraTS 2021 case (written by :mod:`case_writers` or the synthetic cohort).

Each corruption takes a case folder (``<root>/<case_id>/<case_id>_{t1,t1ce,t2,flair,seg}.nii.gz``)
and returns the file it damaged, which the error message must name. The checks a failed command
must then pass are in :mod:`failure_checks`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from case_writers import case_file, write_nifti


def rewrite(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Replace a NIfTI file's voxels (and optionally its affine), keeping the rest of its header."""
    original = nib.load(path)
    affine = original.affine if affine is None else affine
    path.unlink()
    return write_nifti(path, data, affine, header=original.header)


def voxels(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def missing_modality(case_dir: Path) -> Path:
    path = case_file(case_dir, "flair")
    path.unlink()
    return path


def shape_mismatch(case_dir: Path) -> Path:
    path = case_file(case_dir, "t2")
    return rewrite(path, np.ascontiguousarray(voxels(path)[:-2]))


def affine_mismatch(case_dir: Path) -> Path:
    path = case_file(case_dir, "t2")
    affine = nib.load(path).affine.copy()
    affine[0, 3] += 2.0  # 2 mm shift: far beyond the 0.001 mm tolerance
    return rewrite(path, voxels(path), affine)


def four_d(case_dir: Path) -> Path:
    path = case_file(case_dir, "t1")
    volume = voxels(path)
    return rewrite(path, np.stack([volume, volume], axis=-1))


def _with_value(case_dir: Path, value: float) -> Path:
    path = case_file(case_dir, "t1ce")
    volume = voxels(path).astype(np.float32)
    volume[volume.shape[0] // 2, volume.shape[1] // 2, volume.shape[2] // 2] = value
    return rewrite(path, volume)


def nan_voxels(case_dir: Path) -> Path:
    return _with_value(case_dir, np.nan)


def inf_voxels(case_dir: Path) -> Path:
    return _with_value(case_dir, np.inf)


def all_zero_modality(case_dir: Path) -> Path:
    path = case_file(case_dir, "t2")
    return rewrite(path, np.zeros_like(voxels(path)))


def truncated(case_dir: Path) -> Path:
    path = case_file(case_dir, "flair")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def not_nifti(case_dir: Path) -> Path:
    path = case_file(case_dir, "t1")
    path.write_bytes(b"case notes, not an image\n" * 20)
    return path


def seg_unknown_labels(case_dir: Path) -> Path:
    path = case_file(case_dir, "seg")
    seg = voxels(path).copy()
    seg[seg == 4] = 3  # BraTS 2017-2021 has no label 3
    seg.flat[0] = 3
    return rewrite(path, seg)


def seg_other_shape(case_dir: Path) -> Path:
    path = case_file(case_dir, "seg")
    return rewrite(path, np.ascontiguousarray(voxels(path)[:, :-3]))


def unreadable(case_dir: Path) -> Path:
    """Make the T1 file unreadable: ``chmod 000``, which only works when not running as root (see :func:`deny_reads_as_root`)."""
    path = case_file(case_dir, "t1")
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
