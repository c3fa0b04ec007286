import numpy as np
import pytest

from pipeline.tasks.labels import (
    CONVENTIONS,
    ED,
    ET,
    NEC,
    SCORED_STRUCTURES,
    decode_probabilities,
    get_convention,
    labels_to_regions,
    region_masks,
    regions_to_labels,
)


@pytest.mark.parametrize(
    "name, file_labels, internal",
    [
        ("brats2017", [0, 1, 2, 4], [0, NEC, ED, ET]),
        ("brats2023", [0, 1, 2, 3], [0, NEC, ED, ET]),
        ("msd", [0, 1, 2, 3], [0, ED, NEC, ET]),
        ("internal", [0, 1, 2, 3], [0, NEC, ED, ET]),
    ],
)
def test_forward_map_and_exact_round_trip(name, file_labels, internal):
    convention = get_convention(name)
    rng = np.random.default_rng(0)
    seg = rng.choice(file_labels, size=(9, 7, 5)).astype(np.int16)
    mapped = convention.to_internal(seg)
    assert mapped.dtype == np.uint8
    for source, target in zip(file_labels, internal):
        assert np.all(mapped[seg == source] == target)
    np.testing.assert_array_equal(convention.from_internal(mapped), seg)
    np.testing.assert_array_equal(convention.to_internal(convention.from_internal(mapped)), mapped)


def test_unknown_label_is_refused_with_the_values_named():
    with pytest.raises(ValueError, match=r"labels \[3\] are not in the brats2017"):
        get_convention("brats2017").to_internal(np.array([0, 1, 3]))


def test_resection_cavity_refused_unless_opted_in():
    convention = get_convention("brats2023")
    seg = np.array([0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="only accepted when mapping them is asked for"):
        convention.to_internal(seg)
    np.testing.assert_array_equal(convention.to_internal(seg, allow_optional=True), [0, NEC, ED, ET, 0])


def test_from_internal_rejects_out_of_range_values():
    with pytest.raises(ValueError, match="internal labels must be 0-3"):
        get_convention("brats2017").from_internal(np.array([0, 5]))


def test_regions_follow_brats_definitions():
    seg = np.array([0, NEC, ED, ET])
    masks = region_masks(seg)
    assert masks["WT"].tolist() == [False, True, True, True]
    assert masks["TC"].tolist() == [False, True, False, True]
    assert masks["ET"].tolist() == [False, False, False, True]
    assert masks["NEC"].tolist() == [False, True, False, False]
    assert masks["ED"].tolist() == [False, False, True, False]


def test_region_channels_decode_exactly():
    seg = np.random.default_rng(1).integers(0, 4, size=(6, 6, 6)).astype(np.uint8)
    regions = labels_to_regions(seg)
    assert regions.shape == (3, 6, 6, 6)
    np.testing.assert_array_equal(regions[1], seg > 0)  # channel order TC, WT, ET
    np.testing.assert_array_equal(regions_to_labels(regions), seg)


def test_every_convention_names_its_exported_labels():
    for convention in CONVENTIONS.values():
        assert set(convention.internal_names()) == {NEC, ED, ET}


def test_region_masks_of_a_tensor_match_those_of_an_array():
    import torch

    seg = np.random.default_rng(3).integers(0, 4, size=(6, 5, 4)).astype(np.uint8)
    from_array, from_tensor = region_masks(seg), region_masks(torch.from_numpy(seg))
    assert list(from_array) == list(from_tensor) and set(from_array) == set(SCORED_STRUCTURES)
    for name in from_array:
        assert isinstance(from_tensor[name], torch.Tensor)
        np.testing.assert_array_equal(from_tensor[name].numpy(), from_array[name])


def test_decode_probabilities_of_both_output_modes():
    seg = np.random.default_rng(4).integers(0, 4, size=(6, 5, 4)).astype(np.uint8)
    one_hot = np.stack([seg == value for value in range(4)]).astype(np.float32)
    decoded = decode_probabilities(0.1 + 0.8 * one_hot, "softmax")
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, seg)
    regions = labels_to_regions(seg).astype(np.float32)
    np.testing.assert_array_equal(decode_probabilities(0.3 + 0.4 * regions, "regions"), seg)
    np.testing.assert_array_equal(decode_probabilities(0.2 + 0.2 * regions, "regions"), np.zeros_like(seg))  # all below 0.5
