"""How a synthetic cohort is written for each built-in task: case names, files and label values.

Every layout draws the same brains, gliomas and contrasts (:func:`pipeline.synth.synthesize_case`);
it differs in the release it imitates (:mod:`pipeline.datasets.brats`):

- ``brats-glioma``, ``whole-tumour``: BraTS 2021 (``BraTS2021_NNNNN_{t1,t1ce,t2,flair,seg}``,
  labels 1 NCR/NET, 2 ED, 4 ET); the default cohort;
- ``brats2024-post-treatment``: BraTS 2023+ GLI naming, labels 1 NETC, 2 SNFH, 3 ET and a
  resection cavity (4) beside the tumour, fluid-like (dark on T1, T1ce and FLAIR, bright on T2);
- ``brats2024-ped``: BraTS-PED naming and the 2024 scheme 1 ET, 2 NETC, 3 CC (a fluid cyst in
  the tumour), 4 ED;
- ``meningioma-rt``: BraTS 2024 MEN-RT (``BraTS-MEN-RT-NNNN-1_{t1c,gtv}``), T1ce only, the
  tumour core as the one label (GTV 1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipeline.core.errors import ConfigError
from pipeline.synth.tumour import EDEMA, ENHANCING, NECROTIC
from pipeline.tasks.modalities import BRATS2023_SUFFIXES, MODALITIES

__all__ = ["DEFAULT_LAYOUT", "LAYOUTS", "FluidPocket", "SynthLayout", "get_layout"]


@dataclasses.dataclass(frozen=True)
class FluidPocket:
    """A fluid-filled region drawn near the tumour (a resection cavity or a cyst).

    Args:
        label: the file label written for it.
        offset: distance of its centre from the tumour's centre, in core radii.
        ratio: its radius, in core radii.
    """

    label: int
    offset: float
    ratio: float


@dataclasses.dataclass(frozen=True)
class SynthLayout:
    """One task's synthetic release.

    Args:
        task: the built-in task it is read with (:data:`pipeline.tasks.task.TASKS`).
        case_id_format: the case id of case ``index`` (``str.format``).
        separator: what joins the case id and a file suffix.
        suffixes: file suffix of each written channel, in writing order.
        seg_suffix: file suffix of the segmentation (written last).
        labels: file label of each glioma label (:mod:`pipeline.synth.tumour`; 0 drops it).
        fluid: the fluid pocket it adds, if any.
    """

    task: str
    case_id_format: str
    separator: str
    suffixes: Mapping[str, str]
    seg_suffix: str
    labels: Mapping[int, int]
    fluid: FluidPocket | None = None

    def case_id(self, index: int) -> str:
        """The id of case ``index``."""
        return self.case_id_format.format(index)

    def files(self, case_dir: Path) -> dict[str, Path]:
        """The files of the case folder ``case_dir``, by channel and ``seg`` (the order they are written in)."""
        keys = {**self.suffixes, "seg": self.seg_suffix}
        return {key: case_dir / f"{case_dir.name}{self.separator}{suffix}.nii.gz" for key, suffix in keys.items()}

    def relabel(self, glioma: np.ndarray) -> np.ndarray:
        """This layout's labels (uint8) from the glioma labels 0/1/2/4."""
        table = np.zeros(256, dtype=np.uint8)
        for source, target in self.labels.items():
            table[source] = target
        return table[glioma]


_GLIOMA_LABELS = {NECROTIC: NECROTIC, EDEMA: EDEMA, ENHANCING: ENHANCING}
_BRATS2021 = dict(case_id_format="BraTS2021_{:05d}", separator="_", suffixes={m: m for m in MODALITIES}, seg_suffix="seg", labels=_GLIOMA_LABELS)
_BRATS2023 = dict(separator="-", suffixes=dict(BRATS2023_SUFFIXES), seg_suffix="seg")

#: The synthetic layout of every built-in task it can imitate, by task name.
LAYOUTS: dict[str, SynthLayout] = {
    layout.task: layout
    for layout in (
        SynthLayout("brats-glioma", **_BRATS2021),
        SynthLayout("whole-tumour", **_BRATS2021),
        SynthLayout(
            "brats2024-post-treatment",
            case_id_format="BraTS-GLI-{:05d}-000",
            labels={NECROTIC: 1, EDEMA: 2, ENHANCING: 3},
            fluid=FluidPocket(label=4, offset=0.9, ratio=0.7),
            **_BRATS2023,
        ),
        SynthLayout(
            "brats2024-ped",
            case_id_format="BraTS-PED-{:05d}-000",
            labels={ENHANCING: 1, NECROTIC: 2, EDEMA: 4},
            fluid=FluidPocket(label=3, offset=0.35, ratio=0.45),
            **_BRATS2023,
        ),
        SynthLayout(
            "meningioma-rt",
            case_id_format="BraTS-MEN-RT-{:04d}-1",
            separator="_",
            suffixes={"t1ce": "t1c"},
            seg_suffix="gtv",
            labels={NECROTIC: 1, ENHANCING: 1},
        ),
    )
}

#: The default cohort's layout.
DEFAULT_LAYOUT = LAYOUTS["brats-glioma"]


def get_layout(task: str) -> SynthLayout:
    """The layout of a built-in task, with an error listing them."""
    try:
        return LAYOUTS[task]
    except KeyError:
        raise ConfigError("--task", f"no synthetic layout for task {task!r}; choose one of {', '.join(LAYOUTS)}") from None
