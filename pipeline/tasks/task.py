"""Tasks: what goes into the network and what comes out, declared per data set.

A task is one small declarative description, in the spirit of nnU-Net's ``dataset.json``:

- ``channels``: the input channels in network order, by key (``t1``, ``t1ce``, ``t2``, ``flair``
  for BraTS; a case's file of each channel is found by the data set's layout);
- ``classes``: the output classes; internal label ``k`` is ``classes[k - 1]`` (0 is background);
- ``labels``: per label convention (a release's file label values), the file value(s) of each
  class (``{"NEC": 1, "ED": 2, "ET": 4}``; a list merges several values into one class, as the
  whole-tumour task does); a value listed under ``background_values`` is read as background only
  when the caller opts in (the 2024 resection cavity under the glioma task);
- ``structures``: what is scored, each a set of classes (BraTS: NEC, ED, ET, WT, TC);
- ``target``: ``softmax`` over the classes, or sigmoid ``regions`` (``regions`` names the scored
  structures that are the network's output channels, in order, nnU-Net's ``regions_class_order``);
- ``colours``: RGB of each class, for overlays and the 3D Slicer colour table;
- ``postprocessing``: the post-processing the task wants by default, by step (``keep_largest``:
  the classes reduced to their largest connected component, as the Kaggle LGG system did);
- ``planar_size`` and ``planar_fit``: for 2D image tasks, the in-plane size ``(rows, columns)``
  every image is brought to in the cache, so images of different sizes train together:
  ``pad`` (the default) zero-pads it, centred (an image larger than the size is refused), and a
  prediction is cropped back exactly; ``resize`` resamples it (image by area averaging or bilinear, mask nearest) and
  a prediction's probabilities are resampled back (bilinear; area when the image was enlarged) before the labels are taken. The
  cache records each image's own size, so every prediction comes back at it. Empty: each image
  keeps its own size. (``pad_to``, read from files written before, is ``planar_size`` with ``pad``);
- ``metrics``: how a prediction is scored (:data:`METRIC_SETS`, :mod:`pipeline.evaluation.metrics`): ``volume``
  per patient on the whole volume in millimetres (HD95 in mm, volumes in ml: BraTS),
  ``volume-voxels`` the same with no spacing stored (HD95 and volumes in voxels: Kaggle LGG,
  per-patient volume Dice as its publication scores it), or ``image`` per 2D image (Dice, IoU,
  pixel accuracy, sensitivity, specificity, precision: image/mask folders).

Built-in tasks are listed in :data:`TASKS`; a task file (JSON or YAML with the same keys, read by
:func:`load_task`) declares a new label scheme without code. A data list stores its task
(:meth:`Task.to_dict`), and so do a run's and a bundle's inference configs. A data list, cache or
run folder written before tasks existed holds the BraTS glioma task (:data:`DEFAULT_TASK`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import ConfigError
from pipeline.tasks.conventions import BACKGROUND, LabelConvention
from pipeline.tasks.modalities import MODALITIES, MODALITY_NAMES

__all__ = [
    "DEFAULT_TASK",
    "IMAGE_MASK_2D",
    "IMAGE_MASK_2D_RGB",
    "KAGGLE_LGG",
    "METRIC_SETS",
    "PLANAR_FITS",
    "POSTPROCESSING_STEPS",
    "TARGETS",
    "TASKS",
    "Task",
    "TaskSpec",
    "get_task",
    "load_task",
    "model_task",
    "resolve_task",
    "task_from_dict",
]

#: Training targets: softmax over the classes, or sigmoid over (nested) regions.
TARGETS: tuple[str, ...] = ("softmax", "regions")

#: How a task's predictions are scored (:mod:`pipeline.evaluation.metrics`): per volume in mm, per volume in voxels, per 2D image.
METRIC_SETS: tuple[str, ...] = ("volume", "volume-voxels", "image")

#: How a 2D task brings every image to its ``planar_size``: zero-padding, centred, or resampling.
PLANAR_FITS: tuple[str, ...] = ("pad", "resize")

#: Post-processing steps a task may ask for by default (each names the classes it applies to).
POSTPROCESSING_STEPS: tuple[str, ...] = ("keep_largest",)

RGB = tuple[int, int, int]

#: Colours of classes a task file does not colour, in order.
_SPARE_COLOURS: tuple[RGB, ...] = ((255, 0, 0), (0, 200, 0), (255, 220, 0), (0, 120, 255), (255, 0, 255), (0, 220, 220), (255, 128, 0))


@dataclass(frozen=True)
class Task:
    """What goes in and what comes out (see the module docstring for each field)."""

    name: str
    description: str
    channels: tuple[str, ...]
    classes: tuple[str, ...]
    labels: Mapping[str, Mapping[str, tuple[int, ...]]]
    structures: Mapping[str, tuple[str, ...]]
    target: str = "softmax"
    regions: tuple[str, ...] = ()
    colours: Mapping[str, RGB] = field(default_factory=dict)
    background_values: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    channel_names: Mapping[str, str] = field(default_factory=dict)
    postprocessing: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    planar_size: tuple[int, ...] = ()
    planar_fit: str = "pad"
    metrics: str = "volume"

    # ---- inputs -------------------------------------------------------------------------------
    @property
    def num_channels(self) -> int:
        """Input channels of one slice or volume (2.5D multiplies them by the slices of context)."""
        return len(self.channels)

    def channel_name(self, channel: str) -> str:
        """Display name of an input channel (``FLAIR``)."""
        return self.channel_names.get(channel, MODALITY_NAMES.get(channel, channel))

    def with_channels(self, channels: Sequence[str]) -> Task:
        """This task on a subset of its channels (kept in the given order); the name says which."""
        channels = tuple(channels)
        unknown = [c for c in channels if c not in self.channels]
        if not channels or unknown or len(set(channels)) != len(channels):
            raise ConfigError("--channels", f"choose distinct channels of task {self.name} ({', '.join(self.channels)}), got {', '.join(channels) or 'none'}")
        if channels == self.channels:
            return self
        return replace(self, name=f"{self.name}[{'+'.join(channels)}]", channels=channels)

    # ---- outputs ------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Classes including background (the softmax output channels)."""
        return len(self.classes) + 1

    @property
    def out_channels(self) -> int:
        """The network's output channels: the classes with background, or one per region."""
        return len(self.regions) if self.target == "regions" else self.num_classes

    def class_value(self, name: str) -> int:
        """Internal label of a class (background is 0)."""
        return self.classes.index(name) + 1

    def structure_values(self, structure: str) -> tuple[int, ...]:
        """Internal labels of a scored structure."""
        return tuple(self.class_value(c) for c in self.structures[structure])

    def structure_masks(self, seg: Any) -> dict[str, Any]:
        """Boolean mask of every scored structure of an internal segmentation (NumPy arrays or torch tensors)."""
        if not hasattr(seg, "shape"):
            seg = np.asarray(seg)
        masks = {}
        for structure in self.structures:
            values = self.structure_values(structure)
            mask = seg == values[0]
            for value in values[1:]:
                mask = mask | (seg == value)
            masks[structure] = mask
        return masks

    def labels_to_regions(self, seg: np.ndarray) -> np.ndarray:
        """The :attr:`regions` masks of an internal segmentation, channel first (uint8)."""
        seg = np.asarray(seg)
        return np.stack([np.isin(seg, self.structure_values(r)) for r in self.regions]).astype(np.uint8)

    def regions_to_labels(self, regions: np.ndarray) -> np.ndarray:
        """Internal labels from region masks (channel first, in :attr:`regions` order).

        Regions are painted from the largest (most classes) to the smallest, each with the one
        class it holds that no smaller region holds, so nested regions decode exactly.
        """
        regions = np.asarray(regions, dtype=bool)
        seg = np.zeros(regions.shape[1:], dtype=np.uint8)
        for index, value in self._region_paint_order():
            seg[regions[index]] = value
        return seg

    def _region_paint_order(self) -> list[tuple[int, int]]:
        order = sorted(range(len(self.regions)), key=lambda i: -len(self.structures[self.regions[i]]))
        painted = []
        for position, index in enumerate(order):
            smaller = {c for j in order[position + 1 :] for c in self.structures[self.regions[j]]}
            own = [c for c in self.structures[self.regions[index]] if c not in smaller]
            painted.append((index, self.class_value(own[0])))
        return painted

    def decode(self, probabilities: np.ndarray) -> np.ndarray:
        """Internal labels (uint8) from network outputs ``(K, ...)``: argmax of the classes, or regions thresholded at 0.5."""
        probabilities = np.asarray(probabilities)
        if self.target == "regions":
            return self.regions_to_labels(probabilities > 0.5)
        return probabilities.argmax(axis=0).astype(np.uint8)

    def colour(self, name: str) -> RGB:
        """RGB of a class (0-255)."""
        return tuple(self.colours[name]) if name in self.colours else _SPARE_COLOURS[self.classes.index(name) % len(_SPARE_COLOURS)]

    def structure_colour(self, structure: str) -> RGB:
        """RGB of a scored structure: its first class's, or for a region the colour of the class it adds over the regions inside it (WT: ED's)."""
        classes = self.structures[structure]
        inner = {c for members in self.structures.values() if len(members) > 1 and set(members) < set(classes) for c in members}
        return self.colour(next((c for c in classes if c not in inner), classes[0]))

    # ---- label conventions --------------------------------------------------------------------
    @property
    def conventions(self) -> tuple[str, ...]:
        """The label conventions this task reads and writes."""
        return tuple(self.labels)

    def convention(self, name: str) -> LabelConvention:
        """The file <-> internal label map of one convention under this task."""
        if name not in self.labels:
            raise ConfigError(f"task {self.name}", f"has no label convention {name!r}; it reads {', '.join(self.labels)}")
        to_internal = {BACKGROUND: BACKGROUND}
        names = {BACKGROUND: "background"}
        for class_name, values in self.labels[name].items():
            for value in values:
                to_internal[int(value)] = self.class_value(class_name)
                names[int(value)] = class_name
        optional = {int(v): BACKGROUND for v in self.background_values.get(name, ())}
        for value in optional:
            names.setdefault(value, "background")
        description = f"{self.name}, {name}: " + ", ".join(f"{v} {names[v]}" for v in sorted(to_internal))
        return LabelConvention(name=name, description=description, to_internal_map=to_internal, names=names, optional_labels=optional)

    # ---- storage ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The task as JSON-ready mappings (what a data list and a run store)."""
        payload: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "channels": list(self.channels),
            "classes": list(self.classes),
            "labels": {conv: {c: list(v) for c, v in classes.items()} for conv, classes in self.labels.items()},
            "structures": {s: list(c) for s, c in self.structures.items()},
            "target": self.target,
        }
        if self.regions:
            payload["regions"] = list(self.regions)
        payload["colours"] = {c: list(self.colour(c)) for c in self.classes}
        if self.background_values:
            payload["background_values"] = {conv: list(v) for conv, v in self.background_values.items()}
        if self.channel_names:
            payload["channel_names"] = dict(self.channel_names)
        if self.postprocessing:
            payload["postprocessing"] = {step: list(classes) for step, classes in self.postprocessing.items()}
        if self.planar_size:
            payload["planar_size"] = list(self.planar_size)
            payload["planar_fit"] = self.planar_fit
        if self.metrics != "volume":
            payload["metrics"] = self.metrics
        return payload

    def with_target(self, target: str) -> Task:
        """This task trained on ``softmax`` classes or sigmoid ``regions`` (which it must declare)."""
        if target not in TARGETS:
            raise ConfigError("target", f"choose {' or '.join(TARGETS)}, got {target!r}")
        if target == "regions" and not self.regions:
            raise ConfigError(f"task {self.name}", "declares no regions to train on")
        return replace(self, target=target)


def _values(value: Any, where: str) -> tuple[int, ...]:
    values = value if isinstance(value, list | tuple) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 256 for v in values):
        raise ValueError(f"{where}: label values must be integers 1-255, got {value!r}")
    return tuple(int(v) for v in values)


def task_from_dict(payload: Mapping[str, Any], source: str | os.PathLike[str] = "task") -> Task:
    """Build and check a task from its mapping (a task file's or a data list's).

    Raises:
        ConfigError: naming ``source`` and the first problem (a missing key, a region naming an
            unknown class, two classes with one value, ...).
    """
    try:
        task = _task_from_dict(payload)
    except (KeyError, TypeError, ValueError) as err:
        message = f"missing key {err.args[0]!r}" if isinstance(err, KeyError) else str(err)
        raise ConfigError(source, f"malformed task: {message}") from None
    return task


def _task_from_dict(payload: Mapping[str, Any]) -> Task:
    if not isinstance(payload, Mapping):
        raise TypeError(f"a task is a mapping, got {type(payload).__name__}")
    unknown_keys = set(payload) - {f for f in Task.__dataclass_fields__}
    if unknown_keys:
        raise ValueError(f"unknown keys {sorted(unknown_keys)}")
    name, channels, classes = str(payload["name"]), list(payload["channels"]), list(payload["classes"])
    if not name or not channels or not classes:
        raise ValueError("name, channels and classes must not be empty")
    for what, items in (("channels", channels), ("classes", classes)):
        if len(set(items)) != len(items) or not all(isinstance(i, str) and i for i in items):
            raise ValueError(f"{what} must be distinct names, got {items}")
    if "background" in classes:
        raise ValueError("'background' is implicit (label 0), not a class")
    if len(classes) > 254:
        raise ValueError("at most 254 classes")
    labels: dict[str, dict[str, tuple[int, ...]]] = {}
    background = {str(conv): _values(list(v), f"background_values.{conv}") for conv, v in dict(payload.get("background_values", {})).items()}
    for convention, spec in dict(payload["labels"]).items():
        if not isinstance(spec, Mapping):
            raise TypeError(f"labels.{convention} must map classes to values")
        seen: dict[int, str] = {v: "background_values" for v in background.get(str(convention), ())}
        for class_name, value in spec.items():
            if class_name not in classes:
                raise ValueError(f"labels.{convention} names {class_name!r}, not one of the classes {classes}")
            for v in _values(value, f"labels.{convention}.{class_name}"):
                if v in seen:
                    raise ValueError(f"labels.{convention}: value {v} is given to both {seen[v]} and {class_name}")
                seen[v] = class_name
        missing = [c for c in classes if c not in spec]
        if missing:
            raise ValueError(f"labels.{convention} gives no value to {missing}")
        labels[str(convention)] = {c: _values(spec[c], f"labels.{convention}.{c}") for c in classes}
    if not labels:
        raise ValueError("labels must declare at least one convention")
    structures = {str(s): tuple(members if isinstance(members, list | tuple) else [members]) for s, members in dict(payload["structures"]).items()}
    if not structures:
        raise ValueError("structures must not be empty")
    for structure, members in structures.items():
        unknown = [m for m in members if m not in classes]
        if not members or unknown:
            raise ValueError(f"structure {structure} names unknown classes {unknown or members}; the classes are {classes}")
    target = str(payload.get("target", "softmax"))
    if target not in TARGETS:
        raise ValueError(f"target must be one of {list(TARGETS)}, got {target!r}")
    regions = tuple(payload.get("regions", ()))
    for region in regions:
        if region not in structures:
            raise ValueError(f"region {region!r} is not one of the structures {list(structures)}")
    if target == "regions" and not regions:
        raise ValueError("target regions needs a list of regions")
    colours = {}
    for class_name, rgb in dict(payload.get("colours", {})).items():
        if class_name not in classes or len(rgb) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in rgb):
            raise ValueError(f"colours.{class_name} must be a class's [r, g, b] (0-255), got {rgb!r}")
        colours[class_name] = tuple(int(c) for c in rgb)
    postprocessing = {str(step): tuple(members if isinstance(members, list | tuple) else [members]) for step, members in dict(payload.get("postprocessing", {})).items()}
    for step, members in postprocessing.items():
        if step not in POSTPROCESSING_STEPS:
            raise ValueError(f"postprocessing step {step!r} is not one of {list(POSTPROCESSING_STEPS)}")
        if not members or any(m not in classes for m in members):
            raise ValueError(f"postprocessing.{step} must name classes of {classes}, got {list(members)}")
    planar_size = tuple(payload.get("planar_size", payload.get("pad_to", ())))  # pad_to: files written before planar_fit
    if planar_size and (len(planar_size) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in planar_size)):
        raise ValueError(f"planar_size must be [rows, columns] (positive integers), got {list(planar_size)}")
    planar_fit = str(payload.get("planar_fit", "pad"))
    if planar_fit not in PLANAR_FITS:
        raise ValueError(f"planar_fit must be one of {list(PLANAR_FITS)}, got {planar_fit!r}")
    metrics = str(payload.get("metrics", "volume"))
    if metrics not in METRIC_SETS:
        raise ValueError(f"metrics must be one of {list(METRIC_SETS)}, got {metrics!r}")
    task = Task(
        name=name,
        description=str(payload.get("description", "")),
        channels=tuple(channels),
        classes=tuple(classes),
        labels=labels,
        structures=structures,
        target=target,
        regions=regions,
        colours=colours,
        background_values=background,
        channel_names={str(k): str(v) for k, v in dict(payload.get("channel_names", {})).items()},
        postprocessing=postprocessing,
        planar_size=planar_size,
        planar_fit=planar_fit,
        metrics=metrics,
    )
    if regions:
        covered = {c for r in regions for c in structures[r]}
        if covered != set(classes):
            raise ValueError(f"the regions {list(regions)} must cover every class; {sorted(set(classes) - covered)} are in none")
        try:
            task._region_paint_order()
        except IndexError:
            raise ValueError(f"the regions {list(regions)} do not nest: one adds no class over the smaller ones") from None
    return task


_GLIOMA_CLASSES = ("NEC", "ED", "ET")
_GLIOMA_COLOURS = {"NEC": (255, 0, 0), "ED": (0, 200, 0), "ET": (255, 220, 0)}

#: The BraTS glioma task: four modalities, the sub-regions NEC/ED/ET, scored on NEC, ED, ET, WT, TC.
BRATS_GLIOMA = Task(
    name="brats-glioma",
    description="BraTS glioma: T1, T1ce, T2, FLAIR; NEC (necrotic/non-enhancing core), ED (edema/SNFH), ET; scored on NEC, ED, ET, WT, TC",
    channels=MODALITIES,
    classes=_GLIOMA_CLASSES,
    labels={
        "brats2017": {"NEC": (1,), "ED": (2,), "ET": (4,)},
        "brats2023": {"NEC": (1,), "ED": (2,), "ET": (3,)},
        "msd": {"NEC": (2,), "ED": (1,), "ET": (3,)},
        "internal": {"NEC": (1,), "ED": (2,), "ET": (3,)},
    },
    structures={"NEC": ("NEC",), "ED": ("ED",), "ET": ("ET",), "WT": ("NEC", "ED", "ET"), "TC": ("NEC", "ET")},
    regions=("TC", "WT", "ET"),
    colours=_GLIOMA_COLOURS,
    background_values={"brats2023": (4,)},
)

#: The whole tumour (binary), from the same releases; ``--channels`` picks any subset of the modalities.
WHOLE_TUMOUR = Task(
    name="whole-tumour",
    description="BraTS whole tumour (binary: every tumour label is WT), from any subset of T1, T1ce, T2, FLAIR",
    channels=MODALITIES,
    classes=("WT",),
    labels={
        "brats2017": {"WT": (1, 2, 4)},
        "brats2023": {"WT": (1, 2, 3)},
        "msd": {"WT": (1, 2, 3)},
        "internal": {"WT": (1,)},
    },
    structures={"WT": ("WT",)},
    colours={"WT": (0, 200, 0)},
    background_values={"brats2023": (4,)},
)

#: BraTS 2024 post-treatment glioma (and metastases): the resection cavity is a class, scored on its own.
BRATS2024_POST_TREATMENT = Task(
    name="brats2024-post-treatment",
    description="BraTS 2024 post-treatment glioma: NETC 1, SNFH 2, ET 3, RC 4 (resection cavity); scored on ET, NETC, SNFH, RC, TC, WT (RC not in WT)",
    channels=MODALITIES,
    classes=("NETC", "SNFH", "ET", "RC"),
    labels={"brats2023": {"NETC": (1,), "SNFH": (2,), "ET": (3,), "RC": (4,)}, "internal": {"NETC": (1,), "SNFH": (2,), "ET": (3,), "RC": (4,)}},
    structures={"ET": ("ET",), "NETC": ("NETC",), "SNFH": ("SNFH",), "RC": ("RC",), "TC": ("NETC", "ET"), "WT": ("NETC", "SNFH", "ET")},
    colours={"NETC": (255, 0, 0), "SNFH": (0, 200, 0), "ET": (255, 220, 0), "RC": (0, 120, 255)},
)

#: BraTS 2024 paediatric tumours: their own label scheme.
BRATS2024_PED = Task(
    name="brats2024-ped",
    description="BraTS 2024 paediatric: ET 1, NETC 2, CC 3 (cystic component), ED 4; scored on ET, NETC, CC, ED, TC, WT",
    channels=MODALITIES,
    classes=("ET", "NETC", "CC", "ED"),
    labels={"brats2024-ped": {"ET": (1,), "NETC": (2,), "CC": (3,), "ED": (4,)}, "internal": {"ET": (1,), "NETC": (2,), "CC": (3,), "ED": (4,)}},
    structures={"ET": ("ET",), "NETC": ("NETC",), "CC": ("CC",), "ED": ("ED",), "TC": ("ET", "NETC", "CC"), "WT": ("ET", "NETC", "CC", "ED")},
    colours={"ET": (255, 220, 0), "NETC": (255, 0, 0), "CC": (0, 120, 255), "ED": (0, 200, 0)},
)

#: BraTS 2024 meningioma radiotherapy: one label (the gross tumour volume) on T1ce.
MENINGIOMA_RT = Task(
    name="meningioma-rt",
    description="BraTS 2024 meningioma radiotherapy: T1ce; GTV 1 (gross tumour volume)",
    channels=("t1ce",),
    classes=("GTV",),
    labels={"brats2024-men-rt": {"GTV": (1,)}, "brats2023": {"GTV": (1,)}, "internal": {"GTV": (1,)}},
    structures={"GTV": ("GTV",)},
    colours={"GTV": (255, 0, 0)},
)

#: A binary mask's file values: 255 (written) or 1 (also read); 0 is background.
_MASK_LABELS = {"mask255": {"tumour": (255, 1)}, "internal": {"tumour": (1,)}}

#: Kaggle LGG (``kaggle_3m``): 256x256 RGB TIFF slices whose channels are three sequences; binary FLAIR abnormality masks.
KAGGLE_LGG = Task(
    name="kaggle-lgg",
    description="Kaggle LGG (TCGA lower-grade glioma): pre-contrast, FLAIR, post-contrast slices; tumour (FLAIR abnormality), masks 0/255",
    channels=("pre", "flair", "post"),
    classes=("tumour",),
    labels=_MASK_LABELS,
    structures={"tumour": ("tumour",)},
    colours={"tumour": (255, 0, 0)},
    channel_names={"pre": "pre-contrast", "flair": "FLAIR", "post": "post-contrast"},
    postprocessing={"keep_largest": ("tumour",)},
    metrics="volume-voxels",
)

#: 2D image/mask folders (PNG, JPG, TIFF), grayscale: one channel, one class, masks 0/255 or 0/1, padded to 512x512.
IMAGE_MASK_2D = Task(
    name="image-mask-2d",
    description="2D image/mask pairs (PNG, JPG, TIFF), grayscale; tumour, masks 0/255 or 0/1; images zero-padded to 512x512 (a task file may resize instead)",
    channels=("image",),
    classes=("tumour",),
    labels=_MASK_LABELS,
    structures={"tumour": ("tumour",)},
    colours={"tumour": (255, 0, 0)},
    channel_names={"image": "image"},
    planar_size=(512, 512),
    metrics="image",
)

#: The same for RGB images: three channels.
IMAGE_MASK_2D_RGB = replace(
    IMAGE_MASK_2D,
    name="image-mask-2d-rgb",
    description="2D image/mask pairs (PNG, JPG, TIFF), RGB; tumour, masks 0/255 or 0/1; images zero-padded to 512x512 (a task file may resize instead)",
    channels=("red", "green", "blue"),
    channel_names={"red": "red", "green": "green", "blue": "blue"},
)

#: Every built-in task by name.
TASKS: dict[str, Task] = {
    task.name: task
    for task in (BRATS_GLIOMA, WHOLE_TUMOUR, BRATS2024_POST_TREATMENT, BRATS2024_PED, MENINGIOMA_RT, KAGGLE_LGG, IMAGE_MASK_2D, IMAGE_MASK_2D_RGB)
}

#: The task of every data list, cache and run folder that names none.
DEFAULT_TASK = BRATS_GLIOMA


def get_task(name: str) -> Task:
    """A built-in task by name, with an error listing them."""
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError("--task", f"unknown task {name!r}; built-in: {', '.join(TASKS)}; or give a task file (.json/.yaml)") from None


def load_task(path: str | os.PathLike[str]) -> Task:
    """A task file (JSON or YAML with :meth:`Task.to_dict`'s keys)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
        payload = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise ConfigError(path, f"cannot read task file: {err}") from None
    return task_from_dict(payload, path)


#: What a component accepts as its task: a built-in name, a task file, a stored mapping, a task, or ``None`` (the default).
TaskSpec = str | os.PathLike[str] | Mapping[str, Any] | Task | None


def resolve_task(spec: TaskSpec, channels: Sequence[str] | None = None) -> Task:
    """A task from a built-in name, a task file, a stored mapping or a task (``None``: :data:`DEFAULT_TASK`), on ``channels`` when given."""
    if isinstance(spec, Task):
        task = spec
    elif spec is None:
        task = DEFAULT_TASK
    elif isinstance(spec, Mapping):
        task = task_from_dict(spec)
    elif str(spec) in TASKS:
        task = TASKS[str(spec)]
    elif str(spec).endswith((".json", ".yaml", ".yml")) or Path(spec).is_file():
        task = load_task(spec)
    else:
        task = get_task(str(spec))
    return task.with_channels(channels) if channels else task


def model_task(spec: TaskSpec, output_mode: str | None = None) -> Task:
    """The task a network is trained on: :func:`resolve_task` of ``spec`` with ``output_mode`` as its target (``None``: the task's own)."""
    task = resolve_task(spec)
    return task if output_mode is None or output_mode == task.target else task.with_target(output_mode)
