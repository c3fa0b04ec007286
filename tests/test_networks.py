"""Network builders: channels and dimensions follow the mode, divisors, selectable architectures."""

from __future__ import annotations

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.networks import build_network, input_channels, output_channels, spatial_divisor


@pytest.mark.parametrize(
    ("mode", "context", "shape", "in_channels"),
    [("2d", 2, (2, 4, 32, 32), 4), ("2.5d", 2, (2, 20, 32, 32), 20), ("2.5d", 1, (2, 12, 32, 32), 12), ("3d", 2, (1, 4, 16, 16, 16), 4)],
)
@pytest.mark.parametrize("output_mode", ["softmax", "regions"])
def test_unet_shapes_follow_mode(mode: str, context: int, shape: tuple, in_channels: int, output_mode: str) -> None:
    net = build_network(mode=mode, context=context, output_mode=output_mode, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    assert input_channels(mode, context) == in_channels
    out = net(torch.zeros(shape))
    assert out.shape == (shape[0], output_channels(output_mode), *shape[2:])
    assert out.shape[1] == (3 if output_mode == "regions" else 4)
    assert spatial_divisor(net) == 4


@pytest.mark.parametrize("name", ["attention_unet", "segresnet"])
def test_other_architectures_are_selectable(name: str) -> None:
    net = build_network(mode="2d", network=name, channels=(4, 8, 16), strides=(2, 2), init_filters=8, blocks_down=(1, 1, 1))
    assert type(net).__name__ == {"attention_unet": "AttentionUnet", "segresnet": "SegResNet"}[name]
    assert net(torch.zeros(1, 4, 32, 32)).shape == (1, 4, 32, 32)
    assert spatial_divisor(net) == 4


def test_divisor_seen_through_wrappers() -> None:
    net = build_network(mode="2d", channels=(4, 8, 16, 32), strides=(2, 2, 2))
    wrapper = torch.nn.Module()
    wrapper.module = net
    assert spatial_divisor(wrapper) == 8


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"mode": "4d"}, "unknown mode"), ({"output_mode": "multi"}, "unknown output mode"), ({"network": "vnet"}, "unknown network"),
     ({"channels": (4, 8), "strides": (2, 2)}, "one stride fewer")],
)
def test_bad_settings_are_config_errors(kwargs: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        build_network(**kwargs)
