"""Post-processing: small components, largest component, tiny ET relabelled as NEC, region nesting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.core.errors import ConfigError
from pipeline.tasks.labels import ED, ET, NEC
from pipeline.inference.postprocess import (
    PostProcessing,
    fill_core_holes,
    keep_largest_component,
    relabel_small_enhancing_tumour,
    remove_small_components,
)

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "brats_segmentation" / "configs"


def _tumour() -> np.ndarray:
    seg = np.zeros((20, 20, 20), np.uint8)
    seg[2:10, 2:10, 2:10] = ED  # 512-voxel tumour
    seg[3:9, 3:9, 3:9] = NEC
    seg[5:7, 5:7, 5:7] = ET  # 8 ET voxels
    seg[15, 15, 15] = ED  # a one-voxel speck far away
    return seg


def test_remove_small_components_keeps_big_ones():
    mask = _tumour() > 0
    cleaned = remove_small_components(mask, min_voxels=2)
    assert not cleaned[15, 15, 15]
    assert cleaned.sum() == mask.sum() - 1
    assert remove_small_components(mask, 0).sum() == mask.sum()


def test_keep_largest_component():
    mask = _tumour() > 0
    mask[15:18, 15:18, 15:18] = True
    largest = keep_largest_component(mask)
    assert largest.sum() == 512 and not largest[16, 16, 16]
    assert not keep_largest_component(np.zeros((3, 3, 3), bool)).any()


def test_relabel_small_enhancing_tumour():
    seg = _tumour()
    relabelled = relabel_small_enhancing_tumour(seg, min_voxels=9)
    assert not (relabelled == ET).any()
    assert (relabelled == NEC).sum() == (seg == NEC).sum() + (seg == ET).sum()
    assert np.array_equal(relabel_small_enhancing_tumour(seg, min_voxels=8), seg)  # 8 is not below 8


def test_nesting_removed_core_becomes_edema_and_removed_et_becomes_necrosis():
    seg = _tumour()
    seg[12:15, 2:5, 2:5] = ED  # a second edema blob...
    seg[13, 3, 3] = NEC  # ...around a one-voxel core
    seg[3, 3, 3] = ET  # a one-voxel ET inside the main core, apart from the main ET
    out = PostProcessing(min_component_voxels={"TC": 2, "ET": 2})(seg)
    assert out[13, 3, 3] == ED  # TC speck removed, still whole tumour
    assert out[3, 3, 3] == NEC  # ET speck removed, still tumour core
    assert out[15, 15, 15] == ED  # WT untouched
    assert (out == ET).sum() == 8 and (out > 0).sum() == (seg > 0).sum()


def test_full_postprocessing_and_identity():
    seg = _tumour()
    post = PostProcessing(min_component_voxels=2, keep_largest=["WT"], min_et_voxels=100)
    out = post(seg)
    assert out[15, 15, 15] == 0
    assert not (out == ET).any()
    identity = PostProcessing()
    assert identity.is_identity and np.array_equal(identity(seg), seg)


def test_config_round_trip_and_errors():
    post = PostProcessing.from_config({"min_component_voxels": {"WT": 5}, "keep_largest": ["TC"], "min_et_voxels": 3})
    assert post.to_config()["min_component_voxels"] == {"TC": 0, "WT": 5, "ET": 0}
    assert PostProcessing.from_config(post.to_config()) == post
    with pytest.raises(ConfigError, match="unknown region"):
        PostProcessing(keep_largest=["XX"])
    with pytest.raises(ConfigError, match="unknown key"):
        PostProcessing.from_config({"min_voxels": 3})
    with pytest.raises(ConfigError, match="connectivity"):
        PostProcessing(connectivity=4)


def test_the_inference_config_builds_the_postprocessing_component():
    """configs/inference.yaml is the one definition: its ``postprocessing`` is a PostProcessing component."""
    from monai.bundle import ConfigParser

    parser = ConfigParser(ConfigParser.load_config_files([str(CONFIGS / "inference.yaml"), str(CONFIGS / "evaluate.yaml")]))
    post = parser.get_parsed_content("postprocessing")
    assert post == PostProcessing(min_component_voxels={"WT": 20, "TC": 200, "ET": 200}, keep_largest=["WT"], fill_core_holes="slices", min_et_voxels=0)
    parser["postprocessing#min_et_voxels"] = 500
    assert parser.get_parsed_content("postprocessing").min_et_voxels == 500
    assert "postprocessing" not in yaml.safe_load((CONFIGS / "evaluate.yaml").read_text())


# ---- tasks ------------------------------------------------------------------------------------
def test_a_task_without_regions_edits_its_structures():
    from pipeline.tasks.task import resolve_task

    task = resolve_task("brats2024-post-treatment")  # NETC 1, SNFH 2, ET 3, RC 4; no regions
    seg = np.zeros((20, 20, 20), np.uint8)
    seg[2:10, 2:10, 2:10] = 2
    seg[4:6, 4:6, 4:6] = 3
    seg[15, 15, 15] = 2  # a speck of SNFH
    seg[12:14, 12:14, 12:14] = 4  # a small resection cavity
    seg[17, 2, 2] = 4  # and a speck of it
    post = PostProcessing(min_component_voxels={"WT": 5}, keep_largest=["RC"], task=task)
    out = post(seg)
    assert out[15, 15, 15] == 0 and out[17, 2, 2] == 0  # removed structure voxels become background
    assert (out[12:14, 12:14, 12:14] == 4).all() and (out[4:6, 4:6, 4:6] == 3).all()
    assert np.count_nonzero(out) == np.count_nonzero(seg) - 2
    with pytest.raises(ConfigError, match="unknown region"):
        PostProcessing(keep_largest=["NEC"], task=task)


def test_small_et_becomes_netc_only_where_the_task_has_both():
    from pipeline.tasks.task import resolve_task

    seg = np.zeros((6, 6, 6), np.uint8)
    seg[1:5, 1:5, 1:5] = 2
    seg[2, 2, 2] = 1  # ET in the paediatric task (ET 1, NETC 2, CC 3, ED 4)
    ped = PostProcessing(min_et_voxels=5, task="brats2024-ped")
    assert ped(seg)[2, 2, 2] == resolve_task("brats2024-ped").class_value("NETC")
    with pytest.raises(ConfigError, match="min_et_voxels relabels ET as NEC/NETC; task whole-tumour has no such classes"):
        PostProcessing(min_et_voxels=5, task="whole-tumour")


def test_whole_tumour_keeps_its_largest_component_and_glioma_settings_move_to_a_task():
    seg = np.zeros((12, 12, 12), np.uint8)
    seg[1:5, 1:5, 1:5] = 1
    seg[9, 9, 9] = 1
    glioma = PostProcessing(min_component_voxels={"WT": 20}, keep_largest=["WT"])  # the bundle's default
    assert glioma.fits("whole-tumour") and not glioma.fits("meningioma-rt")
    whole = glioma.for_task("whole-tumour")
    assert whole.min_component_voxels == {"WT": 20} and whole(seg).sum() == 64
    with pytest.raises(ConfigError, match="unknown region"):
        glioma.for_task("meningioma-rt")
    default = PostProcessing(min_component_voxels={"WT": 20, "TC": 200, "ET": 200}, keep_largest=["WT"])  # inference.yaml's
    assert not default.fits("whole-tumour") and default.restricted_to("whole-tumour") == whole
    assert default.restricted_to("meningioma-rt").is_identity
    regions = PostProcessing(min_component_voxels=2, task="brats-glioma")
    assert regions(_tumour())[15, 15, 15] == 0  # glioma: the regions are edited and nested, as before


def test_a_tasks_declared_postprocessing_keeps_the_largest_tumour():
    from pipeline.inference.postprocess import task_postprocessing
    from pipeline.tasks.task import IMAGE_MASK_2D, KAGGLE_LGG

    post = task_postprocessing(KAGGLE_LGG)
    assert post.keep_largest == ("tumour",) and task_postprocessing(IMAGE_MASK_2D) is None and task_postprocessing(None) is None
    seg = np.zeros((6, 6, 6), np.uint8)
    seg[0:2, 0:2, 0:2] = 1
    seg[4:6, 4:6, 3:6] = 1
    kept = post(seg)
    assert int(kept.sum()) == 12 and kept[5, 5, 5] == 1 and kept[0, 0, 0] == 0


def _rim(closed: bool = True) -> np.ndarray:
    """An enhancing shell around edema (the necrosis called edema), inside a rim of edema; ``closed=False`` cuts the shell open."""
    seg = np.zeros((16, 16, 16), np.uint8)
    seg[1:15, 1:15, 1:15] = ED
    seg[3:13, 3:13, 3:13] = ET
    seg[5:11, 5:11, 5:11] = ED  # enclosed by ET: what the network calls the necrosis
    seg[7:9, 7:9, 7:9] = 0  # and a pocket of background inside it
    if not closed:
        seg[7:9, 7:9, 3:5] = ED  # a channel through the shell to the outer edema
    return seg


def test_fill_core_holes_turns_what_the_core_encloses_into_necrosis():
    seg = _rim()
    filled = fill_core_holes(seg, "3d")
    assert np.array_equal(fill_core_holes(seg, "slices"), filled) and np.array_equal(fill_core_holes(seg, "none"), seg)
    inside = np.zeros(seg.shape, bool)
    inside[5:11, 5:11, 5:11] = True
    assert np.all(filled[inside] == NEC)  # edema and background inside the shell
    assert np.array_equal(filled != seg, inside)  # nothing else changes: the shell, the outer edema, the background
    opened = _rim(closed=False)
    assert not np.any(fill_core_holes(opened, "3d") == NEC)  # a shell open to the edema in 3D encloses nothing...
    by_slice = fill_core_holes(opened, "slices")  # ...but in each axial slice the shell is a closed ring (the channel runs across slices)
    channel = np.zeros(seg.shape, bool)
    channel[7:9, 7:9, 3:5] = True
    assert np.all(by_slice[inside | channel] == NEC) and np.array_equal(by_slice != opened, inside | channel)
    assert np.array_equal(fill_core_holes(np.zeros((4, 4, 4), np.uint8)), np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ConfigError, match="fill_core_holes must be one of"):
        fill_core_holes(seg, "2d")


def test_fill_core_holes_in_the_postprocessing_its_config_and_its_tasks():
    post = PostProcessing(fill_core_holes="slices")
    assert not post.is_identity and np.all(post(_rim())[5:11, 5:11, 5:11] == NEC)
    assert post.to_config()["fill_core_holes"] == "slices" and PostProcessing.from_config(post.to_config()) == post
    assert PostProcessing.from_config({"min_et_voxels": 0}).fill_core_holes == "none"  # run folders written before the setting
    with pytest.raises(ConfigError, match="fill_core_holes must be one of"):
        PostProcessing(fill_core_holes=True)
    ped = PostProcessing(fill_core_holes="3d", task="brats2024-ped")  # ET 1, NETC 2, CC 3, ED 4
    seg = np.full((9, 9, 9), 4, np.uint8)
    seg[2:7, 2:7, 2:7] = 1
    seg[4, 4, 4] = 4
    assert ped(seg)[4, 4, 4] == 2
    with pytest.raises(ConfigError, match="fill_core_holes labels the core's holes NEC/NETC; task whole-tumour"):
        PostProcessing(fill_core_holes="slices", task="whole-tumour")
    assert not post.fits("whole-tumour") and post.restricted_to("whole-tumour").is_identity
    assert post.for_task("brats-glioma").fill_core_holes == "slices"
