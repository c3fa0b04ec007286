"""Training datasets and samplers over the cache: shapes per mode, stacking, tumour ratios, seeding, memory."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.preprocessing.cache import FORMAT_VERSION, complete_case_ids
from pipeline.training.loaders import (
    CachedCaseStore,
    ForegroundWeightedSampler,
    augmentations,
    build_train_dataset,
    build_train_loader,
    build_train_sampler,
    patch_transforms,
    slice_probabilities,
    check_class_ratios,
    slice_transforms,
    with_class_shares,
)
from pipeline.core.errors import ConfigError, InputError

DEPTH, WIDTH, HEIGHT = 12, 20, 18
TUMOUR_SLICES = range(4, 8)


def write_cached_case(root: Path, case_id: str, case_number: int, labelled: bool = True) -> None:
    """One case in the cache format; image voxels hold ``z + 16 * c + 64 * case_number`` (exact in float16)."""
    folder = root / case_id
    folder.mkdir(parents=True)
    z = np.arange(DEPTH)[:, None, None, None]
    c = np.arange(4)[None, :, None, None]
    image = np.broadcast_to(z + 16 * c + 64 * case_number, (DEPTH, 4, WIDTH, HEIGHT)).astype(np.float16)
    label = np.zeros((DEPTH, WIDTH, HEIGHT), np.uint8)
    rng = np.random.default_rng(case_number)
    label[TUMOUR_SLICES.start : TUMOUR_SLICES.stop, 6:14, 5:12] = rng.integers(1, 4, size=(4, 8, 7))
    np.save(folder / "image.npy", image)
    if labelled:
        np.save(folder / "label.npy", label)
    meta = {
        "case_id": case_id,
        "shape": [DEPTH, 4, WIDTH, HEIGHT],
        "spacing": [1.0, 1.0, 1.0],
        "foreground_per_slice": np.count_nonzero(label, axis=(1, 2)).tolist() if labelled else None,
        "has_label": labelled,
        "format_version": FORMAT_VERSION,
        "complete": True,
    }
    (folder / "meta.json").write_text(json.dumps(meta))


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    root = tmp_path / "cache"
    for number in range(4):
        write_cached_case(root, f"case_{number}", number)
    return root


def test_case_listing(cache: Path) -> None:
    write_cached_case(cache, "unfinished", 9)
    meta_path = cache / "unfinished" / "meta.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "complete": False}))
    assert complete_case_ids(cache) == ["case_0", "case_1", "case_2", "case_3"]


@pytest.mark.parametrize("augment", [False, True])
def test_sample_shapes_per_mode(cache: Path, augment: bool) -> None:
    expected = {"2d": (4, 32, 32), "2.5d": (4 * 5, 32, 32), "3d": (4, 16, 16, 8)}
    for mode, shape in expected.items():
        dataset = build_train_dataset(cache, None, mode, context=2, patch_size=(16, 16, 8), augment=augment)
        sample = dataset[5]
        assert tuple(sample["image"].shape) == shape, mode
        assert tuple(sample["label"].shape) == (1, *shape[1:]), mode
        assert sample["image"].dtype == torch.float32 and sample["label"].dtype == torch.uint8
        assert type(sample["image"]) is torch.Tensor  # plain tensors, no MONAI metadata
    assert len(build_train_dataset(cache, None, "2.5d")) == 4 * DEPTH
    assert len(build_train_dataset(cache, ["case_1"], "3d", patch_size=8, patches_per_case=3)) == 3


def test_slice_size_default_and_explicit(cache: Path) -> None:
    assert build_train_dataset(cache, None, "2d").slice_size == (32, 32)  # 20 x 18 rounded up to 16s
    sample = build_train_dataset(cache, None, "2d", slice_size=(16, 12), augment=False)[0]
    assert tuple(sample["image"].shape) == (4, 16, 12)


@pytest.mark.parametrize("padding", ["replicate", "reflect"])
def test_two_and_a_half_d_sample_content(cache: Path, padding: str) -> None:
    dataset = build_train_dataset(cache, None, "2.5d", context=2, slice_size=(WIDTH, HEIGHT), augment=False, padding=padding)
    index = 2 * DEPTH + 1  # case_2, slice 1
    sample = dataset[index]
    assert (sample["case_id"], sample["slice_index"]) == ("case_2", 1)
    image = sample["image"].numpy()
    slices = [0, 0, 1, 2, 3] if padding == "replicate" else [1, 0, 1, 2, 3]
    for block, z in enumerate(slices):
        for c in range(4):
            assert np.all(image[4 * block + c] == z + 16 * c + 64 * 2)
    label = np.load(cache / "case_2" / "label.npy")
    np.testing.assert_array_equal(sample["label"].numpy()[0], label[1])
    tumour_sample = dataset[2 * DEPTH + 5]
    np.testing.assert_array_equal(tumour_sample["label"].numpy()[0], label[5])


def test_two_d_is_the_centre_slice_alone(cache: Path) -> None:
    sample = build_train_dataset(cache, None, "2d", slice_size=(WIDTH, HEIGHT), augment=False)[DEPTH + 6]
    assert [float(sample["image"][c, 0, 0]) for c in range(4)] == [6 + 16 * c + 64 for c in range(4)]


def test_augmented_labels_stay_integer_classes(cache: Path) -> None:
    for mode in ("2.5d", "3d"):
        dataset = build_train_dataset(cache, None, mode, patch_size=(16, 16, 8), augment=True, elastic=True, seed=3)
        seen: set[int] = set()
        for index in range(len(dataset)):
            for epoch in range(6 if mode == "3d" else 1):
                dataset.set_epoch(epoch)
                label = dataset[index]["label"]
                assert label.dtype == torch.uint8
                seen.update(torch.unique(label).tolist())
        assert seen <= {0, 1, 2, 3} and seen & {1, 2, 3}, mode


def test_augmentation_changes_samples_and_is_seeded(cache: Path) -> None:
    first = build_train_dataset(cache, None, "2.5d", seed=7)
    second = build_train_dataset(cache, None, "2.5d", seed=7)
    other = build_train_dataset(cache, None, "2.5d", seed=8)
    plain = build_train_dataset(cache, None, "2.5d", augment=False)
    indices = range(0, len(first), 3)
    same = [torch.equal(first[i]["image"], second[i]["image"]) and torch.equal(first[i]["label"], second[i]["label"]) for i in indices]
    assert all(same)
    assert not all(torch.equal(first[i]["image"], other[i]["image"]) for i in indices)
    assert not all(torch.equal(first[i]["image"], plain[i]["image"]) for i in indices)
    first.set_epoch(1)
    assert not all(torch.equal(first[i]["image"], second[i]["image"]) for i in indices)
    patches = build_train_dataset(cache, None, "3d", patch_size=8, seed=7), build_train_dataset(cache, None, "3d", patch_size=8, seed=7)
    for i in range(4):
        assert torch.equal(patches[0][i]["image"], patches[1][i]["image"])


def _recipe(transforms: list) -> list[tuple[str, float | None]]:
    """Each transform's kind (without its 2D / 3D marker) and probability."""
    return [(type(t).__name__.replace("2D", "").replace("3D", ""), getattr(t, "prob", None)) for t in transforms]


@pytest.mark.parametrize("elastic", [False, True])
def test_slices_and_patches_share_one_augmentation_recipe(elastic: bool) -> None:
    slices = slice_transforms((16, 16), context=1, elastic=elastic).transforms
    patches = patch_transforms((8, 8, 4), elastic=elastic).transforms
    assert _recipe(slices[3:-2]) == _recipe(augmentations(2, square=True, elastic=elastic))  # after stack and pad/crop, before the final types
    assert _recipe(patches[1:-2]) == _recipe(augmentations(3, square=True, elastic=elastic))  # after the patch read
    two_d, three_d = _recipe(slices[3:-2]), _recipe(patches[1:-2])
    assert three_d == [three_d[0], *two_d]  # the same recipe; 3D flips one more axis
    kinds = [kind for kind, _ in two_d]
    assert kinds[:3] == ["RandFlipd", "RandFlipd", "RandRotate90d"] and ("RandElasticd" in kinds) == elastic
    assert [t.keys for t in slices[3:-2]] == [t.keys for t in patches[2:-2]]


def test_rot90_only_when_the_axial_plane_is_square() -> None:
    assert "RandRotate90d" not in [kind for kind, _ in _recipe(slice_transforms((16, 12)).transforms)]
    assert "RandRotate90d" not in [kind for kind, _ in _recipe(patch_transforms((8, 6, 4)).transforms)]
    assert not any(kind.startswith("Rand") and kind != "RandPosNegPatchd" for kind, _ in _recipe(patch_transforms((8, 8, 4), augment=False).transforms))


def test_slice_probabilities() -> None:
    counts = np.array([0, 0, 5, 0, 9, 0, 0, 0])
    probabilities = slice_probabilities(counts, counts.size, 0.6)
    assert probabilities.sum() == pytest.approx(1.0)
    assert probabilities[counts > 0].sum() == pytest.approx(0.6)
    assert probabilities[2] == probabilities[4] and probabilities[0] > 0
    np.testing.assert_allclose(slice_probabilities(counts, 8, None), 1 / 8)
    np.testing.assert_allclose(slice_probabilities(np.zeros(4), 4, 0.6), 1 / 4)
    with pytest.raises(ConfigError):
        slice_probabilities(counts, 8, 1.2)


@pytest.mark.parametrize("ratio", [0.1, 0.6, 0.7])
def test_sampler_draws_the_configured_tumour_fraction(cache: Path, ratio: float) -> None:
    dataset = build_train_dataset(cache, None, "2.5d", foreground_ratio=ratio)
    sampler = build_train_sampler(dataset, num_samples=20_000)
    draws = np.fromiter(iter(sampler), dtype=np.int64)
    tumour = dataset.foreground_per_item[draws] > 0
    assert abs(tumour.mean() - ratio) < 0.02
    assert len(set(draws[~tumour].tolist())) > 10  # empty slices are still drawn, and varied
    natural = len(TUMOUR_SLICES) / DEPTH
    assert abs(tumour.mean() - natural) > 0.1  # far from what uniform drawing gives


def test_class_shares_mix_into_the_draw_probabilities() -> None:
    base = np.full(8, 1 / 8)
    holds = np.array([False, False, True, False, False, False, False, True])
    mixed = with_class_shares(base, {"NEC": holds}, {"NEC": 0.5})
    assert mixed.sum() == pytest.approx(1.0)
    assert mixed[holds].sum() == pytest.approx(0.5 + 0.5 * 2 / 8)
    assert mixed[2] == mixed[7] and mixed[0] == pytest.approx(0.5 / 8)
    np.testing.assert_allclose(with_class_shares(base, {"NEC": np.zeros(8, bool)}, {"NEC": 0.5}), base)  # no NEC: share given back


def test_class_ratios_name_classes_of_the_task_with_shares_that_fit() -> None:
    assert check_class_ratios({"NEC": 0.2, "ET": 0.1}) == {"NEC": 1, "ET": 3}
    assert check_class_ratios(None) == {}
    for shares, message in (({"NEC": 0.7, "ED": 0.4}, "summing to at most 1"), ({"NEC": -0.1}, "in \\[0, 1\\]"), ({"CORE": 0.2}, "unknown class CORE")):
        with pytest.raises(ConfigError, match=message):
            check_class_ratios(shares, "brats-glioma")
    with pytest.raises(ConfigError, match="3D patches"):
        check_class_ratios({"NEC": 0.2}, mode="3d")


def test_sampler_gives_the_named_class_its_share_of_slices(cache: Path) -> None:
    label_path = cache / "case_0" / "label.npy"
    label = np.load(label_path)
    label[label == 1] = 2
    label[5, 7, 7] = 1  # case_0 keeps NEC in one slice; the other cases hold it in all their tumour slices
    np.save(label_path, label)
    dataset = build_train_dataset(cache, None, "2.5d", foreground_ratio=0.6)
    holds_nec = dataset.slices_holding(1)
    assert holds_nec.sum() == 1 + 3 * len(TUMOUR_SLICES) and holds_nec[5] and not holds_nec[4]
    plain = np.fromiter(iter(build_train_sampler(dataset, num_samples=20_000)), dtype=np.int64)
    weighted = build_train_sampler(dataset, num_samples=20_000, class_ratios={"NEC": 0.5}, task="brats-glioma")
    draws = np.fromiter(iter(weighted), dtype=np.int64)
    natural = holds_nec[plain].mean()
    assert abs(holds_nec[draws].mean() - (0.5 + 0.5 * natural)) < 0.02
    assert dataset.foreground_per_item[draws].astype(bool).mean() > 0.6 + 0.05  # NEC slices are tumour slices
    with pytest.raises(ConfigError, match="unknown class CORE"):
        build_train_sampler(dataset, class_ratios={"CORE": 0.2})
    patches = build_train_dataset(cache, None, "3d", patch_size=(16, 16, 8))
    with pytest.raises(ConfigError, match="class_ratios"):
        build_train_sampler(patches, class_ratios={"NEC": 0.2})


def test_sampler_epochs_and_ranks(cache: Path) -> None:
    dataset = build_train_dataset(cache, None, "2d")
    full = build_train_sampler(dataset, num_samples=100, seed=1)
    ranks = [build_train_sampler(dataset, num_samples=100, seed=1, num_replicas=2, rank=r) for r in range(2)]
    assert len(full) == 100 and [len(r) for r in ranks] == [50, 50]
    all_draws = list(full)
    assert list(ranks[0]) == all_draws[0::2] and list(ranks[1]) == all_draws[1::2]
    assert list(full) == all_draws  # same epoch, same draws
    full.set_epoch(1)
    assert list(full) != all_draws
    assert dataset.epoch == 1  # the sampler moves the dataset's augmentation epoch too
    odd = ForegroundWeightedSampler(np.ones(10), num_samples=7, num_replicas=3, rank=2)
    assert len(odd) == 3 and len(list(odd)) == 3
    with pytest.raises(ConfigError):
        build_train_sampler(dataset, distributed=True)  # no process group here
    with pytest.raises(ConfigError):
        ForegroundWeightedSampler(np.ones(10), num_samples=4, num_replicas=2, rank=2)


def test_patch_dataset_positive_centre_fraction(cache: Path) -> None:
    dataset = build_train_dataset(cache, None, "3d", patch_size=8, foreground_ratio=0.75, augment=False, patches_per_case=150)
    labels = {cid: np.load(cache / cid / "label.npy") for cid in dataset.case_ids}
    positives = 0
    for index in range(len(dataset)):
        sample = dataset[index]
        z, x, y = sample["patch_centre_zxy"].tolist()
        positives += bool(labels[sample["case_id"]][z, x, y])
    assert abs(positives / len(dataset) - 0.75) < 0.05


def test_memory_maps_are_bounded_and_not_pickled(cache: Path) -> None:
    dataset = build_train_dataset(cache, None, "2.5d", max_open_cases=2, augment=False)
    for index in range(len(dataset)):
        dataset[index]
        assert len(dataset.store) <= 2
    assert len(dataset.store) == 2
    image, label = dataset.store.arrays(0)
    assert isinstance(image, np.memmap) and image.dtype == np.float16 and label.dtype == np.uint8
    copied = pickle.loads(pickle.dumps(dataset))
    assert len(copied.store) == 0  # each worker maps the files itself
    assert torch.equal(copied[7]["image"], dataset[7]["image"])
    with pytest.raises(ConfigError):
        CachedCaseStore(cache, ["case_0"], [(DEPTH, 4, WIDTH, HEIGHT)], max_open=0)


@pytest.mark.parametrize("workers", [0, 1])
def test_data_loader(cache: Path, workers: int) -> None:
    dataset = build_train_dataset(cache, None, "2.5d", seed=2)
    sampler = build_train_sampler(dataset, num_samples=16, seed=2)
    batches = list(build_train_loader(dataset, batch_size=4, sampler=sampler, num_workers=workers))
    assert len(batches) == 4
    assert tuple(batches[0]["image"].shape) == (4, 20, 32, 32) and tuple(batches[0]["label"].shape) == (4, 1, 32, 32)
    with pytest.raises(ConfigError, match="more than the 16 samples"):
        build_train_loader(dataset, batch_size=32, sampler=sampler)
    # the samples do not depend on the number of workers
    reference = [dataset[i] for i in list(sampler)[:4]]
    assert torch.equal(batches[0]["image"], torch.stack([s["image"] for s in reference]))


def test_float16_samples(cache: Path) -> None:
    for augment in (False, True):
        sample = build_train_dataset(cache, None, "2.5d", augment=augment, image_dtype="float16")[3]
        assert sample["image"].dtype == torch.float16
    with pytest.raises(ConfigError):
        build_train_dataset(cache, None, "2.5d", image_dtype="int8")


def test_bad_input(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        build_train_dataset(cache, None, "4d")
    with pytest.raises(ConfigError):
        build_train_dataset(cache, None, "2d", foreground_ratio=1.5)
    with pytest.raises(ConfigError):
        build_train_dataset(cache, [], "2d")
    with pytest.raises(InputError, match="meta.json missing"):
        build_train_dataset(cache, ["nope"], "2d")
    write_cached_case(cache, "unlabelled", 5, labelled=False)
    with pytest.raises(InputError, match="no label"):
        build_train_dataset(cache, ["unlabelled"], "2.5d")
    np.save(cache / "case_1" / "image.npy", np.zeros((DEPTH, 4, WIDTH, HEIGHT), np.float32))
    dataset = build_train_dataset(cache, ["case_1"], "2d")
    with pytest.raises(InputError, match="expected float16"):
        dataset[0]
    with pytest.raises(InputError):
        complete_case_ids(tmp_path / "missing")


def test_bundle_style_instantiation(cache: Path) -> None:
    from monai.bundle import ConfigParser

    parser = ConfigParser(
        {
            "cache_dir": str(cache),
            "train_dataset": {
                "_target_": "pipeline.training.loaders.build_train_dataset",
                "cache_dir": "@cache_dir",
                "case_ids": ["case_0", "case_2"],
                "mode": "2.5d",
                "context": 1,
                "slice_size": [32, 32],
                "foreground_ratio": 0.5,
            },
            "train_sampler": {"_target_": "pipeline.training.loaders.build_train_sampler", "dataset": "@train_dataset", "num_samples": 8},
            "train_loader": {
                "_target_": "pipeline.training.loaders.build_train_loader",
                "dataset": "@train_dataset",
                "sampler": "@train_sampler",
                "batch_size": 4,
            },
        }
    )
    batch = next(iter(parser.get_parsed_content("train_loader")))
    assert tuple(batch["image"].shape) == (4, 12, 32, 32)


def test_preprocessed_cache(request: pytest.FixtureRequest) -> None:
    pytest.importorskip("pipeline.synth")
    pytest.importorskip("pipeline.datasets.datalist")
    tiny_cache = request.getfixturevalue("tiny_cache")
    ids = complete_case_ids(tiny_cache)
    assert ids
    for mode in ("2d", "2.5d", "3d"):
        dataset = build_train_dataset(tiny_cache, ids, mode, patch_size=(16, 16, 16), slice_size=(32, 32))
        sample = dataset[0]
        assert sample["image"].dtype == torch.float32 and set(torch.unique(sample["label"]).tolist()) <= {0, 1, 2, 3}
    dataset = build_train_dataset(tiny_cache, ids, "2.5d", slice_size=(32, 32))
    batch = next(iter(build_train_loader(dataset, batch_size=8, sampler=build_train_sampler(dataset, num_samples=64))))
    assert tuple(batch["image"].shape) == (8, 20, 32, 32)
