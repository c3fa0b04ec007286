"""The training augmentations applied to whole batches on the training device, after the batch is moved there.

With ``augment_on: device`` (bundle ``configs/train.yaml``) DataLoader workers only read and crop
(and stack 2.5D context slices); :class:`DeviceAugmentation` is the trainer's ``prepare_batch``:
it moves the batch to the device, casts the image to float32 and augments every sample of the
batch at once. The augmentation is the one :func:`pipeline.training.loaders.augmentations` defines for the
per-sample path: :func:`augmentation_parameters` reads the probabilities and ranges from those
MONAI transforms' arguments, so both paths draw from one definition:

- flips of each spatial axis and rot90 in the first two axes (exact: one ``gather`` of the whole
  batch through a per-sample voxel index, no interpolation);
- the random affine (rotation, scale) of the samples that draw it: one matrix per sample, in
  MONAI's conventions (``create_rotate`` ``"XYZ"``, voxel coordinates about the centre,
  ``align_corners=False``), one ``affine_grid`` + ``grid_sample`` call, image bilinear, labels
  nearest on every label channel (class index maps and region channels alike), zeros outside;
- the optional elastic deformation, per sample with MONAI's own transform on the device tensors
  (it does not batch);
- intensity scale, shift and gamma (min-max of each sample), vectorised over the batch.

All channels of a sample (the ``C x (2k+1)`` of a 2.5D stack too) get the same spatial transform.
The draws come from a ``torch.Generator`` on the device, seeded from ``(seed, epoch, rank)`` at
each :meth:`DeviceAugmentation.set_epoch`: the same seed gives the same batches, and a resumed run
repeats the epochs it resumes.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.engines.utils import PrepareBatch, default_prepare_batch
from monai.transforms import (
    EnsureTyped,
    Rand2DElasticd,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from pipeline.core.errors import ConfigError
from pipeline.training.loaders import augmentations, metadata_tracking_off

__all__ = [
    "AUGMENT_ON",
    "AugmentationParameters",
    "DeviceAugmentation",
    "augment_batch",
    "augmentation_parameters",
    "augments_on_device",
    "rotation_matrices",
]

#: Where training augments (``augment_on``): per sample in the loader workers, or per batch on the training device.
AUGMENT_ON: tuple[str, ...] = ("worker", "device")


def augments_on_device(augment: bool, augment_on: str) -> bool:
    """Whether a training config augments whole batches on the device (``augment`` on and ``augment_on: device``)."""
    if augment_on not in AUGMENT_ON:
        raise ConfigError("augment_on", f"unknown place {augment_on!r}; expected one of {', '.join(AUGMENT_ON)}")
    return bool(augment) and augment_on == "device"


@dataclass(frozen=True)
class AugmentationParameters:
    """Probabilities and ranges of the training augmentation, as read from its MONAI transforms.

    Attributes:
        flip_probs: probability of a flip per spatial axis (``None``: that axis is not flipped).
        rot90_prob: probability of a rot90 in ``rot90_axes`` (0: none).
        rot90_max_k: the number of quarter turns is drawn from ``1 .. rot90_max_k``.
        rot90_axes: the two spatial axes of the rot90 plane.
        affine_prob: probability of the random affine.
        rotate_range: rotation angles are uniform in ``[-r, r]`` radians, one per rotation axis.
        scale_range: scales are ``1 + uniform(-s, s)`` per spatial axis.
        elastic: the MONAI elastic dictionary transform (with its own probability), or ``None``.
        scale_prob: probability of the intensity scale ``v * (1 + f)``.
        scale_factors: ``f`` is uniform in this range.
        shift_prob: probability of the intensity shift ``v + o``.
        shift_offsets: ``o`` is uniform in this range.
        gamma_prob: probability of the gamma transform on the sample's min-max range.
        gamma_range: gamma is uniform in this range.
    """

    flip_probs: tuple[float | None, ...]
    rot90_prob: float
    rot90_max_k: int
    rot90_axes: tuple[int, int]
    affine_prob: float
    rotate_range: tuple[float, ...]
    scale_range: tuple[float, ...]
    elastic: Any
    scale_prob: float
    scale_factors: tuple[float, float]
    shift_prob: float
    shift_offsets: tuple[float, float]
    gamma_prob: float
    gamma_range: tuple[float, float]


def _symmetric(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, Sequence):
        low, high = (float(v) for v in value)
        if low != -high:
            raise ConfigError("augmentations", f"batched augmentation needs ranges symmetric about 0, got {tuple(value)}")
        return high
    return float(value)


def augmentation_parameters(transforms: Sequence[Any], spatial_dims: int) -> AugmentationParameters:
    """Read the augmentation's probabilities and ranges from the transforms :func:`pipeline.training.loaders.augmentations` builds.

    Args:
        transforms: the list :func:`pipeline.training.loaders.augmentations` returns.
        spatial_dims: 2 or 3.

    Raises:
        ConfigError: a transform the batched path does not implement (so that a new augmentation
            cannot silently go missing from the device path).
    """
    flips: list[float | None] = [None] * spatial_dims
    values: dict[str, Any] = {"rot90_prob": 0.0, "rot90_max_k": 1, "rot90_axes": (0, 1), "affine_prob": 0.0, "elastic": None}
    values.update(rotate_range=(0.0,) * (1 if spatial_dims == 2 else 3), scale_range=(0.0,) * spatial_dims)
    values.update(scale_prob=0.0, scale_factors=(0.0, 0.0), shift_prob=0.0, shift_offsets=(0.0, 0.0), gamma_prob=0.0, gamma_range=(1.0, 1.0))
    for t in transforms:
        if isinstance(t, RandFlipd):
            axes = t.flipper.spatial_axis
            for axis in (axes,) if isinstance(axes, int) else tuple(axes):
                flips[axis] = float(t.prob)
        elif isinstance(t, RandRotate90d):
            values.update(rot90_prob=float(t.prob), rot90_max_k=int(t.max_k), rot90_axes=tuple(int(a) for a in t.spatial_axes))
        elif isinstance(t, RandAffined):
            grid = t.rand_affine.rand_affine_grid
            if any(r is not None for r in (*grid.shear_range, *grid.translate_range)):
                raise ConfigError("augmentations", "batched augmentation does not implement shear or translation")
            rotations = tuple(_symmetric(r) for r in grid.rotate_range)
            values.update(affine_prob=float(t.prob), rotate_range=rotations, scale_range=tuple(_symmetric(s) for s in grid.scale_range))
        elif isinstance(t, (Rand2DElasticd, Rand3DElasticd)):
            values["elastic"] = t
        elif isinstance(t, RandScaleIntensityd):
            values.update(scale_prob=float(t.prob), scale_factors=tuple(float(f) for f in t.scaler.factors))
        elif isinstance(t, RandShiftIntensityd):
            values.update(shift_prob=float(t.prob), shift_offsets=tuple(float(o) for o in t.shifter.offsets))
        elif isinstance(t, RandAdjustContrastd):
            if t.adjuster.invert_image or t.adjuster.retain_stats:
                raise ConfigError("augmentations", "batched gamma does not implement invert_image or retain_stats")
            values.update(gamma_prob=float(t.prob), gamma_range=tuple(float(g) for g in t.adjuster.gamma))
        elif not isinstance(t, EnsureTyped):
            raise ConfigError("augmentations", f"{type(t).__name__} has no batched counterpart in pipeline.training.device_augmentation")
    return AugmentationParameters(flip_probs=tuple(flips), **values)


def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(B, D, D)`` from angles ``(B, 1)`` (2D) or ``(B, 3)`` (3D), as MONAI's ``create_rotate`` builds them ("XYZ")."""
    cos, sin = torch.cos(angles), torch.sin(angles)
    batch = angles.shape[0]
    if angles.shape[1] == 1:
        return torch.stack([cos[:, 0], -sin[:, 0], sin[:, 0], cos[:, 0]], 1).view(batch, 2, 2)
    one, zero = torch.ones_like(cos[:, 0]), torch.zeros_like(cos[:, 0])
    rx = torch.stack([one, zero, zero, zero, cos[:, 0], -sin[:, 0], zero, sin[:, 0], cos[:, 0]], 1).view(batch, 3, 3)
    ry = torch.stack([cos[:, 1], zero, sin[:, 1], zero, one, zero, -sin[:, 1], zero, cos[:, 1]], 1).view(batch, 3, 3)
    rz = torch.stack([cos[:, 2], -sin[:, 2], zero, sin[:, 2], cos[:, 2], zero, zero, zero, one], 1).view(batch, 3, 3)
    return rx @ ry @ rz  # intrinsic X, Y, Z: MONAI's default rotate_order


def _uniform(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * u


def _flip_rot90_index(flips: torch.Tensor, quarter_turns: torch.Tensor, shape: Sequence[int], axes: tuple[int, int]) -> torch.Tensor:
    """Flat source index ``(B, N)`` of every output voxel after the per-sample flips ``(B, D)`` then rot90 ``(B,)`` turns.

    Works in doubled centred coordinates (``2 i - (n - 1)``), where a flip negates an axis and a
    quarter turn swaps two axes with one sign change, so every index is an exact integer; the
    index is built by broadcasting one axis at a time.
    """
    device, dims, batch = flips.device, len(shape), flips.shape[0]
    turn = torch.eye(dims, dtype=torch.long)
    a, b = axes
    turn[a, a] = turn[b, b] = 0
    turn[a, b], turn[b, a] = 1, -1  # torch.rot90(k=1, dims=(a, b)): out[i, j] = in[j, n - 1 - i]
    turns = [torch.eye(dims, dtype=torch.long)]
    for _ in range(3):
        turns.append(turns[-1] @ turn)  # on the CPU: CUDA has no integer matrix product
    signs = 1 - 2 * flips.long()
    matrix = signs[:, :, None] * torch.stack(turns).to(device)[quarter_turns]  # (B, D, D): flips first, then the turn
    centred = [(2 * torch.arange(n, device=device) - (n - 1)).view([1] * (d + 1) + [n] + [1] * (dims - d - 1)) for d, n in enumerate(shape)]
    index = torch.zeros((batch, *[1] * dims), dtype=torch.long, device=device)
    for row, n in enumerate(shape):
        source = sum(matrix[:, row, col].view(batch, *[1] * dims) * centred[col] for col in range(dims))  # doubled centred
        index = index + (source + (n - 1)) // 2 * math.prod(shape[row + 1 :])
    return index.reshape(batch, -1)


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    return flat.gather(2, index[:, None, :].expand(-1, x.shape[1], -1)).view_as(x)


def _affine_theta(matrices: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``affine_grid`` thetas ``(B, D, D+1)`` of voxel-coordinate matrices about the centre (MONAI's ``Resample`` normalisation, ``align_corners=False``)."""
    half = torch.tensor([n / 2.0 for n in shape], device=matrices.device, dtype=matrices.dtype)
    theta = matrices * half.view(1, 1, -1) / half.view(1, -1, 1)  # D^-1 M D with D = diag(n / 2)
    theta = theta.flip(1).flip(2)  # affine_grid orders coordinates from the last axis to the first
    return torch.cat([theta, torch.zeros_like(theta[:, :, :1])], dim=2)


def augment_batch(
    image: torch.Tensor, label: torch.Tensor, parameters: AugmentationParameters, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch: image ``(B, C, *S)`` (float16 or float32) and label ``(B, L, *S)`` (class indices or region channels).

    Returns the augmented image (float32: flips and turns move the image's own bytes, resampling
    and intensity compute in float32, as the worker path does) and label (the label's dtype);
    draws come from ``generator`` (on the batch's device).
    """
    batch, dims, shape, device = image.shape[0], image.ndim - 2, tuple(image.shape[2:]), image.device
    label_dtype = label.dtype
    uniform = torch.rand((batch, 2 * dims + 14), generator=generator, device=device)
    column = iter(range(uniform.shape[1]))

    def draw(count: int = 1) -> torch.Tensor:
        return torch.stack([uniform[:, next(column)] for _ in range(count)], 1)

    flip_draws, rot_draw, k_draw = draw(dims), draw()[:, 0], draw()[:, 0]
    flip_probs = torch.tensor([p if p is not None else 0.0 for p in parameters.flip_probs], device=device)
    flips = flip_draws < flip_probs
    square = shape[parameters.rot90_axes[0]] == shape[parameters.rot90_axes[1]]
    turns = torch.where(
        (rot_draw < parameters.rot90_prob) & square, 1 + (k_draw * parameters.rot90_max_k).long().clamp(max=parameters.rot90_max_k - 1), 0
    )
    index = _flip_rot90_index(flips, turns % 4, shape, parameters.rot90_axes)
    image, label = _gather(image, index).float(), _gather(label, index)

    affine_draw, angle_draws, scale_draws = draw()[:, 0], draw(3)[:, : len(parameters.rotate_range)], draw(dims)
    rotate = torch.tensor(parameters.rotate_range, device=device)
    scale = torch.tensor(parameters.scale_range, device=device)
    matrices = rotation_matrices(_uniform(angle_draws, -1.0, 1.0) * rotate) @ torch.diag_embed(1.0 + _uniform(scale_draws, -1.0, 1.0) * scale)
    chosen = torch.nonzero(affine_draw < parameters.affine_prob).squeeze(1)  # one host sync: only these samples are resampled
    if chosen.numel():
        grid = F.affine_grid(_affine_theta(matrices[chosen], shape), [chosen.numel(), 1, *shape], align_corners=False)
        image[chosen] = F.grid_sample(image[chosen], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        warped = F.grid_sample(label[chosen].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
        label[chosen] = warped.round().to(label_dtype)

    if parameters.elastic is not None:
        image, label = _elastic(image, label, parameters.elastic, generator)

    scale_draw, factor_draw, shift_draw, offset_draw, gamma_draw, gamma_value = draw(6).unbind(1)
    view = (batch,) + (1,) * (image.ndim - 1)
    factor = torch.where(scale_draw < parameters.scale_prob, _uniform(factor_draw, *parameters.scale_factors), 0.0)
    offset = torch.where(shift_draw < parameters.shift_prob, _uniform(offset_draw, *parameters.shift_offsets), 0.0)
    image.mul_(1.0 + factor.view(view)).add_(offset.view(view))
    gamma = _uniform(gamma_value, *parameters.gamma_range)
    chosen = torch.nonzero(gamma_draw < parameters.gamma_prob).squeeze(1)  # only these samples pay for the power
    if chosen.numel():
        image[chosen] = _adjust_contrast(image[chosen], gamma[chosen])
    return image, label


def _adjust_contrast(image: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """MONAI's ``AdjustContrast`` of each sample ``(B, ...)`` on its own min-max range, gamma ``(B,)``."""
    view = (image.shape[0],) + (1,) * (image.ndim - 1)
    flat = image.reshape(image.shape[0], -1)
    low = flat.amin(1).view(view)
    spread = flat.amax(1).view(view) - low
    return ((image - low) / (spread + 1e-7)) ** gamma.view(view) * spread + low


def _elastic(image: torch.Tensor, label: torch.Tensor, elastic: Any, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """MONAI's elastic transform, sample by sample (it does not batch), seeded from ``generator``."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device).item())
    elastic.set_random_state(seed=seed)
    images, labels = [], []
    with metadata_tracking_off():
        for sample_image, sample_label in zip(image, label):
            out = elastic({"image": sample_image, "label": sample_label.float()})
            images.append(torch.as_tensor(out["image"], device=image.device))
            labels.append(torch.as_tensor(out["label"], device=label.device).round().to(label.dtype))
    return torch.stack(images), torch.stack(labels)


class DeviceAugmentation(PrepareBatch):
    """The trainer's ``prepare_batch``: batch to the device, image to float32, then :func:`augment_batch`.

    The parameters are :func:`pipeline.training.loaders.augmentations`'s for the batch's spatial dimensions
    and shape (rot90 only where the first two spatial sizes are equal, as in the worker path).

    Args:
        elastic: include the elastic deformation (as ``build_train_dataset(elastic=...)``).
        seed: the run seed; draws are seeded from ``(seed, epoch, rank)``.
        rank: the process's rank; ``None``: ``torch.distributed``'s (0 without DDP).
        keys: the image and label keys of the batch.
    """

    def __init__(self, elastic: bool = False, seed: int = 0, rank: int | None = None, keys: Sequence[Hashable] = ("image", "label")) -> None:
        self.elastic = bool(elastic)
        self.seed = int(seed)
        self.rank = rank
        self.keys = tuple(keys)
        self.epoch = 0
        self._generators: dict[torch.device, torch.Generator] = {}
        self._parameters: dict[tuple[int, bool], AugmentationParameters] = {}

    def _rank(self) -> int:
        if self.rank is not None:
            return int(self.rank)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank()
        return 0

    def _seed(self) -> int:
        return int(np.random.SeedSequence([self.seed, self.epoch, self._rank()]).generate_state(1)[0])

    def set_epoch(self, epoch: int) -> None:
        """Reseed the draws for ``epoch`` (called with the sampler's ``set_epoch``, see :class:`pipeline.training.handlers.SamplerEpoch`)."""
        self.epoch = int(epoch)
        self._generators.clear()

    def generator(self, device: torch.device | str) -> torch.Generator:
        """The generator on ``device``, seeded from ``(seed, epoch, rank)`` on first use in the epoch."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self._seed())
        return self._generators[device]

    def parameters(self, spatial_dims: int, square: bool) -> AugmentationParameters:
        """The augmentation parameters of :func:`pipeline.training.loaders.augmentations` for these dimensions."""
        key = (spatial_dims, square)
        if key not in self._parameters:
            self._parameters[key] = augmentation_parameters(augmentations(spatial_dims, square, self.elastic, self.keys), spatial_dims)
        return self._parameters[key]

    def augment(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a batch already on its device; the image comes back float32."""
        parameters = self.parameters(image.ndim - 2, image.shape[2] == image.shape[3])
        return augment_batch(image, label, parameters, self.generator(image.device))

    def __call__(
        self, batchdata: Mapping[Hashable, Any], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
        return self.augment(torch.as_tensor(image), torch.as_tensor(label))
