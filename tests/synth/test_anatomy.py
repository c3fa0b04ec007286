"""The synthetic brains' anatomy (pipeline.synth.anatomy)."""

from __future__ import annotations

import numpy as np


def test_template_maps_are_nilearns_mni152() -> None:
    from nilearn import datasets

    from pipeline.synth.anatomy import load_template

    template = load_template(resolution=1)
    np.testing.assert_array_equal(template.grey, datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32))
    np.testing.assert_array_equal(template.white, datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32))
    np.testing.assert_array_equal(template.brain > 0, datasets.load_mni152_brain_mask(resolution=1, threshold=0).get_fdata() > 0)
