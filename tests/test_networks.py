"""Network builders: channels and dimensions follow the mode, divisors, selectable architectures."""

from __future__ import annotations

import pytest
import torch

from pipeline.core.errors import ConfigError
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


@pytest.mark.parametrize("name", ["attention_unet", "dynunet", "segresnet"])
def test_other_architectures_are_selectable(name: str) -> None:
    net = build_network(mode="2d", network=name, channels=(4, 8, 16), strides=(2, 2), init_filters=8, blocks_down=(1, 1, 1))
    assert type(net).__name__ == {"attention_unet": "AttentionUnet", "dynunet": "DynUNet", "segresnet": "SegResNet"}[name]
    assert net(torch.zeros(1, 4, 32, 32)).shape == (1, 4, 32, 32)
    assert spatial_divisor(net) == 4


@pytest.mark.parametrize("name", ["unet", "dynunet"])
@pytest.mark.parametrize(("norm", "layer"), [("instance", torch.nn.InstanceNorm2d), ("batch", torch.nn.BatchNorm2d)])
def test_the_normalisation_layer_is_selectable(name: str, norm: str, layer: type) -> None:
    net = build_network(mode="2d", network=name, channels=(4, 8, 16), strides=(2, 2), norm=norm)
    norms = [m for m in net.modules() if isinstance(m, (torch.nn.InstanceNorm2d, torch.nn.BatchNorm2d))]
    assert norms and all(isinstance(m, layer) for m in norms)


@pytest.mark.parametrize("mode", ["2.5d", "3d"])
def test_deep_supervision_stacks_decoder_outputs_in_training_only(mode: str) -> None:
    net = build_network(mode=mode, network="dynunet", channels=(4, 8, 16, 32), strides=(2, 2, 2), deep_supervision=2)
    shape = (2, 20, 32, 32) if mode == "2.5d" else (1, 4, 16, 16, 16)
    assert net.train()(torch.zeros(shape)).shape == (shape[0], 3, 4, *shape[2:])  # the output and two coarser heads, upsampled
    assert net.eval()(torch.zeros(shape)).shape == (shape[0], 4, *shape[2:])
    assert spatial_divisor(net) == 8


def test_divisor_seen_through_wrappers() -> None:
    net = build_network(mode="2d", channels=(4, 8, 16, 32), strides=(2, 2, 2))
    wrapper = torch.nn.Module()
    wrapper.module = net
    assert spatial_divisor(wrapper) == 8


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"mode": "4d"}, "unknown mode"), ({"output_mode": "multi"}, "unknown output mode"), ({"network": "vnet"}, "unknown network"),
     ({"channels": (4, 8), "strides": (2, 2)}, "one stride fewer"), ({"deep_supervision": 1}, "needs network_name: dynunet"), ({"norm": "btach"}, "unknown normalisation"),
     ({"network": "dynunet", "channels": (4, 8, 16), "strides": (2, 2), "deep_supervision": 2}, "give 0 to 1 decoder outputs")],
)
def test_bad_settings_are_config_errors(kwargs: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        build_network(**kwargs)


# ---- tasks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "channels", "output_mode", "in_2d", "in_25d", "out"),
    [
        ("whole-tumour", ("flair",), None, 1, 5, 2),
        ("brats2024-post-treatment", None, None, 4, 20, 5),
        ("brats2024-ped", None, None, 4, 20, 5),
        ("meningioma-rt", None, None, 1, 5, 2),
        ("brats-glioma", ("t1ce", "flair"), "regions", 2, 10, 3),
    ],
)
def test_channels_follow_the_task(task: str, channels, output_mode, in_2d: int, in_25d: int, out: int) -> None:
    from pipeline.tasks.task import resolve_task

    spec = resolve_task(task, channels)
    assert input_channels("2d", 2, spec) == input_channels("3d", 2, spec) == in_2d
    assert input_channels("2.5d", 2, spec) == in_25d and output_channels(output_mode, spec) == out
    net = build_network("2.5d", context=2, output_mode=output_mode, task=spec.to_dict(), channels=(4, 8), strides=(2,), num_res_units=0)
    assert net(torch.zeros(1, in_25d, 16, 16)).shape == (1, out, 16, 16)


def test_regions_need_a_task_with_regions() -> None:
    with pytest.raises(ConfigError, match="declares no regions"):
        output_channels("regions", "brats2024-post-treatment")
