"""Atomic writes and checked reads (NIfTI headers and volumes) shared by every stage.

Every file the pipeline produces is written under a temporary name in the same folder,
flushed to disk and then renamed, so an interrupted run never leaves a file that later
passes as complete.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from pipeline.core.errors import InputError, PipelineError

__all__ = [
    "IMAGE_2D_SUFFIXES",
    "atomic_path",
    "file_sha256",
    "load_nifti",
    "read_image_2d",
    "read_voxels",
    "save_image_2d",
    "save_nifti",
    "save_npy",
    "save_sitk",
    "write_json",
    "write_text",
    "written_by_running_process",
]


def _temporary_name_pattern(target: Path | None = None) -> re.Pattern[str]:
    """The names of :func:`atomic_path` temporaries of ``target`` (of any file without it); group 1: the writer's pid."""
    # ".NAME.PID.RANDOM.tmp": mkstemp's random part is 8 characters of [a-z0-9_]; the writer's pid
    # (absent in older temporaries); save_nifti and save_image_2d add the file's suffix. Any NAME is
    # matched lazily, so that a pid is read as the pid rather than as part of the name.
    name = re.escape(target.name) if target is not None else ".+?"
    return re.compile(rf"\.{name}\.(?:(\d+)\.)?[a-z0-9_]{{8}}\.tmp(\.nii(\.gz)?|(?i:\.png|\.jpe?g|\.tiff?))?")


def _process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _remove_stale_temporaries(target: Path) -> None:
    """Delete temporary files of ``target`` that a killed earlier write left behind (never the target itself).

    A temporary whose writer still runs (another process writing the same file) is left alone.
    """
    pattern = _temporary_name_pattern(target)
    with os.scandir(target.parent) as entries:
        for entry in entries:
            if pattern.fullmatch(entry.name) is None or not entry.is_file(follow_symlinks=False):
                continue
            if written_by_running_process(entry.name):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def written_by_running_process(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is the temporary file of an :func:`atomic_path` write whose process still runs."""
    match = _temporary_name_pattern().fullmatch(Path(path).name)
    return match is not None and match.group(1) is not None and _process_alive(int(match.group(1)))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    The caller writes the file at the yielded path. On error the temporary file is removed
    and ``path`` is left as it was; temporaries of ``path`` left by a killed earlier write are
    removed first (not those of a process still writing it). ``OSError`` (full disk, permissions) becomes a
    :class:`PipelineError` naming ``path``.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        blocking = next((folder for folder in target.parents if folder.exists()), None)
        if blocking is not None and not blocking.is_dir():
            raise PipelineError(target, f"cannot write: {blocking} is a file, not a folder") from err
        raise PipelineError(target, f"cannot write: {err.strerror or err}") from err
    try:
        _remove_stale_temporaries(target)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as err:
        raise PipelineError(target, f"cannot write: {err.strerror or err}") from err
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp creates 0600; outputs get the usual permissions
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise PipelineError(target, f"cannot write: {err.strerror or err}") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Write ``payload`` as indented, key-sorted JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Save ``array`` as a memory-mappable ``.npy`` file, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(array), allow_pickle=False)


def save_nifti(path: str | os.PathLike[str], image: nib.Nifti1Image) -> None:
    """Save a NIfTI image atomically (the temporary name keeps the ``.nii``/``.nii.gz`` suffix)."""
    target = Path(path)
    suffix = ".nii.gz" if target.name.endswith(".nii.gz") else ".nii"
    _save_with_suffix(target, suffix, lambda named: nib.save(image, named))


def _save_with_suffix(target: Path, suffix: str, save: Any) -> None:
    """Write ``target`` atomically with ``save(path)``, the temporary name keeping ``suffix`` (writers pick the format from it)."""
    with atomic_path(target) as tmp:
        named = tmp.with_name(tmp.name + suffix)
        try:
            save(named)
            os.replace(named, tmp)
        finally:
            named.unlink(missing_ok=True)


def save_sitk(path: str | os.PathLike[str], item: Any) -> Path:
    """Write a SimpleITK image (format from the suffix: ``.nii.gz``, ``.nrrd``, ...) or transform (``.tfm``, ``.h5``), atomically."""
    import SimpleITK as sitk

    target = Path(path)
    suffix = ".nii.gz" if target.name.endswith(".nii.gz") else target.suffix
    if isinstance(item, sitk.Transform):
        _save_with_suffix(target, suffix, lambda named: sitk.WriteTransform(item, str(named)))
    else:
        _save_with_suffix(target, suffix, lambda named: sitk.WriteImage(item, str(named)))
    return target


def save_image_2d(path: str | os.PathLike[str], voxels: np.ndarray) -> Path:
    """Write a 2D uint8 array ``(rows, columns)`` as a one-component PNG, JPG or TIFF (after the suffix) with SimpleITK, atomically."""
    import SimpleITK as sitk

    target = Path(path)
    voxels = np.ascontiguousarray(voxels)
    if voxels.ndim != 2 or voxels.dtype != np.uint8:
        raise ValueError(f"expected a 2D uint8 array, got {voxels.dtype} {voxels.shape}")
    image = sitk.GetImageFromArray(voxels)
    _save_with_suffix(target, target.suffix, lambda named: sitk.WriteImage(image, str(named)))
    return target


def load_nifti(path: str | os.PathLike[str]) -> nib.Nifti1Image:
    """Open a NIfTI file (header only; voxels stay on disk) or raise a one-line :class:`InputError`."""
    source = Path(path)
    if not source.is_file():
        raise InputError(source, "is a folder, not a NIfTI file" if source.is_dir() else "file not found")
    try:
        # nibabel reports a permission or I/O error as "Could not read file"; say which it is
        with open(source, "rb") as handle:
            handle.read(1)
    except OSError as err:
        raise InputError(source, f"cannot read: {err.strerror or err}") from err
    try:
        image = nib.load(source)
    except Exception as err:  # nibabel raises many types for a non-NIfTI or damaged file
        raise InputError(source, f"not a readable NIfTI file ({type(err).__name__}: {err})") from err
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(source, f"not a NIfTI file (read as {type(image).__name__})")
    return image


#: File endings of the 2D images and masks the pipeline reads (case-insensitive).
IMAGE_2D_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def read_image_2d(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a 2D PNG, JPG or TIFF with SimpleITK: ``(rows, columns)`` for one component, ``(rows, columns, components)`` otherwise.

    Raises:
        InputError: naming the file if it is missing, empty, unreadable or not 2D.
    """
    import SimpleITK as sitk

    source = Path(path)
    try:
        if source.stat().st_size == 0:
            raise InputError(source, "file is empty")
    except FileNotFoundError:
        raise InputError(source, "file not found") from None
    except OSError as err:
        raise InputError(source, f"cannot read: {err.strerror or err}") from err
    try:
        image = sitk.ReadImage(str(source))
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise InputError(source, f"cannot read image ({reason.strip()[:200]})") from None
    if image.GetDimension() != 2 and not (image.GetDimension() == 3 and image.GetSize()[2] == 1):
        raise InputError(source, f"expected a 2D image, got size {list(image.GetSize())}")
    voxels = sitk.GetArrayFromImage(image)
    return voxels.reshape(voxels.shape[-3:] if image.GetNumberOfComponentsPerPixel() > 1 else voxels.shape[-2:])


def read_voxels(image: nib.Nifti1Image, path: str | os.PathLike[str], dtype: type = np.float32) -> np.ndarray:
    """Read all voxels of ``image`` (opened from ``path``) as ``dtype``; a truncated file is an :class:`InputError`."""
    try:
        return np.asarray(image.dataobj, dtype=dtype)
    except Exception as err:  # gzip, zlib and EOF errors all mean a damaged file
        raise InputError(path, f"cannot read voxels, file damaged or truncated ({type(err).__name__}: {err})") from err


class _ImageBuffer:
    """A SimpleITK image's voxel buffer as a NumPy array that keeps the image alive.

    ``sitk.GetArrayFromImage`` copies every volume; ``GetArrayViewFromImage`` does not, but its
    array dangles once the image is freed. An array made from this object holds it (``.base``).
    """

    def __init__(self, image: Any) -> None:
        import SimpleITK as sitk

        self.image = image
        self.__array_interface__ = sitk.GetArrayViewFromImage(image).__array_interface__


def _read_with_simpleitk(path: Path, image: nib.Nifti1Image) -> np.ndarray | None:
    """Voxels decompressed by SimpleITK in nibabel's (i, j, k) order, or None where they might differ from nibabel's.

    ITK applies intensity scaling in float32, turns NaN into 0 and reads truncated or damaged
    ``.gz`` files without complaint, so this only takes unscaled, native-endian integer data,
    and checks a ``.gz`` file's length and CRC-32 (gzip's own trailer) as Python's gzip would.
    """
    header = image.header
    stored = header.get_data_dtype()
    slope, inter = header.get_slope_inter()
    if slope not in (None, 1.0) or inter not in (None, 0.0) or stored.kind not in "iu" or not stored.isnative:
        return None
    import SimpleITK as sitk  # imported here: most commands never read a NIfTI volume

    offset = getattr(image.dataobj, "offset", None)  # the file's vox_offset (image.header is a copy set to 0)
    if offset is None:
        return None
    expected_size = offset + int(np.prod(image.shape)) * stored.itemsize
    compressed = str(path).endswith(".gz")
    try:
        if compressed:
            with open(path, "rb") as handle:
                handle.seek(-8, os.SEEK_END)
                crc, size = struct.unpack("<II", handle.read(8))
            if size != expected_size % (1 << 32):
                return None
            with gzip.open(path, "rb") as handle:
                prefix = handle.read(offset)
        elif os.path.getsize(path) < expected_size:
            return None
        voxels = np.asarray(_ImageBuffer(sitk.ReadImage(str(path), imageIO="NiftiImageIO")))
    except (OSError, EOFError, RuntimeError, zlib.error):  # nibabel then reads it or names the problem
        return None
    if voxels.T.shape != image.shape or voxels.dtype != stored:
        return None
    if compressed and zlib.crc32(voxels, zlib.crc32(prefix)) != crc:
        return None
    return voxels.T


def load_volume(path: str | os.PathLike[str]) -> tuple[nib.Nifti1Image, np.ndarray]:
    """Open a NIfTI file: its nibabel image (the header) and all its voxels in nibabel's ``(i, j, k, ...)`` order.

    Integer volumes (every BraTS release) are decompressed with SimpleITK, about 2-3x faster
    than nibabel for ``.nii.gz``, and checked to be exactly what nibabel would read; anything
    else is read by nibabel. A missing, damaged or truncated file is an :class:`InputError`.
    """
    image = load_nifti(path)
    voxels = _read_with_simpleitk(Path(path), image)
    if voxels is None:
        voxels = read_voxels(image, path, dtype=None)
    return image, voxels


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
