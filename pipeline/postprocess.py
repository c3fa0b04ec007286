"""Post-processing of predicted internal label maps: small components, largest component, tiny ET.

The BraTS regions are nested (ET inside TC inside WT), so every step works on the region masks
(:func:`pipeline.labels.labels_to_regions`) and decodes them back with
:func:`pipeline.labels.regions_to_labels`:

* removing a WT component removes everything inside it;
* removing a TC component leaves its voxels as edema (they are still in WT);
* removing an ET component leaves its voxels as necrosis (they are still in TC).

Finally, as the BraTS winners do (nnU-Net, BraTS 2020), a prediction whose whole ET volume is
below a threshold is relabelled as NEC: a few enhancing voxels are far more often a false
positive than a real tiny enhancing tumour, and an empty ET scores Dice 1 when the ground truth
has none.

A trained model's post-processing is the ``postprocessing`` component of its inference config
(``configs/inference.yaml``: ``_target_: pipeline.postprocess.PostProcessing``; there it drops
whole-tumour specks under 20 voxels, keeps only the largest whole-tumour component (chosen by
cross-validation on the real cases) and leaves tiny-ET relabelling off, because its threshold
depends on the voxel size: the BraTS winners used a few hundred voxels on 1 mm data).

Thresholds are in voxels of the grid the labels are in (the preprocessing never resamples, so the
cache grid and the original grid have the same voxel size). Connected components use cc3d with
26-connectivity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import cc3d
import numpy as np

from pipeline.errors import ConfigError
from pipeline.labels import ET, NEC, REGIONS, labels_to_regions, regions_to_labels

__all__ = ["PostProcessing", "keep_largest_component", "relabel_small_enhancing_tumour", "remove_small_components"]

_REGION_ORDER: tuple[str, ...] = ("TC", "WT", "ET")  # channel order of labels_to_regions


def remove_small_components(mask: np.ndarray, min_voxels: int, connectivity: int = 26) -> np.ndarray:
    """``mask`` without its connected components of fewer than ``min_voxels`` voxels."""
    mask = np.asarray(mask, dtype=bool)
    if min_voxels <= 1 or not mask.any():
        return mask.copy()
    # cc3d.dust keeps components whose size is >= threshold.
    return cc3d.dust(mask, threshold=int(min_voxels), connectivity=connectivity, in_place=False).astype(bool)


def keep_largest_component(mask: np.ndarray, connectivity: int = 26) -> np.ndarray:
    """Only the largest connected component of ``mask`` (an empty mask stays empty)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    return cc3d.largest_k(mask, k=1, connectivity=connectivity).astype(bool)


def relabel_small_enhancing_tumour(seg: np.ndarray, min_voxels: int) -> np.ndarray:
    """Turn all ET into NEC when the prediction holds fewer than ``min_voxels`` ET voxels."""
    seg = np.array(seg, dtype=np.uint8, copy=True)
    enhancing = seg == ET
    if 0 < np.count_nonzero(enhancing) < min_voxels:
        seg[enhancing] = NEC
    return seg


@dataclass(frozen=True)
class PostProcessing:
    """Configurable post-processing of internal labels (applied in the order of the fields).

    Args:
        min_component_voxels: per region (``TC``, ``WT``, ``ET``), components smaller than this
            are removed; a single int applies to every region; 0 disables.
        keep_largest: regions reduced to their largest connected component.
        min_et_voxels: a predicted ET smaller than this (in total) is relabelled as NEC; 0 disables.
        connectivity: cc3d connectivity (6, 18 or 26).

    Example:
        >>> post = PostProcessing(min_component_voxels={"WT": 50}, min_et_voxels=200)
        >>> cleaned = post(predicted_labels)   # doctest: +SKIP
    """

    min_component_voxels: Mapping[str, int] | int = field(default_factory=dict)
    keep_largest: Sequence[str] = ()
    min_et_voxels: int = 0
    connectivity: int = 26

    def __post_init__(self) -> None:
        thresholds = self.min_component_voxels
        if isinstance(thresholds, int):
            thresholds = {name: thresholds for name in _REGION_ORDER}
        unknown = sorted((set(thresholds) | set(self.keep_largest)) - set(REGIONS))
        if unknown:
            raise ConfigError("postprocessing", f"unknown region(s) {unknown}; choose from {list(REGIONS)}")
        if self.connectivity not in (6, 18, 26):
            raise ConfigError("postprocessing", f"connectivity must be 6, 18 or 26, got {self.connectivity}")
        object.__setattr__(self, "min_component_voxels", {name: int(thresholds.get(name, 0)) for name in _REGION_ORDER})
        object.__setattr__(self, "keep_largest", tuple(self.keep_largest))

    @property
    def is_identity(self) -> bool:
        """True when no step is enabled."""
        return not any(self.min_component_voxels.values()) and not self.keep_largest and self.min_et_voxels <= 0

    def __call__(self, seg: np.ndarray) -> np.ndarray:
        """Post-process internal labels (any shape, 3D in practice); returns a new uint8 array."""
        seg = np.asarray(seg, dtype=np.uint8)
        if self.is_identity:
            return seg.copy()
        regions = labels_to_regions(seg).astype(bool)
        for index, name in enumerate(_REGION_ORDER):
            mask = remove_small_components(regions[index], self.min_component_voxels[name], self.connectivity)
            if name in self.keep_largest:
                mask = keep_largest_component(mask, self.connectivity)
            regions[index] = mask
        tc, wt, et = regions
        # Keep the regions nested after independent edits: ET inside TC, TC inside WT.
        tc &= wt
        et &= tc
        labels = regions_to_labels(np.stack([tc, wt, et]))
        return relabel_small_enhancing_tumour(labels, self.min_et_voxels)

    @classmethod
    def from_config(cls, settings: Mapping | PostProcessing | None) -> PostProcessing:
        """Build from a config mapping (the bundle's ``postprocessing`` key); ``None`` means no post-processing."""
        if isinstance(settings, PostProcessing):
            return settings
        if settings is None:
            return cls()
        if not isinstance(settings, Mapping):
            raise ConfigError("postprocessing", f"expected a mapping, got {type(settings).__name__}")
        known = {"min_component_voxels", "keep_largest", "min_et_voxels", "connectivity"}
        unknown = sorted(set(settings) - known - {"_target_"})
        if unknown:
            raise ConfigError("postprocessing", f"unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**{key: value for key, value in settings.items() if key in known})

    def to_config(self) -> dict:
        """Plain-dict form (for provenance and summaries)."""
        return {
            "min_component_voxels": dict(self.min_component_voxels),
            "keep_largest": list(self.keep_largest),
            "min_et_voxels": int(self.min_et_voxels),
            "connectivity": int(self.connectivity),
        }
