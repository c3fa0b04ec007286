"""A label convention: one release's file label values and their exact maps to and from the internal labels."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = ["BACKGROUND", "LabelConvention"]

#: The internal background label, the same under every task.
BACKGROUND = 0


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
