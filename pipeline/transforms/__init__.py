"""MONAI-style array and dictionary transforms the pipeline needs beyond MONAI's own."""

from pipeline.transforms.context import (
    CONTEXT_PADDINGS,
    StackContext,
    StackContextd,
    context_indices,
    stack_context,
)
from pipeline.transforms.patch import RandPosNegPatch, RandPosNegPatchd, read_patch
from pipeline.transforms.spatial import CentrePadCrop, CentrePadCropd, centre_windows

__all__ = [
    "CONTEXT_PADDINGS",
    "CentrePadCrop",
    "CentrePadCropd",
    "RandPosNegPatch",
    "RandPosNegPatchd",
    "StackContext",
    "StackContextd",
    "centre_windows",
    "context_indices",
    "read_patch",
    "stack_context",
]
