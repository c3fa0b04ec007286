"""Batched augmentation on the training device: the worker path's parameters, its geometry exactly, its distribution, seeding, shapes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from monai.transforms import Affine, Compose, Flip, Rotate90
from monai.transforms.utils import create_rotate

from pipeline.training.loaders import augmentations, metadata_tracking_off
from pipeline.training.device_augmentation import (
    DeviceAugmentation,
    augment_batch,
    augmentation_parameters,
    augments_on_device,
    rotation_matrices,
)
from pipeline.core.errors import ConfigError
from pipeline.transforms.regions import LabelsToRegions

SIZE = 24
DRAWS = 1500


def test_parameters_are_read_from_the_worker_transforms() -> None:
    two_d = augmentation_parameters(augmentations(2, square=True), 2)
    assert two_d.flip_probs == (0.5, 0.5) and (two_d.rot90_prob, two_d.rot90_max_k, two_d.rot90_axes) == (0.5, 3, (0, 1))
    assert two_d.affine_prob == 0.2 and two_d.rotate_range == pytest.approx((np.deg2rad(15.0),)) and two_d.scale_range == (0.1, 0.1)
    assert (two_d.scale_prob, two_d.scale_factors, two_d.shift_prob, two_d.shift_offsets) == (0.5, (-0.1, 0.1), 0.5, (-0.1, 0.1))
    assert (two_d.gamma_prob, two_d.gamma_range, two_d.elastic) == (0.3, (0.7, 1.5), None)
    three_d = augmentation_parameters(augmentations(3, square=True, elastic=True), 3)
    assert three_d.flip_probs == (0.5, 0.5, 0.5) and three_d.rotate_range == pytest.approx((np.deg2rad(15.0),) * 3)
    assert type(three_d.elastic).__name__ == "Rand3DElasticd"
    assert augmentation_parameters(augmentations(2, square=False), 2).rot90_prob == 0.0


def test_a_transform_without_a_batched_counterpart_is_refused() -> None:
    from monai.transforms import RandGaussianNoised

    with pytest.raises(ConfigError, match="RandGaussianNoised has no batched counterpart"):
        augmentation_parameters([*augmentations(2, square=True), RandGaussianNoised(keys="image")], 2)


def test_augment_on_values() -> None:
    assert augments_on_device(True, "device") and not augments_on_device(True, "worker") and not augments_on_device(False, "device")
    with pytest.raises(ConfigError, match="augment_on: unknown place 'gpu'"):
        augments_on_device(True, "gpu")


# ----------------------------------------------------------------------------- geometry, against MONAI's transforms


def _only(parameters, **probabilities):
    """The parameters with every probability zero except those given."""
    zero = {"flip_probs": (0.0,) * len(parameters.flip_probs), "rot90_prob": 0.0, "affine_prob": 0.0, "scale_prob": 0.0, "shift_prob": 0.0, "gamma_prob": 0.0}
    return dataclasses.replace(parameters, elastic=None, **{**zero, **probabilities})


@pytest.mark.parametrize("dims", [2, 3])
def test_flips_and_rot90_are_monais_exactly(dims: int) -> None:
    parameters = _only(augmentation_parameters(augmentations(dims, square=True), dims), flip_probs=(0.5,) * dims, rot90_prob=0.5)
    shape = (8, 8, 5)[:dims]
    image = torch.arange(32 * 3 * np.prod(shape), dtype=torch.float32).view(32, 3, *shape)
    label = (image[:, :1] % 7).to(torch.uint8)
    out, out_label = augment_batch(image.clone(), label.clone(), parameters, torch.Generator().manual_seed(0))
    candidates = []
    for flips in np.ndindex(*(2,) * dims):
        flipped = Compose([Flip(spatial_axis=a) for a in range(dims) if flips[a]])
        for k in range(4):
            candidates.append(lambda x, f=flipped, k=k: torch.as_tensor(Rotate90(k, (0, 1))(f(x)) if k else f(x)))
    with metadata_tracking_off():
        matched = [next(i for i, c in enumerate(candidates) if torch.equal(c(image[b]), out[b])) for b in range(32)]
        assert all(torch.equal(candidates[m](label[b]), out_label[b]) for b, m in enumerate(matched))
    assert len(set(matched)) > 4  # many different flips and turns were drawn


@pytest.mark.parametrize(("shape", "angles", "scales"), [((20, 14), [0.2], [1.05, 0.93]), ((10, 12, 8), [0.1, -0.2, 0.25], [1.05, 0.93, 1.02])])
def test_the_affine_is_monais(shape: tuple[int, ...], angles: list[float], scales: list[float]) -> None:
    from pipeline.training.device_augmentation import _affine_theta

    dims = len(shape)
    rotation = rotation_matrices(torch.tensor([angles]))[0]
    torch.testing.assert_close(rotation, torch.as_tensor(create_rotate(dims, angles, backend="torch"))[:dims, :dims].float())
    image = torch.rand(3, *shape)
    expected = Affine(rotate_params=angles, scale_params=scales, mode="bilinear", padding_mode="zeros", image_only=True)(image)
    theta = _affine_theta((rotation @ torch.diag(torch.tensor(scales)))[None], shape)
    grid = torch.nn.functional.affine_grid(theta, [1, 3, *shape], align_corners=False)
    out = torch.nn.functional.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    torch.testing.assert_close(out, torch.as_tensor(expected), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- the distribution, against the worker path


def _pattern() -> torch.Tensor:
    """A label whose 8 flips/turns all differ: an L of class 1, a bar of class 2, a dot of class 3."""
    label = torch.zeros(1, SIZE, SIZE, dtype=torch.uint8)
    label[0, 4:18, 5:9] = 1
    label[0, 14:18, 9:16] = 1
    label[0, 6:9, 12:20] = 2
    label[0, 19:21, 17:20] = 3
    return label


def _worker_path(image: torch.Tensor, label: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    transform = Compose(augmentations(2, square=True))
    state = np.random.RandomState(0)
    for step in transform.transforms:
        if hasattr(step, "set_random_state"):
            step.set_random_state(state=state)
    images, labels = [], []
    with metadata_tracking_off():
        for index in range(count):
            state.seed(index)
            out = transform({"image": image.clone(), "label": label.clone()})
            images.append(torch.as_tensor(out["image"]).float())
            labels.append(torch.as_tensor(out["label"]).round().to(torch.uint8))
    return torch.stack(images), torch.stack(labels)


def _statistics(images: torch.Tensor, labels: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Share of each flip/turn of the reference label among the samples, share resampled, label areas, intensity moments."""
    views = [torch.rot90(reference.flip(-1) if f else reference, k, (-2, -1)) for f in (0, 1) for k in range(4)]
    agreement = torch.stack([(labels == v).flatten(1).float().mean(1) for v in views], 1)  # (N, 8)
    best = agreement.argmax(1)
    exact = agreement.max(1).values == 1.0
    stats = {f"view_{i}": float((best == i).float().mean()) for i in range(8)}
    stats["resampled"] = float((~exact).float().mean())
    area = (labels > 0).flatten(1).float().sum(1) / float((reference > 0).sum())
    stats["area_mean"], stats["area_std"] = float(area[~exact].mean()), float(area[~exact].std())
    stats["overlap_resampled"] = float(agreement.max(1).values[~exact].mean())  # how far rotations/scales move the pattern
    per_sample = images.flatten(1)
    stats["mean"], stats["std"] = float(per_sample.mean(1).mean()), float(per_sample.std(1).mean())
    stats["max"], stats["spread_of_max"] = float(per_sample.amax(1).mean()), float(per_sample.amax(1).std())
    low, high = per_sample.amin(1, keepdim=True), per_sample.amax(1, keepdim=True)
    normalised = ((per_sample - low) / (high - low)).mean(1)  # blind to scale and shift: gamma's mark
    stats["normalised_mean"], stats["normalised_spread"] = float(normalised.mean()), float(normalised.std())
    return stats


def test_the_batched_distribution_is_the_worker_paths() -> None:
    label = _pattern()
    image = torch.cat([label.float() + 0.5, torch.linspace(0, 1, SIZE * SIZE).view(1, SIZE, SIZE)])  # 2 channels
    worker_images, worker_labels = _worker_path(image, label, DRAWS)
    augmentation = DeviceAugmentation(seed=5)
    device_images, device_labels = augmentation.augment(image.expand(DRAWS, -1, -1, -1).clone(), label.expand(DRAWS, -1, -1, -1).clone())
    worker, device = _statistics(worker_images, worker_labels, label), _statistics(device_images, device_labels, label)
    tolerances = {"area_std": 0.03, "overlap_resampled": 0.03, "mean": 0.02, "std": 0.02, "max": 0.03, "spread_of_max": 0.03}
    tolerances.update(normalised_mean=0.006, normalised_spread=0.006)  # views and shares: 0.045, about 4 standard errors
    for key in worker:
        tolerance = tolerances.get(key, 0.045)
        assert abs(worker[key] - device[key]) <= tolerance, (key, worker[key], device[key])
    assert 0.15 < device["resampled"] < 0.25  # the affine's 0.2
    assert set(torch.unique(device_labels).tolist()) <= {0, 1, 2, 3}


def test_labels_stay_aligned_with_the_image() -> None:
    """An image equal to its label warps onto it: exactly after flips/turns, almost everywhere after rotation and scale."""
    parameters = dataclasses.replace(augmentation_parameters(augmentations(2, square=True), 2), scale_prob=0.0, shift_prob=0.0, gamma_prob=0.0)
    label = _pattern().expand(200, -1, -1, -1).clone()
    image, out_label = augment_batch(label.float(), label.clone(), parameters, torch.Generator().manual_seed(1))
    same = (image.round().to(torch.uint8) == out_label).flatten(1).float().mean(1)
    exact = torch.tensor([torch.equal(image[b], out_label[b].float()) for b in range(200)])
    assert exact.float().mean() > 0.7 and same.min() > 0.95


def test_region_channels_warp_as_the_class_map_does() -> None:
    parameters = augmentation_parameters(augmentations(3, square=True), 3)
    classes = torch.randint(0, 4, (6, 1, 10, 10, 6), dtype=torch.uint8)
    regions = torch.stack([LabelsToRegions()(c) for c in classes])
    image = torch.rand(6, 4, 10, 10, 6)
    _, warped_classes = augment_batch(image.clone(), classes, parameters, torch.Generator().manual_seed(3))
    _, warped_regions = augment_batch(image.clone(), regions, parameters, torch.Generator().manual_seed(3))
    assert torch.equal(warped_regions, torch.stack([LabelsToRegions()(c) for c in warped_classes]))


# ----------------------------------------------------------------------------- seeding, shapes


def test_draws_are_seeded_by_seed_epoch_and_rank() -> None:
    image, label = torch.rand(8, 20, 16, 16), torch.randint(0, 4, (8, 1, 16, 16), dtype=torch.uint8)

    def run(seed: int, epoch: int, rank: int) -> torch.Tensor:
        augmentation = DeviceAugmentation(seed=seed, rank=rank)
        augmentation.set_epoch(epoch)
        return torch.cat([augmentation.augment(image.clone(), label.clone())[0] for _ in range(2)])

    first = run(1, 2, 0)
    assert torch.equal(first, run(1, 2, 0))
    for other in (run(2, 2, 0), run(1, 3, 0), run(1, 2, 1)):
        assert not torch.equal(first, other)
    assert not torch.equal(first[:8], first[8:])  # successive batches of an epoch differ


@pytest.mark.parametrize(
    ("image_shape", "label_channels"),
    [((4, 4, 16, 16), 1), ((4, 20, 16, 16), 1), ((4, 20, 16, 12), 3), ((2, 4, 12, 12, 8), 1), ((2, 4, 12, 12, 8), 3)],
    ids=["2d", "2.5d", "2.5d-non-square-regions", "3d", "3d-regions"],
)
def test_shapes_and_dtypes(image_shape: tuple[int, ...], label_channels: int) -> None:
    batch = {"image": torch.rand(image_shape, dtype=torch.float32).half(), "label": torch.randint(0, 2, (image_shape[0], label_channels, *image_shape[2:]), dtype=torch.uint8)}
    image, label = DeviceAugmentation(seed=0)(batch, torch.device("cpu"))
    assert image.shape == image_shape and image.dtype == torch.float32
    assert label.shape == batch["label"].shape and label.dtype == torch.uint8
    assert set(torch.unique(label).tolist()) <= {0, 1}


def test_elastic_runs_per_sample_on_the_batch() -> None:
    augmentation = DeviceAugmentation(elastic=True, seed=0)
    augmentation.parameters(2, True).elastic.prob = 1.0  # deform every sample here
    image, label = torch.rand(3, 4, 16, 16), torch.randint(0, 4, (3, 1, 16, 16), dtype=torch.uint8)
    out, out_label = augmentation.augment(image.clone(), label.clone())
    assert out.shape == image.shape and out_label.dtype == torch.uint8 and set(torch.unique(out_label).tolist()) <= {0, 1, 2, 3}
