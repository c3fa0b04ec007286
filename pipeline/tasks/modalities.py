"""The canonical modality order and each release's name for every modality."""

from __future__ import annotations

__all__ = ["BRATS2023_SUFFIXES", "MODALITIES", "MODALITY_NAMES", "MSD_CHANNELS"]


#: Canonical channel order of every image the pipeline builds (also the bundle's ``channel_def``).
MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")

#: Display names in the canonical order.
MODALITY_NAMES: dict[str, str] = {"t1": "T1", "t1ce": "T1ce", "t2": "T2", "flair": "FLAIR"}

#: BraTS 2023+ file suffixes for each canonical modality.
BRATS2023_SUFFIXES: dict[str, str] = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}

#: Channel of each canonical modality inside an MSD Task01 4D image (FLAIR, T1w, t1gd, T2w).
MSD_CHANNELS: dict[str, int] = {"t1": 1, "t1ce": 2, "t2": 3, "flair": 0}
