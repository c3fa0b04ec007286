"""BraTS per-patient metrics against hand-computed cases, empty structures and anisotropic voxels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from benchmarks import hd95_definitions
from benchmarks.hd95_definitions import voxel_centre_hd95
from pipeline.tasks.labels import ED, ET, NEC, SCORED_STRUCTURES
from pipeline.evaluation.metrics import (
    EMPTY_HD95_MM,
    LESION_MISS_HD95_MM,
    case_metrics,
    hd95,
    lesion_wise_scores,
    metric_columns,
    structure_metrics,
)


def test_hand_computed_overlap():
    # truth: 8 voxels; prediction: 12 voxels, 4 of them inside the truth
    truth = np.zeros((6, 6, 6), bool)
    truth[1:3, 1:3, 1:3] = True
    pred = np.zeros_like(truth)
    pred[2:4, 1:3, 1:4] = True
    tp, fp, fn = 4, 8, 4
    tn = truth.size - tp - fp - fn
    result = structure_metrics(pred, truth, (1.0, 1.0, 1.0))
    assert result["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert result["iou"] == pytest.approx(tp / (tp + fp + fn))
    assert result["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert result["precision"] == pytest.approx(tp / (tp + fp))
    assert result["specificity"] == pytest.approx(tn / (tn + fp))


def test_volumes_are_millilitres_with_the_voxel_size():
    truth = np.zeros((4, 4, 4), bool)
    truth[:2, :2, :2] = True  # 8 voxels of 2 x 2 x 2.5 mm = 80 mm^3
    pred = np.zeros_like(truth)
    pred[:1, :1, :1] = True
    result = structure_metrics(pred, truth, (2.0, 2.0, 2.5))
    assert result["true_volume_ml"] == pytest.approx(0.08)
    assert result["pred_volume_ml"] == pytest.approx(0.01)


def test_both_empty_scores_perfect():
    empty = np.zeros((5, 5, 5), bool)
    result = structure_metrics(empty, empty, (1, 1, 1))
    assert result["dice"] == 1.0 and result["iou"] == 1.0
    assert result["hd95"] == 0.0
    assert result["sensitivity"] == 1.0 and result["precision"] == 1.0 and result["specificity"] == 1.0


@pytest.mark.parametrize("empty_side", ["prediction", "truth"])
def test_one_empty_scores_zero_and_the_brats_hd95(empty_side):
    mask = np.zeros((5, 5, 5), bool)
    mask[2, 2, 2] = True
    empty = np.zeros_like(mask)
    pred, truth = (empty, mask) if empty_side == "prediction" else (mask, empty)
    result = structure_metrics(pred, truth, (1, 1, 1))
    assert result["dice"] == 0.0 and result["iou"] == 0.0
    assert result["hd95"] == EMPTY_HD95_MM == 373.13
    assert result["sensitivity"] == 0.0 and result["precision"] == 0.0


def test_hd95_uses_the_spacing():
    a = np.zeros((6, 6, 6), bool)
    b = np.zeros_like(a)
    a[1, 1, 1] = True
    b[1, 1, 3] = True  # two voxels apart along the third axis
    assert hd95(a, b, (1, 1, 1)) == pytest.approx(2.0)
    assert hd95(a, b, (1, 1, 2.5)) == pytest.approx(5.0)
    assert hd95(a, b, (7, 7, 0.5)) == pytest.approx(1.0)


def test_hd95_is_the_max_of_the_directed_area_weighted_95th_percentiles():
    # Two separate voxels: every surfel is a corner of one of them, all of the same area.
    # prediction->truth: 8 surfels at 0, 4 at 3 * 2.5, 4 at 4 * 2.5 mm; truth->prediction: 8 at 0.
    truth = np.zeros((5, 5, 8), bool)
    truth[2, 2, 0] = True
    pred = truth.copy()
    pred[2, 2, 4] = True
    # The cumulative area first reaches 95% on the farthest surfels: 10 mm, with no interpolation
    # (voxel centres, as MONAI's compute_hausdorff_distance takes them, give 9.5).
    assert hd95(pred, truth, (1, 1, 2.5)) == 10.0
    assert hd95(truth, pred, (1, 1, 2.5)) == 10.0


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.5, 0.7)])
def test_hd95_measures_between_surfaces_not_voxel_centres(spacing):
    # truth: one voxel; prediction: it and its neighbour along the first axis. The prediction's
    # far face (4 corner surfels, well over 5% of its area) lies one voxel (spacing[0] mm) from
    # the truth's surface; every other surfel of either mask lies on the other surface.
    truth = np.zeros((5, 5, 5), bool)
    truth[1, 2, 2] = True
    pred = truth.copy()
    pred[2, 2, 2] = True
    assert hd95(pred, truth, spacing) == pytest.approx(spacing[0], abs=1e-12)
    assert voxel_centre_hd95(pred, truth, spacing) == pytest.approx(0.95 * spacing[0], abs=1e-5)  # what it was


@pytest.fixture(scope="module")
def organisers_hd95():
    """HD95 by the BraTS 2023 organisers' code: DeepMind's surface-distance package, called as their script calls it."""
    pytest.importorskip("surface_distance", reason="surface-distance (the dev extra) is not installed")
    return hd95_definitions.organisers_hd95


def _ball(shape: tuple[int, int, int], centre: tuple[float, float, float], radius_mm: float, spacing: tuple[float, ...]) -> np.ndarray:
    grid = np.indices(shape, dtype=float)
    return sum(((grid[axis] - centre[axis]) * spacing[axis]) ** 2 for axis in range(3)) <= radius_mm**2


def _box(shape: tuple[int, int, int], corner: tuple[int, int, int], size: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(c, c + n) for c, n in zip(corner, size))] = True
    return mask


_SHAPES = {
    "cube vs shifted cube": lambda sp: (_box((16, 16, 16), (4, 5, 3), (7, 7, 7)), _box((16, 16, 16), (3, 3, 3), (7, 7, 7))),
    "box vs smaller box": lambda sp: (_box((16, 16, 12), (4, 4, 3), (6, 8, 4)), _box((16, 16, 12), (3, 3, 2), (9, 9, 7))),
    "ball vs shifted larger ball": lambda sp: (_ball((24, 24, 20), (11, 12, 9), 6.0, sp), _ball((24, 24, 20), (12, 11.5, 10), 7.0, sp)),
    "ball vs eroded ball": lambda sp: (ndimage.binary_erosion(_ball((24, 24, 20), (11, 11, 9), 7.5, sp), iterations=2), _ball((24, 24, 20), (11, 11, 9), 7.5, sp)),
}


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.9, 1.1, 2.5)])
@pytest.mark.parametrize("shape", sorted(_SHAPES))
def test_hd95_matches_the_organisers_surface_distance_on_shapes(organisers_hd95, shape, spacing):
    pred, truth = _SHAPES[shape](spacing)
    expected = organisers_hd95(pred, truth, spacing)
    assert expected > 0
    assert hd95(pred, truth, spacing) == pytest.approx(expected, abs=1e-6)
    assert structure_metrics(pred, truth, spacing)["hd95"] == pytest.approx(expected, abs=1e-6)


_PERTURBATIONS = {
    "shifted (2, 1, 0)": lambda mask: np.roll(mask, (2, 1), axis=(0, 1)),
    "eroded, shifted (0, 1, 1)": lambda mask: np.roll(ndimage.binary_erosion(mask), (1, 1), axis=(1, 2)),
    "ragged": hd95_definitions.ragged,
}


@pytest.mark.real_data
@pytest.mark.slow
def test_hd95_on_a_real_case_matches_the_organisers_not_voxel_centres(real_brats_dir, organisers_hd95):
    regions, spacing = hd95_definitions.case_regions(real_brats_dir / "BraTS2021_00006" / "BraTS2021_00006_seg.nii.gz")
    assert spacing == (1.0, 1.0, 1.0)
    anisotropic = (0.9, 1.1, 2.5)  # the same voxels, as if scanned with thick slices
    for name, truth in regions.items():
        for perturbation, perturb in _PERTURBATIONS.items():
            pred = perturb(truth)
            for voxel_size in (spacing, anisotropic) if perturbation == "ragged" else (spacing,):
                expected = organisers_hd95(pred, truth, voxel_size)
                assert hd95(pred, truth, voxel_size) == pytest.approx(expected, abs=1e-6), (name, perturbation, voxel_size)
    # The voxel-centre HD95 this replaced is measurably off on a ragged prediction (2.236 against 2.0 mm on WT).
    ragged_wt = hd95_definitions.ragged(regions["WT"])
    assert voxel_centre_hd95(ragged_wt, regions["WT"], spacing) - hd95(ragged_wt, regions["WT"], spacing) > 0.2


def test_lesion_wise_hd95_is_the_surface_hd95_of_each_lesion(organisers_hd95):
    spacing = (0.9, 1.1, 2.5)
    ball = _ball((40, 40, 24), (10, 10, 8), 5.0, spacing)
    box = _box((40, 40, 24), (25, 24, 12), (8, 9, 6))  # far from the ball: two lesions
    grown_ball, moved_box = _ball(ball.shape, (11, 10.5, 8.5), 6.0, spacing), np.roll(box, (1, 1, 1), axis=(0, 1, 2))
    per_lesion = [organisers_hd95(grown_ball, ball, spacing), organisers_hd95(moved_box, box, spacing)]  # 2.5 mm each
    _, distance = lesion_wise_scores(grown_ball | moved_box, ball | box, spacing)
    assert distance == pytest.approx(sum(per_lesion) / 2, abs=1e-6)
    assert distance != pytest.approx((voxel_centre_hd95(grown_ball, ball, spacing) + voxel_centre_hd95(moved_box, box, spacing)) / 2, abs=0.05)


def test_case_metrics_scores_subregions_and_regions():
    truth = np.zeros((8, 8, 8), np.uint8)
    truth[2:6, 2:6, 2:6] = ED
    truth[3:5, 3:5, 3:5] = NEC
    pred = truth.copy()
    pred[pred == NEC] = ET  # the core predicted as enhancing
    result = case_metrics(pred, truth, (1, 1, 1))
    assert list(result) == metric_columns()
    assert result["dice_WT"] == 1.0 and result["dice_TC"] == 1.0 and result["dice_ED"] == 1.0
    assert result["dice_NEC"] == 0.0 and result["hd95_NEC"] == EMPTY_HD95_MM
    assert result["dice_ET"] == 0.0  # truth has no ET, prediction has
    assert result["true_volume_ml_TC"] == pytest.approx(8 / 1000)
    assert result["pred_volume_ml_ET"] == pytest.approx(8 / 1000)


def test_case_metrics_empty_case_follows_brats():
    empty = np.zeros((4, 4, 4), np.uint8)
    result = case_metrics(empty, empty, (1, 1, 1))
    assert all(result[f"dice_{s}"] == 1.0 and result[f"hd95_{s}"] == 0.0 for s in SCORED_STRUCTURES)


def test_case_metrics_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        case_metrics(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 5), np.uint8), (1, 1, 1))


def test_metric_columns_are_named_metric_structure():
    columns = metric_columns(lesion_wise=True)
    assert "dice_WT" in columns and "hd95_ET" in columns and "sensitivity_NEC" in columns
    assert "lesion_dice_TC" in columns and "lesion_hd95_WT" in columns
    assert len(columns) == len(set(columns))


def _cube(mask: np.ndarray, corner: tuple[int, int, int], size: int) -> None:
    x, y, z = corner
    mask[x : x + size, y : y + size, z : z + size] = True


def test_lesion_wise_counts_missed_and_false_positive_lesions():
    truth = np.zeros((40, 40, 40), bool)
    _cube(truth, (2, 2, 2), 4)  # lesion A: 64 mm^3, found exactly
    _cube(truth, (25, 25, 25), 4)  # lesion B: 64 mm^3, missed
    _cube(truth, (2, 30, 30), 2)  # 8 mm^3 <= 50 mm^3: dropped
    pred = np.zeros_like(truth)
    _cube(pred, (2, 2, 2), 4)
    _cube(pred, (30, 2, 30), 3)  # false positive
    dice, distance = lesion_wise_scores(pred, truth, (1, 1, 1))
    assert dice == pytest.approx((1.0 + 0.0) / 3)
    assert distance == pytest.approx((0.0 + LESION_MISS_HD95_MM + LESION_MISS_HD95_MM) / 3)


def test_lesion_wise_merges_nearby_lesions_by_dilation():
    truth = np.zeros((30, 30, 30), bool)
    _cube(truth, (5, 5, 5), 4)
    _cube(truth, (11, 5, 5), 4)  # two voxels of gap: one lesion after 3 dilations
    pred = np.zeros_like(truth)
    _cube(pred, (5, 5, 5), 4)  # only the first half predicted
    dice, _ = lesion_wise_scores(pred, truth, (1, 1, 1))
    assert dice == pytest.approx(2 * 64 / (64 + 128))  # one merged lesion, half found
    dice_apart, _ = lesion_wise_scores(pred, truth, (1, 1, 1), dilation_iterations=0)
    assert dice_apart == pytest.approx(1 / 2)  # two lesions: one perfect, one missed


def test_lesion_wise_empty_and_case_metrics_flag():
    empty = np.zeros((10, 10, 10), bool)
    assert lesion_wise_scores(empty, empty, (1, 1, 1)) == (1.0, 0.0)
    seg = np.zeros((10, 10, 10), np.uint8)
    seg[2:7, 2:7, 2:7] = ET
    result = case_metrics(seg, seg, (1, 1, 1), lesion_wise=True)
    assert result["lesion_dice_ET"] == 1.0 and result["lesion_hd95_WT"] == 0.0
    assert "lesion_dice_ET" not in case_metrics(seg, seg, (1, 1, 1))


# ---- tasks ------------------------------------------------------------------------------------
def test_columns_are_the_task_structures():
    from pipeline.tasks.task import resolve_task

    assert metric_columns() == [f"{m}_{s}" for m in ("dice", "hd95", "sensitivity", "specificity", "precision", "iou", "pred_volume_ml", "true_volume_ml") for s in SCORED_STRUCTURES]
    whole = resolve_task("whole-tumour", ["flair"])
    assert metric_columns(task=whole)[:2] == ["dice_WT", "hd95_WT"] and len(metric_columns(task=whole)) == 8
    assert metric_columns(lesion_wise=True, task=whole)[-2:] == ["lesion_dice_WT", "lesion_hd95_WT"]
    post = resolve_task("brats2024-post-treatment")
    assert [c[5:] for c in metric_columns(task=post) if c.startswith("dice_")] == ["ET", "NETC", "SNFH", "RC", "TC", "WT"]


def test_empty_rules_per_structure_of_a_task():
    from pipeline.tasks.task import resolve_task

    task = resolve_task("brats2024-post-treatment")  # NETC 1, SNFH 2, ET 3, RC 4
    truth = np.zeros((8, 8, 8), np.uint8)
    truth[1:4, 1:4, 1:4] = 2
    truth[5:7, 5:7, 5:7] = 4  # a resection cavity, outside WT
    pred = truth.copy()
    pred[5:7, 5:7, 5:7] = 0  # the cavity missed
    pred[2, 2, 2] = 3  # one ET voxel that the truth lacks
    result = case_metrics(pred, truth, (1.0, 1.0, 1.0), lesion_wise=True, task=task)
    assert list(result) == metric_columns(lesion_wise=True, task=task)  # lesion-wise: every structure (no regions)
    assert result["dice_NETC"] == 1.0 and result["hd95_NETC"] == 0.0  # both empty
    assert result["dice_RC"] == 0.0 and result["hd95_RC"] == EMPTY_HD95_MM  # missed
    assert result["dice_ET"] == 0.0 and result["hd95_ET"] == EMPTY_HD95_MM  # false positive
    assert result["dice_WT"] == 1.0  # RC is not in WT; the ET voxel replaced SNFH inside it
    assert 0.0 < result["dice_SNFH"] < 1.0 and result["lesion_hd95_RC"] == 0.0  # 8 mm3: below the lesion volume


def test_glioma_metrics_are_the_default_task_metrics():
    from pipeline.tasks.task import DEFAULT_TASK

    rng = np.random.default_rng(0)
    truth, pred = rng.integers(0, 4, (10, 10, 10)).astype(np.uint8), rng.integers(0, 4, (10, 10, 10)).astype(np.uint8)
    assert case_metrics(pred, truth, (1.0, 1.0, 2.0)) == case_metrics(pred, truth, (1.0, 1.0, 2.0), task=DEFAULT_TASK)


# ----------------------------------------------------------------------------- the 2D tasks' metric sets


def test_image_metrics_hand_computed_and_their_empty_rules():
    truth = np.zeros((4, 5, 1), bool)
    truth[1:3, 1:3] = True  # 4 pixels
    pred = np.zeros_like(truth)
    pred[1:3, 2:4] = True  # 4 pixels, 2 inside the truth
    result = structure_metrics(pred, truth, (1, 1, 1), "image")
    assert list(result) == ["dice", "iou", "accuracy", "sensitivity", "specificity", "precision", "pred_pixels", "true_pixels"]
    assert result["dice"] == pytest.approx(0.5) and result["iou"] == pytest.approx(2 / 6) and result["accuracy"] == pytest.approx(16 / 20)
    assert result["sensitivity"] == pytest.approx(0.5) and result["precision"] == pytest.approx(0.5) and result["specificity"] == pytest.approx(14 / 16)
    empty = np.zeros_like(truth)
    both = structure_metrics(empty, empty, (1, 1, 1), "image")
    assert both["dice"] == both["iou"] == both["sensitivity"] == both["precision"] == both["specificity"] == both["accuracy"] == 1.0
    missed = structure_metrics(empty, truth, (1, 1, 1), "image")
    assert missed["dice"] == missed["iou"] == missed["sensitivity"] == missed["precision"] == 0.0 and missed["specificity"] == 1.0
    invented = structure_metrics(pred, empty, (1, 1, 1), "image")
    assert invented["dice"] == invented["iou"] == invented["sensitivity"] == invented["precision"] == 0.0
    full = np.ones_like(truth)
    assert structure_metrics(full, full, (1, 1, 1), "image")["specificity"] == 1.0  # no background: nothing to get wrong


def test_kaggle_scores_whole_volumes_in_voxels():
    from pipeline.tasks.task import IMAGE_MASK_2D, KAGGLE_LGG

    truth = np.zeros((8, 8, 3), np.uint8)
    truth[2:4, 2:4, 0:2] = 1
    pred = np.zeros_like(truth)
    pred[2:4, 2:4, 1:3] = 1
    result = case_metrics(pred, truth, (1, 1, 1), task=KAGGLE_LGG)
    assert list(result) == metric_columns(task=KAGGLE_LGG) == [f"{m}_tumour" for m in ("dice", "hd95_voxels", "sensitivity", "specificity", "precision", "iou", "pred_voxels", "true_voxels")]
    assert result["dice_tumour"] == pytest.approx(0.5) and result["pred_voxels_tumour"] == result["true_voxels_tumour"] == 8
    missed = case_metrics(np.zeros_like(truth), truth, (1, 1, 1), task=KAGGLE_LGG)
    assert missed["hd95_voxels_tumour"] == pytest.approx(math.sqrt(8 * 8 + 8 * 8 + 3 * 3))  # one side empty: the grid's diagonal
    assert metric_columns(task=IMAGE_MASK_2D)[2] == "accuracy_tumour"
