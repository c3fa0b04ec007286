"""Network builders: MONAI ``UNet``, ``AttentionUnet``, ``DynUNet`` and ``SegResNet`` sized from the sampling mode.

The bundle configs build their network with :func:`build_network`, so the input channels (the
task's channels, times ``2k+1`` slices in 2.5D), the spatial dimensions (2D for 2d/2.5d, 3D for
3d) and the output channels (background + the task's classes, or its regions) always follow
``mode``, ``context``, ``task`` and ``output_mode`` (:mod:`pipeline.tasks.task`).

``DynUNet`` (the nnU-Net architecture) can be deeply supervised: in training mode it returns its
full-resolution output and ``deep_supervision`` coarser decoder heads (upsampled), stacked on dim 1,
which :func:`pipeline.training.losses.build_loss` scores together; in eval mode, only the first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Norm
from monai.networks.nets import AttentionUnet, DynUNet, SegResNet, UNet

from pipeline.core.errors import ConfigError
from pipeline.tasks.task import TARGETS, TaskSpec, model_task

__all__ = [
    "MODES",
    "NETWORKS",
    "OUTPUT_MODES",
    "build_network",
    "check_mode",
    "input_channels",
    "output_channels",
    "spatial_dims",
    "spatial_divisor",
]


#: Sampling modes: one axial slice, a stack of neighbouring slices, or a 3D patch.
MODES: tuple[str, ...] = ("2d", "2.5d", "3d")

#: Output modes: softmax over background + the task's classes, or sigmoid per region of the task.
OUTPUT_MODES: tuple[str, ...] = TARGETS

#: Selectable architectures (``network`` key of the configs).
NETWORKS: tuple[str, ...] = ("unet", "attention_unet", "dynunet", "segresnet")


def check_mode(mode: str, output_mode: str = "softmax") -> None:
    """Raise a :class:`ConfigError` for an unknown sampling or output mode."""
    if mode not in MODES:
        raise ConfigError("mode", f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if output_mode not in OUTPUT_MODES:
        raise ConfigError("output_mode", f"unknown output mode {output_mode!r}; choose one of {', '.join(OUTPUT_MODES)}")


def spatial_dims(mode: str) -> int:
    """2 for slice-based modes (2d, 2.5d), 3 for patches."""
    check_mode(mode)
    return 3 if mode == "3d" else 2


def input_channels(mode: str, context: int = 2, task: TaskSpec = None) -> int:
    """Input channels: the task's channels (BraTS: 4 modalities), for each of the ``2*context+1`` slices in 2.5D."""
    check_mode(mode)
    channels = model_task(task).num_channels
    if mode == "2.5d":
        if context < 0:
            raise ConfigError("context", f"context must be >= 0, got {context}")
        return channels * (2 * context + 1)
    return channels


def output_channels(output_mode: str | None = None, task: TaskSpec = None) -> int:
    """Background + the task's classes for softmax (BraTS: 4), one per region for regions (BraTS: TC, WT, ET); ``None``: the task's target."""
    if output_mode is not None:
        check_mode("2d", output_mode)
    return model_task(task, output_mode).out_channels


def build_network(
    mode: str = "2.5d",
    context: int = 2,
    output_mode: str | None = None,
    network: str = "unet",
    channels: Sequence[int] = (16, 32, 64, 128),
    strides: Sequence[int] = (2, 2, 2),
    num_res_units: int = 2,
    norm: str = "instance",
    dropout: float = 0.0,
    init_filters: int = 16,
    blocks_down: Sequence[int] = (1, 2, 2, 4),
    task: TaskSpec = None,
    deep_supervision: int = 0,
) -> torch.nn.Module:
    """Build the segmentation network for a sampling mode.

    Args:
        mode: ``2d``, ``2.5d`` or ``3d``.
        context: slices on each side of the centre slice in 2.5D.
        output_mode: ``softmax`` (background + the classes) or ``regions`` (the task's regions);
            ``None``: the task's target.
        network: ``unet``, ``attention_unet``, ``dynunet`` or ``segresnet``.
        channels: feature channels per level (UNet, AttentionUnet, DynUNet).
        strides: downsampling per level, one fewer than ``channels`` (UNet, AttentionUnet, DynUNet).
        num_res_units: residual units per block (UNet); DynUNet uses residual blocks when > 0.
        norm: normalisation layer (UNet, DynUNet), a MONAI ``Norm`` name: ``instance``, ``batch``.
        dropout: dropout probability.
        init_filters: first-level filters (SegResNet).
        blocks_down: residual blocks per level (SegResNet).
        task: a task name, task file, stored task mapping or :class:`~pipeline.tasks.task.Task`
            (``None``: BraTS glioma).
        deep_supervision: DynUNet: coarser decoder outputs trained beside the full-resolution one
            (fewer than the levels below the top); 0: none.

    Returns:
        The network; its ``spatial_divisor`` attribute is the multiple the input's spatial
        size must have.
    """
    check_mode(mode, output_mode or "softmax")
    dims, in_ch, out_ch = spatial_dims(mode), input_channels(mode, context, task), output_channels(output_mode, task)
    channels, strides = tuple(int(c) for c in channels), tuple(int(s) for s in strides)
    if isinstance(norm, str) and norm.upper() not in Norm.names:
        raise ConfigError("norm", f"unknown normalisation {norm!r}; choose one of {', '.join(sorted(n.lower() for n in Norm.names))}")
    if deep_supervision and network != "dynunet":
        raise ConfigError("deep_supervision", f"needs network_name: dynunet, got {network!r}")
    if network in ("unet", "attention_unet", "dynunet") and len(strides) != len(channels) - 1:
        raise ConfigError("network_def", f"{network} needs one stride fewer than channels, got channels {channels} and strides {strides}")
    if network == "unet":
        net: torch.nn.Module = UNet(
            spatial_dims=dims,
            in_channels=in_ch,
            out_channels=out_ch,
            channels=channels,
            strides=strides,
            num_res_units=num_res_units,
            norm=norm,
            dropout=dropout,
        )
        divisor = math.prod(strides)
    elif network == "attention_unet":
        net = AttentionUnet(spatial_dims=dims, in_channels=in_ch, out_channels=out_ch, channels=channels, strides=strides, dropout=dropout)
        divisor = math.prod(strides)
    elif network == "dynunet":
        if not 0 <= deep_supervision < len(strides):
            raise ConfigError("deep_supervision", f"give 0 to {len(strides) - 1} decoder outputs for {len(channels)} levels, got {deep_supervision}")
        net = DynUNet(
            spatial_dims=dims,
            in_channels=in_ch,
            out_channels=out_ch,
            kernel_size=[3] * len(channels),
            strides=[1, *strides],
            upsample_kernel_size=list(strides),
            filters=channels,
            dropout=dropout or None,
            norm_name=norm,
            deep_supervision=deep_supervision > 0,
            deep_supr_num=max(deep_supervision, 1),
            res_block=num_res_units > 0,
        )
        divisor = math.prod(strides)
    elif network == "segresnet":
        net = SegResNet(
            spatial_dims=dims,
            init_filters=init_filters,
            in_channels=in_ch,
            out_channels=out_ch,
            dropout_prob=dropout or None,
            blocks_down=tuple(blocks_down),
            blocks_up=(1,) * (len(blocks_down) - 1),
        )
        divisor = 2 ** (len(blocks_down) - 1)
    else:
        raise ConfigError("network", f"unknown network {network!r}; choose one of {', '.join(NETWORKS)}")
    net.spatial_divisor = divisor
    return net


def spatial_divisor(network: torch.nn.Module) -> int:
    """The multiple each spatial input size must have (1 when the network does not say).

    Unwraps ``DistributedDataParallel`` and ``torch.compile`` wrappers.
    """
    for attribute in ("module", "_orig_mod"):
        inner = getattr(network, attribute, None)
        if isinstance(inner, torch.nn.Module):
            return spatial_divisor(inner)
    divisor = getattr(network, "spatial_divisor", None)
    if divisor is None and isinstance(network, (UNet, AttentionUnet)):
        divisor = math.prod(network.strides)
    return int(divisor or 1)
