"""Training datasets and samplers over the preprocessed cache: 2D slices, 2.5D slice stacks, 3D patches.

The cache (see :mod:`pipeline.preprocessing.cache`) holds one folder per case with ``image.npy`` float16
``(Z, C, X, Y)`` (``C``: the task's channels, 4 for BraTS), ``label.npy`` uint8 ``(Z, X, Y)`` and ``meta.json``. The datasets here never read
NIfTI and never hold a case in memory: arrays are memory-mapped lazily, in each DataLoader worker,
through a small LRU of open maps (:class:`CachedCaseStore`), and only the bytes a sample needs are
read. Data stay float16 until the sample is cropped, then MONAI dictionary transforms augment it.

Samples are dicts:

- ``"2d"``: ``image`` float32 ``(C, SX, SY)``, ``label`` uint8 ``(1, SX, SY)``, ``case_id``, ``slice_index``.
- ``"2.5d"``: ``image`` float32 ``(C*(2k+1), SX, SY)`` ordered slice ``z-k`` (C channels), ..., ``z+k``;
  ``label`` of the centre slice; ``case_id``, ``slice_index``.
- ``"3d"``: ``image`` float32 ``(C, px, py, pz)`` in (X, Y, Z) order, ``label`` uint8 ``(1, px, py, pz)``,
  ``case_id``, ``patch_centre_zxy``.

``(SX, SY)`` is ``slice_size``. With ``image_dtype="float16"`` the image stays in the cache's half
precision, halving what DataLoader workers send; the training step then casts it on the device.

Slices are addressed across the whole cohort by an index of (case, z);
:class:`ForegroundWeightedSampler` draws them so that a chosen fraction are tumour slices (any
non-background class of the task; 3D patches centre on such voxels), and optionally gives the
slices holding a named class (BraTS NEC) their own share (``class_ratios``). Intensity augmentations
act on every channel alike, whatever their number. Under
DDP the same sampler splits each epoch's draws between ranks (``build_train_sampler(...,
distributed=True)``), so no ``DistributedSampler`` is stacked on top. Every sample's augmentation
is seeded from ``(seed, epoch, index)``, so the same seed gives the same samples whatever the
number of workers, and a resumed run repeats the epochs it resumes (call ``sampler.set_epoch``).
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import (
    Compose,
    EnsureTyped,
    Rand2DElasticd,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    Randomizable,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline.core.errors import ConfigError
from pipeline.networks import MODES
from pipeline.preprocessing.cache import (
    IMAGE_FILE,
    LABEL_FILE,
    complete_case_ids,
    load_array,
    read_meta,
)
from pipeline.tasks.task import TaskSpec, resolve_task
from pipeline.transforms import (
    CONTEXT_PADDINGS,
    CentrePadCropd,
    RandPosNegPatchd,
    StackContextd,
    stack_context,
)
from pipeline.transforms.context import ContextPadding

__all__ = [
    "CachedCaseStore",
    "ForegroundWeightedSampler",
    "PatchDataset",
    "SliceDataset",
    "augmentations",
    "build_train_dataset",
    "build_train_loader",
    "build_train_sampler",
    "check_class_ratios",
    "metadata_tracking_off",
    "patch_transforms",
    "slice_probabilities",
    "slice_transforms",
    "stack_context",
    "with_class_shares",
]

Mode = Literal["2d", "2.5d", "3d"]
SIZE_MULTIPLE = 16  # default slice sizes are rounded up to this, so the default 5-level UNet's four strides of 2 divide them
DEFAULT_MAX_OPEN_CASES = 32
IMAGE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16}


class CachedCaseStore:
    """Memory-mapped ``image.npy``/``label.npy`` of cached cases, opened on first use, at most ``max_open`` at once.

    Opening is lazy and happens in the process that reads (each DataLoader worker has its own
    maps: open maps are not pickled). The least recently used case is closed when the limit is
    reached, so memory does not grow with the number of cases.

    Args:
        cache_dir: the cache folder.
        case_ids: the cases this store serves, addressed by position.
        shapes: each case's ``(Z, C, X, Y)`` from ``meta.json``, checked against the arrays.
        max_open: most cases kept mapped at once.
    """

    def __init__(
        self, cache_dir: str | Path, case_ids: Sequence[str], shapes: Sequence[Sequence[int]], max_open: int = DEFAULT_MAX_OPEN_CASES
    ) -> None:
        if max_open < 1:
            raise ConfigError("max_open_cases", f"must be >= 1, got {max_open}")
        self.cache_dir = Path(cache_dir)
        self.case_ids = list(case_ids)
        self.shapes = [tuple(int(n) for n in s) for s in shapes]
        self.max_open = max_open
        self._open: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        """Number of cases mapped now."""
        return len(self._open)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()  # maps are reopened lazily in the receiving process
        return state

    def arrays(self, case_index: int) -> tuple[np.ndarray, np.ndarray]:
        """The case's ``(image (Z, C, X, Y) float16, label (Z, X, Y) uint8)`` memory maps."""
        hit = self._open.get(case_index)
        if hit is not None:
            self._open.move_to_end(case_index)
            return hit
        opened = self._map(case_index)
        self._open[case_index] = opened
        if len(self._open) > self.max_open:
            self._open.popitem(last=False)  # dropping the last reference unmaps the file
        return opened

    def _map(self, case_index: int) -> tuple[np.ndarray, np.ndarray]:
        folder = self.cache_dir / self.case_ids[case_index]
        z, _, x, y = self.shapes[case_index]
        return load_array(folder / IMAGE_FILE, np.float16, self.shapes[case_index]), load_array(folder / LABEL_FILE, np.uint8, (z, x, y))

    def close(self) -> None:
        """Unmap every open case."""
        self._open.clear()


@contextlib.contextmanager
def metadata_tracking_off() -> Iterator[None]:
    """Run MONAI transforms on plain tensors: MetaTensor bookkeeping triples the cost of a 2.5D sample.

    The samples carry no geometry (they are crops of the cache grid), so nothing is lost. MONAI's
    switch is process-wide; it is restored on exit (do not share the dataset with threads that
    need metadata at the same moment).
    """
    previous = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(previous)


class _CachedDataset(Dataset):
    """What slice and patch datasets share: case metadata, the memmap store, per-sample seeding."""

    def __init__(
        self,
        cache_dir: str | Path,
        case_ids: Sequence[str],
        transform: Compose,
        seed: int = 0,
        max_open_cases: int = DEFAULT_MAX_OPEN_CASES,
    ) -> None:
        if not case_ids:
            raise ConfigError("case_ids", "no training cases given")
        self.cache_dir = Path(cache_dir)
        self.case_ids = list(case_ids)
        metas = [read_meta(self.cache_dir, cid, require_label=True) for cid in self.case_ids]
        self.shapes = [tuple(int(n) for n in m["shape"]) for m in metas]
        self.foreground_per_case = [np.asarray(m["foreground_per_slice"], dtype=np.int64) for m in metas]
        self.store = CachedCaseStore(self.cache_dir, self.case_ids, self.shapes, max_open_cases)
        self.seed = int(seed)
        self.epoch = 0
        self._random_state = np.random.RandomState(self.seed)
        self.transform = transform

    @property
    def transform(self) -> Compose:
        """The dictionary transforms applied to each sample; all draw from one random state seeded per sample."""
        return self._transform_chain

    @transform.setter
    def transform(self, transform: Compose) -> None:
        # one shared RandomState reseeded per sample costs microseconds; Compose.set_random_state
        # builds a RandomState for every transform on each call, about 1 ms per sample
        for step in [transform, *transform.flatten().transforms]:
            if isinstance(step, Randomizable):
                step.set_random_state(state=self._random_state)
        self._transform_chain = transform

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations :meth:`__getitem__` draws (called by the sampler's ``set_epoch``)."""
        self.epoch = int(epoch)

    def _transform(self, data: dict[str, Any], index: int) -> dict[str, Any]:
        # seeding per sample (not per worker) makes samples independent of worker count and resumable
        self._random_state.seed(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])
        with metadata_tracking_off():
            return self._transform_chain(data)


class SliceDataset(_CachedDataset):
    """Every axial slice of every case, addressed as one index of (case, z), as 2D or 2.5D samples.

    Args:
        cache_dir: the cache folder.
        case_ids: cases to draw from (labelled).
        transform: dictionary transforms applied to ``{"image": (Z, C, X, Y) memmap, "label":
            (Z, X, Y) memmap, "slice_index", "case_id"}``; see :func:`slice_transforms`.
        foreground_ratio: fraction of tumour slices :func:`build_train_sampler` draws by default.
        seed: base seed of the augmentations.
        max_open_cases: most cases memory-mapped at once per process.
    """

    def __init__(
        self,
        cache_dir: str | Path,
        case_ids: Sequence[str],
        transform: Compose,
        foreground_ratio: float | None = 0.6,
        seed: int = 0,
        max_open_cases: int = DEFAULT_MAX_OPEN_CASES,
    ) -> None:
        super().__init__(cache_dir, case_ids, transform, seed, max_open_cases)
        depths = [s[0] for s in self.shapes]
        self.slice_case = np.repeat(np.arange(len(depths), dtype=np.int32), depths)
        self.slice_z = np.concatenate([np.arange(d, dtype=np.int32) for d in depths])
        self.foreground_per_item = np.concatenate(self.foreground_per_case)
        self.foreground_ratio = foreground_ratio
        self.slice_size: tuple[int, int] | None = None  # set by build_train_dataset, for the record

    def __len__(self) -> int:
        return int(self.slice_case.size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        case_index, z = int(self.slice_case[index]), int(self.slice_z[index])
        image, label = self.store.arrays(case_index)
        data = {"image": image, "label": label, "slice_index": z, "case_id": self.case_ids[case_index]}
        return self._transform(data, int(index))

    def slices_holding(self, value: int) -> np.ndarray:
        """Whether each item's (centre) slice holds internal label ``value``, read from the label maps."""
        return np.concatenate([np.any(self.store.arrays(case)[1] == value, axis=(1, 2)) for case in range(len(self.case_ids))])


class PatchDataset(_CachedDataset):
    """Tumour-aware 3D patches, ``patches_per_case`` items per case per epoch.

    Args:
        cache_dir: the cache folder.
        case_ids: cases to draw from (labelled).
        transform: dictionary transforms applied to ``{"image": (Z, C, X, Y) memmap, "label":
            (Z, X, Y) memmap, "foreground_per_slice", "case_id"}``; see :func:`patch_transforms`.
        patches_per_case: items per case (an epoch over the dataset visits each case this often).
        seed: base seed of the patch centres and augmentations.
        max_open_cases: most cases memory-mapped at once per process.
    """

    def __init__(
        self,
        cache_dir: str | Path,
        case_ids: Sequence[str],
        transform: Compose,
        patches_per_case: int = 1,
        seed: int = 0,
        max_open_cases: int = DEFAULT_MAX_OPEN_CASES,
    ) -> None:
        if patches_per_case < 1:
            raise ConfigError("patches_per_case", f"must be >= 1, got {patches_per_case}")
        super().__init__(cache_dir, case_ids, transform, seed, max_open_cases)
        self.patches_per_case = patches_per_case
        self.foreground_per_item = None  # tumour-awareness lies in the patch centres, not the sampler
        self.foreground_ratio = None

    def __len__(self) -> int:
        return len(self.case_ids) * self.patches_per_case

    def __getitem__(self, index: int) -> dict[str, Any]:
        case_index = int(index) % len(self.case_ids)
        image, label = self.store.arrays(case_index)
        data = {
            "image": image,
            "label": label,
            "foreground_per_slice": self.foreground_per_case[case_index],
            "case_id": self.case_ids[case_index],
        }
        return self._transform(data, int(index))


def _intensity_augmentations(keys: str) -> list:
    return [
        RandScaleIntensityd(keys=keys, factors=0.1, prob=0.5),
        RandShiftIntensityd(keys=keys, offsets=0.1, prob=0.5),
        RandAdjustContrastd(keys=keys, gamma=(0.7, 1.5), prob=0.3),
    ]


def _as_float32() -> EnsureTyped:
    return EnsureTyped(keys="image", data_type="tensor", dtype=torch.float32, track_meta=False)


def _final_types(image_dtype: torch.dtype) -> list:
    return [
        EnsureTyped(keys="image", data_type="tensor", dtype=image_dtype, track_meta=False),
        EnsureTyped(keys="label", data_type="tensor", dtype=torch.uint8, track_meta=False),
    ]


def augmentations(spatial_dims: int, square: bool, elastic: bool = False, keys: Sequence[str] = ("image", "label")) -> list:
    """The training augmentations of a 2D slice (``spatial_dims=2``) or a 3D patch (``3``), in order.

    Flips on every spatial axis (probability 0.5 each), rot90 in the first two axes (the axial
    plane; only when they have the same size, ``square``, so batches keep one shape), a cast to
    float32 (flips move float16 bytes; resampling and intensity need float32), a small affine
    (rotation up to 15 degrees about each rotation axis, scale 0.9-1.1, probability 0.2), the
    optional elastic deformation (probability 0.1), then intensity scale/shift and gamma. The
    label (second key) is resampled with nearest neighbour and stays an integer map.

    Args:
        spatial_dims: 2 or 3.
        square: the first two spatial sizes are equal.
        elastic: add ``Rand2DElasticd`` / ``Rand3DElasticd``.
        keys: the image and label keys.
    """
    keys = tuple(keys)
    transforms: list = [RandFlipd(keys=keys, prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)]
    if square:
        transforms.append(RandRotate90d(keys=keys, prob=0.5, max_k=3, spatial_axes=(0, 1)))
    transforms.append(_as_float32())
    rotation_axes = 1 if spatial_dims == 2 else 3  # in-plane only for slices
    transforms.append(
        RandAffined(
            keys=keys,
            prob=0.2,
            rotate_range=(np.deg2rad(15.0),) * rotation_axes,
            scale_range=(0.1,) * spatial_dims,
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
        )
    )
    if elastic and spatial_dims == 2:
        transforms.append(
            Rand2DElasticd(keys=keys, prob=0.1, spacing=(20, 20), magnitude_range=(1, 2), mode=("bilinear", "nearest"), padding_mode="zeros")
        )
    elif elastic:
        transforms.append(
            Rand3DElasticd(keys=keys, prob=0.1, sigma_range=(5, 7), magnitude_range=(50, 150), mode=("bilinear", "nearest"), padding_mode="zeros")
        )
    return transforms + _intensity_augmentations(keys[0])


def slice_transforms(
    slice_size: Sequence[int],
    context: int = 2,
    padding: ContextPadding = "replicate",
    augment: bool = True,
    elastic: bool = False,
    image_dtype: torch.dtype = torch.float32,
) -> Compose:
    """The 2D/2.5D sample pipeline: stack, pad/crop to ``slice_size``, then (training) :func:`augmentations` in 2D.

    Args:
        slice_size: ``(SX, SY)`` every sample is padded (with 0, the background value) or
            centre-cropped to (as MONAI's ``ResizeWithPadOrCropd`` does).
        context: ``k`` neighbours per side (0 for 2D).
        padding: 2.5D border handling, ``"replicate"`` or ``"reflect"``.
        augment: add the random augmentations (training only).
        elastic: add ``Rand2DElasticd``.
        image_dtype: dtype of the sample image; the cache's float16 halves what DataLoader
            workers send (cast on the device then). Augmentations compute in float32.
    """
    size = tuple(int(s) for s in slice_size)
    keys = ("image", "label")
    transforms: list = [
        StackContextd(keys="image", context=context, padding=padding),
        StackContextd(keys="label", context=0),
        CentrePadCropd(keys=keys, spatial_size=size),
    ]
    if augment:
        transforms += augmentations(2, size[0] == size[1], elastic, keys)
    return Compose(transforms + _final_types(image_dtype))


def patch_transforms(
    patch_size: Sequence[int],
    foreground_ratio: float = 0.6,
    augment: bool = True,
    elastic: bool = False,
    image_dtype: torch.dtype = torch.float32,
) -> Compose:
    """The 3D sample pipeline: a tumour-aware patch read from the memmap, then (training) :func:`augmentations` in 3D.

    Args:
        patch_size: ``(px, py, pz)``.
        foreground_ratio: probability that a patch is centred on tumour.
        augment: add the random augmentations (training only).
        elastic: add ``Rand3DElasticd``.
        image_dtype: dtype of the sample image (see :func:`slice_transforms`).
    """
    size = tuple(int(s) for s in patch_size)
    keys = ("image", "label")
    transforms: list = [
        RandPosNegPatchd(keys=keys, label_key="label", patch_size=size, pos_fraction=foreground_ratio),
    ]
    if augment:
        transforms += augmentations(3, size[0] == size[1], elastic, keys)
    return Compose(transforms + _final_types(image_dtype))


def _default_slice_size(shapes: Sequence[Sequence[int]]) -> tuple[int, int]:
    """The cohort's largest in-plane size, rounded up to a multiple of :data:`SIZE_MULTIPLE`."""
    width = max(s[2] for s in shapes)
    height = max(s[3] for s in shapes)
    return (SIZE_MULTIPLE * math.ceil(width / SIZE_MULTIPLE), SIZE_MULTIPLE * math.ceil(height / SIZE_MULTIPLE))


def build_train_dataset(
    cache_dir: str | Path,
    case_ids: Sequence[str] | None,
    mode: Mode,
    context: int = 2,
    patch_size: Sequence[int] | int = (128, 128, 128),
    slice_size: Sequence[int] | int | None = None,
    foreground_ratio: float = 0.6,
    augment: bool = True,
    seed: int = 0,
    padding: ContextPadding = "replicate",
    elastic: bool = False,
    patches_per_case: int = 1,
    max_open_cases: int = DEFAULT_MAX_OPEN_CASES,
    image_dtype: str = "float32",
) -> SliceDataset | PatchDataset:
    """The training dataset for one mode over cached cases.

    Args:
        cache_dir: the preprocessed cache folder.
        case_ids: training case ids (e.g. a fold's training cases); ``None`` takes every
            complete case in the cache.
        mode: ``"2d"``, ``"2.5d"`` or ``"3d"``.
        context: ``k`` neighbours per side for 2.5D (ignored otherwise).
        patch_size: 3D patch ``(px, py, pz)`` or one int (3D only).
        slice_size: ``(SX, SY)`` or one int for 2D/2.5D; ``None`` takes the cohort's largest
            in-plane size rounded up to a multiple of 16.
        foreground_ratio: fraction of tumour slices the sampler draws (2D/2.5D), or probability
            of a tumour-centred patch (3D).
        augment: random augmentations (training); ``False`` gives plain samples.
        seed: base seed; the same seed gives the same samples.
        padding: 2.5D border handling, ``"replicate"`` or ``"reflect"``.
        elastic: add elastic deformation to the augmentations.
        patches_per_case: 3D items per case in one pass over the dataset.
        max_open_cases: most cases memory-mapped at once per process.
        image_dtype: ``"float32"`` (default) or ``"float16"``: keep the cache's half precision
            in the sample, halving what DataLoader workers send; the training step then casts
            on the device (``batch["image"].to(device, torch.float32)``).
    """
    if mode not in MODES:
        raise ConfigError("mode", f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if not 0.0 <= foreground_ratio <= 1.0:
        raise ConfigError("foreground_ratio", f"must lie in [0, 1], got {foreground_ratio}")
    if padding not in CONTEXT_PADDINGS:
        raise ConfigError("padding", f"unknown 2.5D border padding {padding!r}; expected one of {', '.join(CONTEXT_PADDINGS)}")
    if image_dtype not in IMAGE_DTYPES:
        raise ConfigError("image_dtype", f"unknown sample dtype {image_dtype!r}; expected one of {', '.join(IMAGE_DTYPES)}")
    dtype = IMAGE_DTYPES[image_dtype]
    ids = list(case_ids) if case_ids is not None else complete_case_ids(cache_dir)
    if mode == "3d":
        size = tuple(int(s) for s in (patch_size if isinstance(patch_size, Sequence) else (patch_size,) * 3))
        if len(size) != 3:
            raise ConfigError("patch_size", f"expected (px, py, pz), got {patch_size!r}")
        transform = patch_transforms(size, foreground_ratio, augment, elastic, dtype)
        return PatchDataset(cache_dir, ids, transform, patches_per_case, seed, max_open_cases)
    if context < 0:
        raise ConfigError("context", f"must be >= 0, got {context}")
    dataset = SliceDataset(cache_dir, ids, Compose([]), foreground_ratio, seed, max_open_cases)  # the size needs the shapes
    if slice_size is None:
        size2 = _default_slice_size(dataset.shapes)
    else:
        size2 = tuple(int(s) for s in (slice_size if isinstance(slice_size, Sequence) else (slice_size,) * 2))
        if len(size2) != 2:
            raise ConfigError("slice_size", f"expected (SX, SY), got {slice_size!r}")
    dataset.transform = slice_transforms(size2, context if mode == "2.5d" else 0, padding, augment, elastic, dtype)
    dataset.slice_size = size2
    return dataset


def slice_probabilities(foreground_per_item: np.ndarray | None, count: int, foreground_ratio: float | None) -> np.ndarray:
    """Draw probabilities giving tumour items (count > 0) a total of ``foreground_ratio``.

    Tumour items share ``foreground_ratio`` equally and the others share the rest, so empty
    brain slices are still drawn. Uniform when ``foreground_ratio`` is ``None``, when there are
    no counts, or when all items fall in one group.
    """
    if foreground_per_item is None or foreground_ratio is None:
        return np.full(count, 1.0 / count)
    if not 0.0 <= foreground_ratio <= 1.0:
        raise ConfigError("foreground_ratio", f"must lie in [0, 1], got {foreground_ratio}")
    tumour = np.asarray(foreground_per_item) > 0
    n_tumour = int(tumour.sum())
    if n_tumour in (0, count):
        return np.full(count, 1.0 / count)
    return np.where(tumour, foreground_ratio / n_tumour, (1.0 - foreground_ratio) / (count - n_tumour))


def check_class_ratios(class_ratios: Mapping[str, float] | None, task: TaskSpec = None, mode: str = "2.5d") -> dict[str, int]:
    """The internal label of each class ``class_ratios`` names, once its names, shares and ``mode`` are checked.

    Args:
        class_ratios: per class name of ``task``, its share of the drawn slices in [0, 1]; the
            shares sum to at most 1. ``None`` or empty: none (an empty result).
        task: the task whose classes are named (``None``: the default, BraTS glioma).
        mode: the training mode; shares weight 2D/2.5D slices only.
    """
    if not class_ratios:
        return {}
    if mode == "3d":
        raise ConfigError("class_ratios", "weights 2D/2.5D slices; 3D patches centre on tumour by foreground_ratio")
    classes = resolve_task(task).classes
    unknown = sorted(set(class_ratios) - set(classes))
    if unknown:
        raise ConfigError("class_ratios", f"unknown class {', '.join(unknown)}; the task's classes are {', '.join(classes)}")
    shares = {name: float(share) for name, share in class_ratios.items()}
    if any(not 0.0 <= share <= 1.0 for share in shares.values()) or sum(shares.values()) > 1.0 + 1e-9:
        raise ConfigError("class_ratios", f"give shares in [0, 1] summing to at most 1, got {shares}")
    return {name: classes.index(name) + 1 for name in shares}


def with_class_shares(probabilities: np.ndarray, class_items: Mapping[str, np.ndarray], class_ratios: Mapping[str, float]) -> np.ndarray:
    """Give each named class its share of the draws: ``class_ratios[name]`` of them fall evenly on the items that hold it.

    The remaining ``1 - sum(class_ratios)`` follow ``probabilities``; a class no item holds gives its
    share back to them. MONAI's ``RandCropByLabelClassesd(ratios=...)`` does this for crop centres in
    one volume; slices drawn across a cohort need it over the whole index, hence this function.

    Args:
        probabilities: draw probabilities of the items (summing to 1), e.g. :func:`slice_probabilities`.
        class_items: per class name, a boolean vector of the items holding that class.
        class_ratios: per class name, its share of the draws (checked by :func:`check_class_ratios`).
    """
    base = np.asarray(probabilities, dtype=np.float64)
    mixed = base * (1.0 - sum(class_ratios.values()))
    for name, share in class_ratios.items():
        holds = np.asarray(class_items[name], dtype=bool)
        mixed += share * holds / holds.sum() if holds.any() else share * base
    return mixed


class ForegroundWeightedSampler(Sampler[int]):
    """Draws dataset indices with replacement from given probabilities, optionally split across DDP ranks.

    Like ``WeightedRandomSampler``, but seeded per epoch, and usable under DDP: every rank draws
    the same ``num_samples`` sequence from ``(seed, epoch)`` and keeps every ``num_replicas``-th
    draw from position ``rank``, so ranks see disjoint draws of one epoch, as with
    ``DistributedSampler``. Call :meth:`set_epoch` at the start of each epoch; it also sets the
    dataset's epoch (its augmentation seeds), so use it with non-persistent DataLoader workers.

    Args:
        probabilities: one draw probability per dataset index (normalised here).
        num_samples: draws per epoch over all ranks.
        seed: base seed.
        num_replicas: number of DDP ranks (1 without DDP).
        rank: this process's rank.
        dataset: the dataset whose ``set_epoch`` follows the sampler's.
    """

    def __init__(
        self,
        probabilities: np.ndarray,
        num_samples: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        dataset: Dataset | None = None,
    ) -> None:
        weights = np.asarray(probabilities, dtype=np.float64)
        if weights.ndim != 1 or weights.size == 0 or np.any(weights < 0) or weights.sum() <= 0:
            raise ConfigError("sampler", "probabilities must be a non-empty, non-negative vector with a positive sum")
        if num_samples < 1:
            raise ConfigError("num_samples", f"must be >= 1, got {num_samples}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ConfigError("rank", f"rank {rank} is not in [0, {num_replicas})")
        self.probabilities = weights / weights.sum()
        self.num_replicas = num_replicas
        self.rank = rank
        self.num_samples = math.ceil(num_samples / num_replicas)  # per rank, as DistributedSampler counts
        self.total_size = self.num_samples * num_replicas
        self.seed = int(seed)
        self.epoch = 0
        self.dataset = dataset

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        draws = rng.choice(self.probabilities.size, size=self.total_size, p=self.probabilities)
        return iter(draws[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch's draws (and, through the dataset, its augmentations)."""
        self.epoch = int(epoch)
        if self.dataset is not None and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


def build_train_sampler(
    dataset: SliceDataset | PatchDataset,
    num_samples: int | None = None,
    foreground_ratio: float | None = None,
    seed: int = 0,
    distributed: bool = False,
    num_replicas: int | None = None,
    rank: int | None = None,
    class_ratios: Mapping[str, float] | None = None,
    task: TaskSpec = None,
) -> ForegroundWeightedSampler:
    """The sampler for a training dataset: foreground-weighted for slices, uniform over cases for patches.

    Args:
        dataset: from :func:`build_train_dataset`.
        num_samples: draws per epoch over all ranks; default ``len(dataset)``.
        foreground_ratio: fraction of tumour slices; default the dataset's (ignored for 3D,
            whose patches are tumour-aware themselves).
        seed: base seed of the draws.
        distributed: split draws across DDP ranks; ``num_replicas``/``rank`` default to
            ``torch.distributed``'s world size and rank.
        num_replicas: number of ranks (implies ``distributed``).
        rank: this rank.
        class_ratios: 2D/2.5D: share of the draws given to slices holding each named class of
            ``task`` (e.g. ``{"NEC": 0.2}``), see :func:`with_class_shares`; ``None``: none.
        task: the task whose class names ``class_ratios`` uses (``None``: the default, BraTS).
    """
    if distributed or num_replicas is not None:
        if num_replicas is None or rank is None:
            if not torch.distributed.is_available() or not torch.distributed.is_initialized():
                raise ConfigError("distributed", "torch.distributed is not initialised; pass num_replicas and rank")
            num_replicas = torch.distributed.get_world_size() if num_replicas is None else num_replicas
            rank = torch.distributed.get_rank() if rank is None else rank
    ratio = foreground_ratio if foreground_ratio is not None else getattr(dataset, "foreground_ratio", None)
    counts = getattr(dataset, "foreground_per_item", None)
    probabilities = slice_probabilities(counts, len(dataset), ratio if counts is not None else None)
    values = check_class_ratios(class_ratios, task, "2.5d" if isinstance(dataset, SliceDataset) else "3d")
    if values:
        items = {name: dataset.slices_holding(value) for name, value in values.items()}
        probabilities = with_class_shares(probabilities, items, class_ratios)
    return ForegroundWeightedSampler(
        probabilities,
        num_samples if num_samples is not None else len(dataset),
        seed=seed,
        num_replicas=num_replicas or 1,
        rank=rank or 0,
        dataset=dataset,
    )


def build_train_loader(
    dataset: SliceDataset | PatchDataset,
    batch_size: int,
    sampler: Sampler[int] | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    prefetch_factor: int | None = None,
    drop_last: bool = True,
) -> DataLoader:
    """A DataLoader over a training dataset with its sampler (default :func:`build_train_sampler`).

    Workers are not persistent: each epoch's workers receive the dataset with the epoch set by
    ``sampler.set_epoch``, and open their own memory maps. With ``drop_last`` (default) every
    batch is full; an epoch shorter than one batch is then an error rather than an empty epoch.
    """
    if batch_size < 1:
        raise ConfigError("batch_size", f"must be >= 1, got {batch_size}")
    sampler = sampler if sampler is not None else build_train_sampler(dataset)
    if drop_last and len(sampler) < batch_size:
        raise ConfigError("batch_size", f"{batch_size} is more than the {len(sampler)} samples drawn per epoch (per process)")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        persistent_workers=False,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
    )
