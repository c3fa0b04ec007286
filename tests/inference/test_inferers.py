"""Whole-volume inference: shapes, batching, mirrored test-time augmentation, ensembles and label decoding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.training.loaders import stack_context
from pipeline.core.errors import ConfigError
from pipeline.inference.inferers import EngineInferer, EnsembleInferer, VolumeInferer
from pipeline.tasks.labels import labels_to_regions
from pipeline.networks import build_network


class CountingNetwork(torch.nn.Module):
    """Wraps a network and records the batch shape of every forward pass."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network
        self.spatial_divisor = network.spatial_divisor
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        return self.network(x)


def _network(mode: str, output_mode: str = "softmax", context: int = 1) -> CountingNetwork:
    torch.manual_seed(0)
    net = build_network(mode=mode, context=context, output_mode=output_mode, channels=(4, 8, 16), strides=(2, 2), num_res_units=0)
    return CountingNetwork(net.eval())


VOLUME = np.random.default_rng(0).standard_normal((11, 4, 13, 10)).astype(np.float16)  # (Z, C, X, Y), X and Y not multiples of 4


@pytest.mark.parametrize("mode", ["2d", "2.5d", "3d"])
@pytest.mark.parametrize("output_mode", ["softmax", "regions"])
def test_probabilities_cover_the_volume(mode: str, output_mode: str) -> None:
    inferer = VolumeInferer(mode, context=1, output_mode=output_mode, sw_batch_size=4, roi_size=(8, 8, 8) if mode == "3d" else None)
    probabilities = inferer(_network(mode, output_mode), VOLUME, "cpu")
    channels = 3 if output_mode == "regions" else 4
    assert probabilities.shape == (channels, 11, 13, 10)
    assert probabilities.dtype == torch.float32 and probabilities.device.type == "cpu"
    assert float(probabilities.min()) >= 0.0 and float(probabilities.max()) <= 1.0
    if output_mode == "softmax":
        torch.testing.assert_close(probabilities.sum(0), torch.ones(11, 13, 10))
    labels = inferer.to_labels(probabilities)
    assert labels.shape == (11, 13, 10) and labels.dtype == np.uint8 and labels.max() <= 3


@pytest.mark.parametrize("mode", ["2d", "2.5d"])
def test_slices_are_batched_not_looped(mode: str) -> None:
    network = _network(mode)
    VolumeInferer(mode, context=1, sw_batch_size=4)(network, VOLUME, "cpu")
    assert len(network.calls) == math.ceil(11 / 4)
    assert [c[0] for c in network.calls] == [4, 4, 3]
    assert all(c[2] % 4 == 0 and c[3] % 4 == 0 for c in network.calls)  # padded to the network's multiple


def test_slice_outputs_match_single_slice_predictions() -> None:
    """Each slice's probabilities equal the network applied to that slice's own 2.5D stack."""
    network = _network("2.5d")
    probabilities = VolumeInferer("2.5d", context=1, sw_batch_size=5)(network, VOLUME, "cpu")
    for z in (0, 6, 10):
        stack = torch.as_tensor(stack_context(VOLUME, [z], 1)).float()
        padded = torch.nn.functional.pad(stack, (0, 2, 0, 3))  # X 13 -> 16, Y 10 -> 12
        with torch.no_grad():
            expected = torch.softmax(network.network(padded), dim=1)[0, :, :13, :10]
        torch.testing.assert_close(probabilities[:, z], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["2d", "3d"])
def test_tta_is_the_mean_of_mirrored_passes(mode: str) -> None:
    network = _network(mode)
    roi = (8, 8, 8) if mode == "3d" else None
    plain = VolumeInferer(mode, roi_size=roi, sw_batch_size=4)
    with_tta = VolumeInferer(mode, roi_size=roi, sw_batch_size=4, tta=True)
    averaged = with_tta(network, VOLUME, "cpu")
    # the volume is (Z, C, X, Y): X and Y are axes 2 and 3, Z is axis 0
    axes = [(2,), (3,), (0,)] if mode == "3d" else [(2,), (3,)]
    combos = [()] + [a for a in axes] + [tuple(sum(p, ())) for p in __import__("itertools").combinations(axes, 2)]
    if mode == "3d":
        combos.append((0, 2, 3))
    assert len(combos) == len(with_tta.flips())
    # probabilities are (K, Z, X, Y): a volume axis a of (Z, C, X, Y) is axis a+1 there, except Z (0 -> 1)
    out_axis = {0: 1, 2: 2, 3: 3}
    passes = [
        torch.flip(plain(network, np.ascontiguousarray(np.flip(VOLUME, axis=c)) if c else VOLUME, "cpu"), [out_axis[a] for a in c])
        if c
        else plain(network, VOLUME, "cpu")
        for c in combos
    ]
    torch.testing.assert_close(averaged, torch.stack(passes).mean(0), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(averaged, passes[0], atol=1e-4)


def test_region_decoding_inverts_region_encoding() -> None:
    labels = np.random.default_rng(1).integers(0, 4, size=(3, 5, 6)).astype(np.uint8)
    regions = torch.as_tensor(labels_to_regions(labels)).float() * 0.8 + 0.1
    assert np.array_equal(VolumeInferer("2d", output_mode="regions").to_labels(regions), labels)
    one_hot = torch.nn.functional.one_hot(torch.as_tensor(labels).long(), 4).permute(3, 0, 1, 2).float()
    assert np.array_equal(VolumeInferer("2d").to_labels(one_hot), labels)


def test_engine_inferer_handles_a_batch_of_volumes() -> None:
    batch = torch.as_tensor(np.stack([VOLUME, VOLUME]))
    out = EngineInferer(VolumeInferer("2d", sw_batch_size=8))(batch, _network("2d"))
    assert out.shape == (2, 4, 11, 13, 10)


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="roi sizes"):
        VolumeInferer("3d", roi_size=(8, 8))
    with pytest.raises(ConfigError, match="unknown mode"):
        VolumeInferer("4d")
    with pytest.raises(ConfigError, match="Z, C, X, Y"):
        VolumeInferer("2d")(_network("2d"), VOLUME[0], "cpu")


def _member(mode: str, seed: int, output_mode: str = "softmax") -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(mode=mode, context=1, output_mode=output_mode, channels=(4, 8, 16), strides=(2, 2), num_res_units=0).eval()


@pytest.mark.parametrize("mode", ["2.5d", "3d"])
def test_ensemble_is_the_mean_of_its_members_probabilities(mode: str) -> None:
    roi = (8, 8, 8) if mode == "3d" else None
    with_tta = VolumeInferer(mode, context=1, roi_size=roi, sw_batch_size=4, tta=True)
    plain = VolumeInferer(mode, context=1, roi_size=roi, sw_batch_size=4)
    networks = [_member(mode, 1), _member(mode, 2)]
    ensemble = EnsembleInferer([with_tta, plain], names=["runs/fold0", "runs/fold1"])
    first, second = with_tta(networks[0], VOLUME, "cpu"), plain(networks[1], VOLUME, "cpu")
    assert not torch.allclose(first, second, atol=1e-3)  # the members differ
    torch.testing.assert_close(ensemble(networks, VOLUME, "cpu"), (first + second) / 2, atol=1e-6, rtol=1e-5)
    assert ensemble.passes == len(with_tta.flips()) + 1
    ensemble.tta = False
    assert not with_tta.tta and ensemble.passes == 2


def test_one_member_ensemble_is_bit_identical_to_the_single_model() -> None:
    inferer = VolumeInferer("2.5d", context=1, sw_batch_size=4, tta=True)
    network = _member("2.5d", 3)
    single = inferer(network, VOLUME, "cpu")
    assert torch.equal(EnsembleInferer([inferer])([network], VOLUME, "cpu"), single)
    probabilities, pass_entropy = inferer.with_pass_entropy(network, VOLUME, "cpu")
    assert torch.equal(probabilities, single)  # asking for the uncertainty changes nothing else
    assert pass_entropy.shape == single.shape[1:]


def test_ensemble_members_must_predict_the_same_classes() -> None:
    with pytest.raises(ConfigError) as raised:
        EnsembleInferer([VolumeInferer("2d"), VolumeInferer("2d", output_mode="regions")], names=["runs/softmax", "runs/regions"])
    message = str(raised.value)
    assert message.startswith("runs/regions: outputs regions probabilities but runs/softmax outputs softmax") and "\n" not in message
    with pytest.raises(ConfigError, match="2 inferers but 1 networks"):
        EnsembleInferer([VolumeInferer("2d"), VolumeInferer("2d")])([_member("2d", 0)], VOLUME, "cpu")


# ---- tasks ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("task", "channels", "output_mode"), [("whole-tumour", ["flair"], None), ("brats2024-post-treatment", None, None), ("brats-glioma", ["flair"], "regions")])
def test_inference_decodes_the_task(task, channels, output_mode) -> None:
    from pipeline.tasks.task import model_task, resolve_task

    spec = resolve_task(task, channels).to_dict()
    network = build_network("2.5d", context=1, output_mode=output_mode, task=spec, channels=(4, 8), strides=(2,), num_res_units=0).eval()
    inferer = VolumeInferer("2.5d", context=1, output_mode=output_mode, task=spec, sw_batch_size=4)
    effective = model_task(spec, output_mode)
    probabilities = inferer(network, np.random.default_rng(0).normal(size=(5, effective.num_channels, 8, 12)).astype(np.float16))
    assert tuple(probabilities.shape) == (effective.out_channels, 5, 8, 12) and inferer.output_mode == effective.target
    np.testing.assert_array_equal(inferer.to_labels(probabilities), effective.decode(probabilities.numpy()))
    truth = np.random.default_rng(1).integers(0, len(effective.classes) + 1, size=(5, 8, 12)).astype(np.uint8)
    exact = effective.labels_to_regions(truth) if effective.target == "regions" else np.stack([truth == v for v in range(effective.num_classes)])
    np.testing.assert_array_equal(inferer.to_labels(exact.astype(np.float32)), truth)


def test_an_ensemble_refuses_members_of_other_classes() -> None:
    members = [VolumeInferer("2d", task="whole-tumour"), VolumeInferer("2d", task="meningioma-rt")]
    with pytest.raises(ConfigError, match="^b: outputs softmax probabilities but a outputs softmax \\(GTV against WT\\)"):
        EnsembleInferer(members, names=["a", "b"])
