"""Every label convention in one place, with exact forward and inverse maps.

Internally the pipeline uses the sub-regions ``0`` background, ``1`` NEC (necrotic /
non-enhancing tumour core), ``2`` ED (edema, SNFH) and ``3`` ET (enhancing tumour), and the
BraTS evaluation regions WT = NEC+ED+ET, TC = NEC+ET, ET = ET. Each release's labels map into
this on read (:meth:`LabelConvention.to_internal`) and back out on write
(:meth:`LabelConvention.from_internal`).

These are the BraTS glioma task's (:data:`pipeline.tasks.task.DEFAULT_TASK`): the constants and
functions here are its values and methods under their historical names; another task's labels
are its own (:meth:`pipeline.tasks.task.Task.convention`).
"""

from __future__ import annotations

import numpy as np

from pipeline.tasks.conventions import BACKGROUND, LabelConvention
from pipeline.tasks.task import DEFAULT_TASK, Task

_GLIOMA = DEFAULT_TASK

__all__ = [
    "BACKGROUND",
    "CONVENTIONS",
    "ED",
    "ET",
    "NEC",
    "REGIONS",
    "SCORED_STRUCTURES",
    "SUBREGIONS",
    "LabelConvention",
    "get_convention",
    "labels_to_regions",
    "region_masks",
    "regions_to_labels",
    "written_convention",
]


NEC, ED, ET = (_GLIOMA.class_value(name) for name in ("NEC", "ED", "ET"))

#: Internal sub-region names by label value (background excluded).
SUBREGIONS: dict[str, int] = {name: _GLIOMA.class_value(name) for name in _GLIOMA.classes}

#: BraTS evaluation regions as sets of internal labels, in MONAI's channel order (TC, WT, ET).
REGIONS: dict[str, tuple[int, ...]] = {name: _GLIOMA.structure_values(name) for name in _GLIOMA.regions}

#: Everything that is scored: the three sub-regions and the regions WT and TC (ET is both).
SCORED_STRUCTURES: tuple[str, ...] = tuple(_GLIOMA.structures)


CONVENTIONS: dict[str, LabelConvention] = {
    convention.name: convention
    for convention in (
        LabelConvention(
            name="brats2017",
            description="BraTS 2017-2021: 0 background, 1 NCR/NET, 2 ED, 4 ET",
            to_internal_map={0: BACKGROUND, 1: NEC, 2: ED, 4: ET},
            names={0: "background", 1: "NCR/NET", 2: "ED", 4: "ET"},
        ),
        LabelConvention(
            name="brats2023",
            description="BraTS 2023+ (GLI, MEN, MET, SSA): 0 background, 1 NETC, 2 SNFH, 3 ET; "
            "2024 post-treatment 4 = resection cavity (opt-in, mapped to background)",
            to_internal_map={0: BACKGROUND, 1: NEC, 2: ED, 3: ET},
            names={0: "background", 1: "NETC", 2: "SNFH", 3: "ET", 4: "RC"},
            optional_labels={4: BACKGROUND},
        ),
        LabelConvention(
            name="msd",
            description="MSD Task01_BrainTumour: 0 background, 1 edema, 2 non-enhancing tumour, 3 enhancing tumour",
            to_internal_map={0: BACKGROUND, 1: ED, 2: NEC, 3: ET},
            names={0: "background", 1: "edema", 2: "non-enhancing tumour", 3: "enhancing tumour"},
        ),
        LabelConvention(
            name="internal",
            description="this pipeline's labels: 0 background, 1 NEC, 2 ED, 3 ET",
            to_internal_map={0: BACKGROUND, 1: NEC, 2: ED, 3: ET},
            names={0: "background", 1: "NEC", 2: "ED", 3: "ET"},
        ),
    )
}


def get_convention(name: str) -> LabelConvention:
    """Look up a convention by name, with an error that lists the known ones."""
    try:
        return CONVENTIONS[name]
    except KeyError:
        raise ValueError(f"unknown label convention {name!r}; known: {', '.join(CONVENTIONS)}") from None


def region_masks(seg: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks of every scored structure (NEC, ED, ET, WT, TC) of an internal segmentation.

    ``seg`` may be any array with NumPy's comparison operators (a torch tensor gives tensors).
    """
    return _GLIOMA.structure_masks(seg)


def labels_to_regions(seg: np.ndarray) -> np.ndarray:
    """Stack the TC, WT and ET masks of an internal segmentation as channels (MONAI's order)."""
    return _GLIOMA.labels_to_regions(seg)


def regions_to_labels(regions: np.ndarray) -> np.ndarray:
    """Turn TC, WT, ET channels (booleans, channel first) into internal labels.

    ET wins over TC and TC over WT, so nested regions decode exactly:
    ``regions_to_labels(labels_to_regions(seg)) == seg``.
    """
    return _GLIOMA.regions_to_labels(regions)


def decode_probabilities(probabilities: np.ndarray, output_mode: str = "softmax") -> np.ndarray:
    """Internal labels (uint8) from network outputs ``(K, ...)``.

    Args:
        probabilities: class probabilities (``softmax``) or TC, WT, ET probabilities (``regions``), channel first.
        output_mode: ``softmax``: argmax over the classes; ``regions``: thresholded at 0.5 and
            decoded by :func:`regions_to_labels`.
    """
    return (_GLIOMA.with_target("regions") if output_mode == "regions" else _GLIOMA).decode(probabilities)


def written_convention(task: Task, name: str) -> LabelConvention:
    """The convention ``task``'s labels are written in: the release's own (:data:`CONVENTIONS`, with its label names) for the BraTS glioma classes mapped as the release maps them, else :meth:`Task.convention`."""
    convention = task.convention(name)
    release = CONVENTIONS.get(name)
    if release is not None and task.classes == DEFAULT_TASK.classes and dict(release.to_internal_map) == dict(convention.to_internal_map):
        return release
    return convention
