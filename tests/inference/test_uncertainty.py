"""Uncertainty from the passes of a prediction: normalised entropy, the passes' disagreement, per-case scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.inference.inferers import EnsembleInferer, VolumeInferer
from pipeline.networks import build_network
from pipeline.inference.uncertainty import normalised_entropy, uncertainty_maps, uncertainty_scores

VOLUME = np.random.default_rng(0).standard_normal((7, 4, 12, 9)).astype(np.float32)  # (Z, C, X, Y)


class CertainNetwork(torch.nn.Module):
    """Background with probability 1 everywhere: every pass agrees, with certainty."""

    spatial_divisor = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.full((x.shape[0], 4, *x.shape[2:]), -100.0)
        logits[:, 0] = 100.0
        return logits


def _network(seed: int, output_mode: str = "softmax") -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(mode="2d", output_mode=output_mode, channels=(4, 8, 16), strides=(2, 2), num_res_units=0).eval()


def test_normalised_entropy_is_zero_when_certain_and_one_when_uniform() -> None:
    certain = torch.tensor([1.0, 0.0, 0.0, 0.0])[:, None]
    uniform = torch.full((4, 1), 0.25)
    assert normalised_entropy(certain, "softmax").item() == pytest.approx(0.0, abs=1e-6)
    assert normalised_entropy(uniform, "softmax").item() == pytest.approx(1.0)
    half = torch.tensor([0.5, 0.5, 0.5])[:, None]
    assert normalised_entropy(half, "regions").item() == pytest.approx(1.0)
    mixed = torch.tensor([0.9, 0.1, 0.0, 0.0])[:, None]
    assert normalised_entropy(mixed, "softmax").item() == pytest.approx(-(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(4))


@pytest.mark.parametrize("output_mode", ["softmax", "regions"])
def test_disagreement_is_the_entropy_of_the_mean_less_the_mean_entropy(output_mode: str) -> None:
    inferers = [VolumeInferer("2d", output_mode=output_mode, sw_batch_size=4) for _ in range(2)]
    networks = [_network(1, output_mode), _network(2, output_mode)]
    ensemble = EnsembleInferer(inferers)
    probabilities, pass_entropy = ensemble.with_pass_entropy(networks, VOLUME)
    entropy, disagreement = uncertainty_maps(probabilities, pass_entropy, ensemble.passes, output_mode)
    members = [inferer(network, VOLUME) for inferer, network in zip(inferers, networks)]
    expected = normalised_entropy((members[0] + members[1]) / 2, output_mode) - (
        normalised_entropy(members[0], output_mode) + normalised_entropy(members[1], output_mode)
    ) / 2
    assert entropy.shape == disagreement.shape == VOLUME.shape[:1] + VOLUME.shape[2:]
    assert entropy.dtype == np.float32 and 0 <= entropy.min() and entropy.max() <= 1
    np.testing.assert_allclose(disagreement, expected.clamp(0, 1).numpy(), atol=1e-5)
    assert disagreement.max() > 0.001 and disagreement.min() >= 0  # two different networks disagree somewhere


def test_all_passes_certain_and_agreeing_give_zero_uncertainty() -> None:
    inferer = VolumeInferer("2d", sw_batch_size=4, tta=True)
    ensemble = EnsembleInferer([inferer, inferer])
    probabilities, pass_entropy = ensemble.with_pass_entropy([CertainNetwork(), CertainNetwork()], VOLUME)
    entropy, disagreement = uncertainty_maps(probabilities, pass_entropy, ensemble.passes, "softmax")
    assert ensemble.passes == 8
    assert np.abs(entropy).max() < 1e-6 and np.abs(disagreement).max() < 1e-6


def test_a_single_pass_has_entropy_but_no_disagreement() -> None:
    inferer = VolumeInferer("2d", sw_batch_size=4)
    probabilities, pass_entropy = inferer.with_pass_entropy(_network(1), VOLUME)
    entropy, disagreement = uncertainty_maps(probabilities, pass_entropy, inferer.passes, "softmax")
    assert disagreement is None and entropy.max() > 0
    np.testing.assert_allclose(entropy, pass_entropy.numpy(), atol=1e-6)


def test_scores_average_over_the_predicted_tumour() -> None:
    entropy = np.array([[0.2, 0.4], [0.9, 0.0]], dtype=np.float32)
    disagreement = np.array([[0.1, 0.3], [0.5, 0.0]], dtype=np.float32)
    labels = np.array([[1, 3], [0, 0]], dtype=np.uint8)
    scores = uncertainty_scores(entropy, disagreement, labels)
    assert scores == {"uncertainty_entropy_WT": pytest.approx(0.3), "uncertainty_disagreement_WT": pytest.approx(0.2)}
    assert uncertainty_scores(entropy, None, np.zeros_like(labels)) == {"uncertainty_entropy_WT": 0.0}
