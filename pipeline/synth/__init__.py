"""The synthetic BraTS-like cohort: the default data of the demo and the tests.

Brains come from the MNI152 2009 template shipped with nilearn, placed and deformed per patient
(:mod:`~pipeline.synth.anatomy`); gliomas with a necrotic core, enhancing rim and edema are
grown inside them (:mod:`~pipeline.synth.tumour`); four MR contrasts are rendered with bias
field and noise (:mod:`~pipeline.synth.appearance`); and cases are written in BraTS 2021
layout with the real BraTS header (:mod:`~pipeline.synth.cohort`, :mod:`~pipeline.synth.grid`), or in
another task's release layout and labels (:mod:`~pipeline.synth.layouts`).
:mod:`~pipeline.synth.head` wraps a skull-free brain in skull and scalp, for measuring skull stripping.
"""

from pipeline.synth.cohort import case_files, case_id, generate_cohort, synthesize_case
from pipeline.synth.grid import GRIDS, SynthGrid, get_grid
from pipeline.synth.layouts import LAYOUTS

__all__ = ["GRIDS", "LAYOUTS", "SynthGrid", "case_files", "case_id", "generate_cohort", "get_grid", "synthesize_case"]
