"""Release layouts -> validated case records.

:func:`discover` lists the cases of a data root (BraTS 2017-2021, 2023+ sub-challenges, MSD
Task01, or a mix; Kaggle LGG TIFF patient folders; 2D image/mask folders), :func:`discover_case` and :func:`case_from_files` read one case for inference, and
:func:`validate_case` checks every file of a case.
"""

from pipeline.datasets.brats import RELEASES, Release, identify_release
from pipeline.datasets.case_checks import (
    AFFINE_TOLERANCE_MM,
    validate_case,
    validate_cases,
)
from pipeline.datasets.discovery import (
    MIXED_RELEASE,
    DiscoveredDataset,
    case_from_files,
    discover,
    discover_case,
    layout_task,
)

__all__ = [
    "AFFINE_TOLERANCE_MM",
    "MIXED_RELEASE",
    "RELEASES",
    "DiscoveredDataset",
    "Release",
    "case_from_files",
    "discover",
    "discover_case",
    "identify_release",
    "layout_task",
    "validate_case",
    "validate_cases",
]
