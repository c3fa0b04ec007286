"""Post-processing of predicted internal label maps: small components, largest component, tiny ET.

The structures edited are the task's (:mod:`pipeline.tasks.task`). A task with nested regions (BraTS
glioma: ET inside TC inside WT) edits its region masks (:meth:`pipeline.tasks.task.Task.labels_to_regions`)
and decodes them back with :meth:`pipeline.tasks.task.Task.regions_to_labels`, so for BraTS glioma:

* removing a WT component removes everything inside it;
* removing a TC component leaves its voxels as edema (they are still in WT);
* removing an ET component leaves its voxels as necrosis (they are still in TC).

A task without regions edits its scored structures, and a voxel removed from one becomes
background (for a one-class task, such as the whole tumour, that is the only choice).

Then, with ``fill_core_holes``, every voxel the predicted tumour core (NEC and ET) encloses becomes
NEC: necrosis lies inside the enhancing rim, and a network that sees it as edema or background
leaves a hole in the core. ``slices`` fills the holes of each axial slice (the last axis of the
RAS-ordered cache grid the model's labels are in), ``3d`` only holes closed in every direction;
the real-data cross-validation chose ``slices`` (docs/results.md).

Finally, as the BraTS winners do (nnU-Net, BraTS 2020), a prediction whose whole ET volume is
below a threshold is relabelled as NEC: a few enhancing voxels are far more often a false
positive than a real tiny enhancing tumour, and an empty ET scores Dice 1 when the ground truth
has none. This step needs a task with an ``ET`` class and a necrotic class (``NEC`` or ``NETC``).

A trained model's post-processing is the ``postprocessing`` component of its inference config
(``configs/inference.yaml``: ``_target_: pipeline.inference.postprocess.PostProcessing``; there it drops
whole-tumour specks under 20 voxels, keeps only the largest whole-tumour component (chosen by
cross-validation on the real cases) and leaves tiny-ET relabelling off, because its threshold
depends on the voxel size: the BraTS winners used a few hundred voxels on 1 mm data).

A task may declare its own default (:attr:`pipeline.tasks.task.Task.postprocessing`, e.g. Kaggle LGG
keeps the largest tumour component, as its original system did): :func:`task_postprocessing`
builds it, and a training run of that task writes it into its ``inference.json`` instead of the
bundle's.

Thresholds are in voxels of the grid the labels are in (the preprocessing never resamples, so the
cache grid and the original grid have the same voxel size). Connected components use cc3d with
26-connectivity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import cc3d
import numpy as np
from scipy import ndimage

from pipeline.core.errors import ConfigError
from pipeline.tasks.labels import ET, NEC
from pipeline.tasks.task import Task, TaskSpec, resolve_task

__all__ = [
    "CORE_HOLE_MODES",
    "PostProcessing",
    "edited_structures",
    "fill_core_holes",
    "keep_largest_component",
    "necrosis_class",
    "relabel_small_enhancing_tumour",
    "remove_small_components",
    "task_postprocessing",
]

#: ``fill_core_holes`` settings: off, holes closed in 3D, holes of each slice along the last axis.
CORE_HOLE_MODES: tuple[str, ...] = ("none", "3d", "slices")

#: Classes a tiny ET is relabelled as, by name (BraTS glioma NEC; BraTS 2024 NETC).
_NECROSIS_CLASSES: tuple[str, ...] = ("NEC", "NETC")


def edited_structures(task: Task) -> tuple[str, ...]:
    """The structures post-processing edits: the task's regions (BraTS TC, WT, ET), else its scored structures."""
    return task.regions or tuple(task.structures)


def necrosis_class(task: Task) -> str | None:
    """The class a tiny ET becomes: the task's NEC or NETC when it also has ET, else ``None``."""
    if "ET" not in task.classes:
        return None
    return next((name for name in _NECROSIS_CLASSES if name in task.classes), None)


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


def fill_core_holes(seg: np.ndarray, mode: str = "slices", et: int = ET, necrosis: int = NEC) -> np.ndarray:
    """Label every voxel that the tumour core (labels ``necrosis`` and ``et``) encloses as ``necrosis``.

    A hole is a region of other labels cut off from the border by the core
    (``scipy.ndimage.binary_fill_holes``): of the volume, 6-connected, for ``mode="3d"``; of each
    slice along the last axis, 4-connected in the slice, for ``"slices"``; ``"none"`` changes nothing.
    """
    if mode not in CORE_HOLE_MODES:
        raise ConfigError("postprocessing", f"fill_core_holes must be one of {list(CORE_HOLE_MODES)}, got {mode!r}")
    seg = np.array(seg, dtype=np.uint8, copy=True)
    core = (seg == et) | (seg == necrosis)
    if mode == "none" or not core.any():
        return seg
    structure = ndimage.generate_binary_structure(3, 1)
    if mode == "slices":
        structure[:, :, (0, 2)] = False  # no connection across slices: each slice is filled on its own
    seg[ndimage.binary_fill_holes(core, structure=structure) & ~core] = necrosis
    return seg


def relabel_small_enhancing_tumour(seg: np.ndarray, min_voxels: int, et: int = ET, necrosis: int = NEC) -> np.ndarray:
    """Turn all ET (label ``et``) into necrosis (label ``necrosis``) when the prediction holds fewer than ``min_voxels`` ET voxels."""
    seg = np.array(seg, dtype=np.uint8, copy=True)
    enhancing = seg == et
    if 0 < np.count_nonzero(enhancing) < min_voxels:
        seg[enhancing] = necrosis
    return seg


@dataclass(frozen=True)
class PostProcessing:
    """Configurable post-processing of internal labels, applied in this order: small components, largest component, core holes, tiny ET.

    Args:
        min_component_voxels: per structure of :func:`edited_structures` (BraTS: ``TC``, ``WT``,
            ``ET``), components smaller than this are removed; a single int applies to every
            structure; 0 disables.
        keep_largest: structures reduced to their largest connected component.
        fill_core_holes: ``"none"``, ``"3d"`` or ``"slices"``: voxels enclosed by the predicted core
            (NEC/NETC and ET) become NEC/NETC (:func:`fill_core_holes`); only for a task with those classes.
        min_et_voxels: a predicted ET smaller than this (in total) is relabelled as NEC (NETC);
            0 disables; only for a task with those classes (:func:`necrosis_class`).
        connectivity: cc3d connectivity (6, 18 or 26).
        task: whose labels are edited (:func:`pipeline.tasks.task.resolve_task`; ``None``: BraTS glioma).

    Example:
        >>> post = PostProcessing(min_component_voxels={"WT": 50}, min_et_voxels=200)
        >>> cleaned = post(predicted_labels)   # doctest: +SKIP
    """

    min_component_voxels: Mapping[str, int] | int = field(default_factory=dict)
    keep_largest: Sequence[str] = ()
    min_et_voxels: int = 0
    connectivity: int = 26
    task: TaskSpec = field(default=None, compare=False, repr=False)
    fill_core_holes: str = "none"

    def __post_init__(self) -> None:
        task = resolve_task(self.task)
        object.__setattr__(self, "task", task)
        structures = edited_structures(task)
        thresholds = self.min_component_voxels
        if isinstance(thresholds, int):
            thresholds = {name: thresholds for name in structures}
        unknown = sorted((set(thresholds) | set(self.keep_largest)) - set(structures))
        if unknown:
            raise ConfigError("postprocessing", f"unknown region(s) {unknown}; choose from {list(structures)}")
        if self.connectivity not in (6, 18, 26):
            raise ConfigError("postprocessing", f"connectivity must be 6, 18 or 26, got {self.connectivity}")
        if self.min_et_voxels > 0 and necrosis_class(task) is None:
            raise ConfigError("postprocessing", f"min_et_voxels relabels ET as NEC/NETC; task {task.name} has no such classes ({', '.join(task.classes)})")
        if self.fill_core_holes not in CORE_HOLE_MODES:
            raise ConfigError("postprocessing", f"fill_core_holes must be one of {list(CORE_HOLE_MODES)}, got {self.fill_core_holes!r}")
        if self.fill_core_holes != "none" and necrosis_class(task) is None:
            raise ConfigError("postprocessing", f"fill_core_holes labels the core's holes NEC/NETC; task {task.name} has no such classes with ET ({', '.join(task.classes)})")
        object.__setattr__(self, "min_component_voxels", {name: int(thresholds.get(name, 0)) for name in structures})
        object.__setattr__(self, "keep_largest", tuple(self.keep_largest))

    @property
    def named_structures(self) -> tuple[str, ...]:
        """The structures these settings edit (a non-zero size or keep_largest)."""
        return tuple(name for name, voxels in self.min_component_voxels.items() if voxels or name in self.keep_largest)

    def fits(self, task: TaskSpec) -> bool:
        """Whether these settings apply to ``task``: it has the structures they edit (and NEC/NETC and ET for ``min_et_voxels``)."""
        task = resolve_task(task)
        needs_necrosis = self.min_et_voxels > 0 or self.fill_core_holes != "none"
        return set(self.named_structures) <= set(edited_structures(task)) and (not needs_necrosis or necrosis_class(task) is not None)

    def restricted_to(self, task: TaskSpec) -> PostProcessing:
        """The part of these settings that ``task`` has structures for, on ``task``'s labels (the bundle's glioma defaults on a whole-tumour run keep their WT steps)."""
        task = resolve_task(task)
        edited = set(edited_structures(task))
        thresholds = {name: voxels for name, voxels in self.min_component_voxels.items() if voxels and name in edited}
        largest = [name for name in self.keep_largest if name in edited]
        has_necrosis = necrosis_class(task) is not None
        min_et = self.min_et_voxels if has_necrosis else 0
        return PostProcessing(thresholds, largest, min_et, self.connectivity, task, self.fill_core_holes if has_necrosis else "none")

    def for_task(self, task: TaskSpec) -> PostProcessing:
        """These settings on ``task``'s labels (a :class:`ConfigError` when it lacks a structure they edit)."""
        task = resolve_task(task)
        if task == self.task:
            return self
        thresholds = {name: voxels for name, voxels in self.min_component_voxels.items() if voxels}
        return PostProcessing(thresholds, self.keep_largest, self.min_et_voxels, self.connectivity, task, self.fill_core_holes)

    @property
    def is_identity(self) -> bool:
        """True when no step is enabled."""
        return not any(self.min_component_voxels.values()) and not self.keep_largest and self.min_et_voxels <= 0 and self.fill_core_holes == "none"

    def __call__(self, seg: np.ndarray) -> np.ndarray:
        """Post-process internal labels (any shape, 3D in practice); returns a new uint8 array."""
        seg = np.asarray(seg, dtype=np.uint8)
        if self.is_identity:
            return seg.copy()
        task: Task = self.task
        labels = self._edit_regions(seg) if task.regions else self._edit_structures(seg)
        necrosis = necrosis_class(task)
        if necrosis is None:
            return labels
        et, necrosis_value = task.class_value("ET"), task.class_value(necrosis)
        labels = fill_core_holes(labels, self.fill_core_holes, et, necrosis_value)
        return relabel_small_enhancing_tumour(labels, self.min_et_voxels, et, necrosis_value)

    def _edit(self, name: str, mask: np.ndarray) -> np.ndarray:
        mask = remove_small_components(mask, self.min_component_voxels[name], self.connectivity)
        return keep_largest_component(mask, self.connectivity) if name in self.keep_largest else mask

    def _edit_regions(self, seg: np.ndarray) -> np.ndarray:
        task: Task = self.task
        regions = task.labels_to_regions(seg).astype(bool)
        for index, name in enumerate(task.regions):
            regions[index] = self._edit(name, regions[index])
        # Keep the regions nested after independent edits (BraTS: ET inside TC, TC inside WT), outermost first.
        classes = [set(task.structures[name]) for name in task.regions]
        for index in sorted(range(len(classes)), key=lambda i: -len(classes[i])):
            for outer in range(len(classes)):
                if classes[index] < classes[outer]:
                    regions[index] &= regions[outer]
        return task.regions_to_labels(regions)

    def _edit_structures(self, seg: np.ndarray) -> np.ndarray:
        labels = seg.copy()
        for name, mask in self.task.structure_masks(seg).items():
            labels[mask & ~self._edit(name, mask)] = 0
        return labels

    @classmethod
    def from_config(cls, settings: Mapping | PostProcessing | None) -> PostProcessing:
        """Build from a config mapping (the bundle's ``postprocessing`` key); ``None`` means no post-processing."""
        if isinstance(settings, PostProcessing):
            return settings
        if settings is None:
            return cls()
        if not isinstance(settings, Mapping):
            raise ConfigError("postprocessing", f"expected a mapping, got {type(settings).__name__}")
        known = {"min_component_voxels", "keep_largest", "fill_core_holes", "min_et_voxels", "connectivity", "task"}
        unknown = sorted(set(settings) - known - {"_target_"})
        if unknown:
            raise ConfigError("postprocessing", f"unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**{key: value for key, value in settings.items() if key in known})

    def to_config(self) -> dict:
        """Plain-dict form (for provenance and summaries)."""
        return {
            "min_component_voxels": dict(self.min_component_voxels),
            "keep_largest": list(self.keep_largest),
            "fill_core_holes": str(self.fill_core_holes),
            "min_et_voxels": int(self.min_et_voxels),
            "connectivity": int(self.connectivity),
        }


def task_postprocessing(task: TaskSpec) -> PostProcessing | None:
    """The post-processing ``task`` declares (:attr:`pipeline.tasks.task.Task.postprocessing`) on its structures, or None when it declares none.

    ``keep_largest`` names classes; each becomes the scored structure made of that class alone.

    Raises:
        ConfigError: if a declared class is not a structure of its own.
    """
    task = resolve_task(task)
    if not task.postprocessing:
        return None
    by_class = {members[0]: name for name, members in task.structures.items() if len(members) == 1}
    classes = task.postprocessing.get("keep_largest", ())
    missing = [c for c in classes if c not in by_class]
    if missing:
        raise ConfigError(f"task {task.name}", f"postprocessing.keep_largest names {missing}, which no structure scores on its own")
    return PostProcessing(keep_largest=[by_class[c] for c in classes], task=task)
