"""Every label convention in one place, with exact forward and inverse maps.

Internally the pipeline uses the sub-regions ``0`` background, ``1`` NEC (necrotic /
non-enhancing tumour core), ``2`` ED (edema, SNFH) and ``3`` ET (enhancing tumour), and the
BraTS evaluation regions WT = NEC+ED+ET, TC = NEC+ET, ET = ET. Each release's labels map into
this on read (:meth:`LabelConvention.to_internal`) and back out on write
(:meth:`LabelConvention.from_internal`).

These are the BraTS glioma task's (:data:`pipeline.tasks.DEFAULT_TASK`): the constants and
functions here are its values and methods under their historical names; another task's labels
are its own (:meth:`pipeline.tasks.Task.convention`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from pipeline.tasks import DEFAULT_TASK as _GLIOMA

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
]


BACKGROUND = 0
NEC, ED, ET = (_GLIOMA.class_value(name) for name in ("NEC", "ED", "ET"))

#: Internal sub-region names by label value (background excluded).
SUBREGIONS: dict[str, int] = {name: _GLIOMA.class_value(name) for name in _GLIOMA.classes}

#: BraTS evaluation regions as sets of internal labels, in MONAI's channel order (TC, WT, ET).
REGIONS: dict[str, tuple[int, ...]] = {name: _GLIOMA.structure_values(name) for name in _GLIOMA.regions}

#: Everything that is scored: the three sub-regions and the regions WT and TC (ET is both).
SCORED_STRUCTURES: tuple[str, ...] = tuple(_GLIOMA.structures)


@dataclass(frozen=True)
class LabelConvention:
    """One release's label values and how they map to the internal sub-regions.

    Args:
        name: identifier used in data lists and on the command line.
        description: a human description of the release(s) that use it.
        to_internal_map: file label -> internal label, background included.
        names: file label -> the release's own name for it (used for colour tables).
        optional_labels: labels refused unless the caller opts in, with the internal label they
            then map to (e.g. the 2024 resection cavity, mapped to background).
    """

    name: str
    description: str
    to_internal_map: Mapping[int, int]
    names: Mapping[int, str]
    optional_labels: Mapping[int, int] = field(default_factory=dict)

    @property
    def labels(self) -> tuple[int, ...]:
        """The label values a file of this convention may contain (opt-in labels excluded)."""
        return tuple(sorted(self.to_internal_map))

    def unknown_labels(self, seg: np.ndarray, allow_optional: bool = False) -> list[int]:
        """Label values in ``seg`` that this convention does not define."""
        allowed = set(self.to_internal_map) | (set(self.optional_labels) if allow_optional else set())
        return sorted(int(v) for v in np.unique(seg) if int(v) not in allowed)

    def to_internal(self, seg: np.ndarray, allow_optional: bool = False) -> np.ndarray:
        """Map a segmentation in this convention to internal labels (uint8).

        Raises:
            ValueError: if ``seg`` holds a value the convention does not define (or an opt-in
                value and ``allow_optional`` is false); the message names the values.
        """
        unknown = self.unknown_labels(seg, allow_optional)
        if unknown:
            hint = ""
            refused = [v for v in unknown if v in self.optional_labels]
            if refused:
                hint = f"; label(s) {refused} are only accepted when mapping them is asked for explicitly"
            raise ValueError(f"labels {unknown} are not in the {self.name} convention {list(self.labels)}{hint}")
        table = np.zeros(256, dtype=np.uint8)
        for source, target in {**self.to_internal_map, **(self.optional_labels if allow_optional else {})}.items():
            table[source] = target
        return table[np.asarray(seg).astype(np.int64, copy=False)]

    @property
    def from_internal_map(self) -> dict[int, int]:
        """Internal label -> the file label written for it: the first file label listed for it.

        One-to-one for the BraTS sub-region conventions; a task that merges labels (whole tumour
        from 1, 2 and 4) writes each class as its first listed file label (a 0/255 mask that also
        accepts 1 lists 255 first, so it is written as 255).
        """
        inverse: dict[int, int] = {}
        for source, target in self.to_internal_map.items():
            inverse.setdefault(target, source)
        return inverse

    def from_internal(self, seg: np.ndarray) -> np.ndarray:
        """Map internal labels (0 .. the largest this convention produces) back to this convention's values (uint8)."""
        table = np.zeros(256, dtype=np.uint8)
        for target, source in self.from_internal_map.items():
            table[target] = source
        seg = np.asarray(seg)
        top = max(self.to_internal_map.values())
        if seg.size and (seg.min() < 0 or seg.max() > top):
            raise ValueError(f"internal labels must be 0-{top}, got values up to {int(seg.max())}")
        return table[seg.astype(np.int64, copy=False)]

    def internal_names(self) -> dict[int, str]:
        """This convention's name for each internal label it produces on export."""
        return {internal: self.names[source] for internal, source in sorted(self.from_internal_map.items()) if internal != BACKGROUND}


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
