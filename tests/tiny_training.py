"""``--set`` overrides that make a training run tiny and fast on CPU, shared by the tests that train."""

from __future__ import annotations

#: A 3-level UNet of 4-16 channels, 2 iterations of 4 slices per epoch, in-process loading.
TINY_NETWORK_AND_BUDGET: tuple[str, ...] = (
    "channels=[4, 8, 16]",
    "strides=[2, 2]",
    "num_res_units=0",
    "samples_per_epoch=8",
    "batch_size=4",
    "num_workers=0",
    "sw_batch_size=8",
)

#: The same, deterministic and without progress bars (for runs compared bit for bit).
TINY_DETERMINISTIC: tuple[str, ...] = (*TINY_NETWORK_AND_BUDGET, "progress=false", "deterministic=true")
