"""Per-patient (or per-image) metrics on internal label maps in the original voxel grid.

The task's ``metrics`` (:data:`pipeline.tasks.task.METRIC_SETS`) decides the set, :data:`METRIC_SETS`
here; ``volume`` (BraTS) is described first, the two others at the end.

For every scored structure of the task (BraTS glioma: sub-regions NEC, ED, ET and regions WT, TC;
see :mod:`pipeline.tasks.task`) :func:`case_metrics` returns Dice, HD95 (mm), sensitivity, specificity,
precision, IoU and the predicted and true volumes (ml), keyed ``<metric>_<structure>``
(``dice_WT``, ``hd95_ET``, ``sensitivity_NEC``, ``pred_volume_ml_TC``, ...).

HD95 definition: the BraTS 2023 organisers' (their evaluation script calls DeepMind's
``surface_distance.compute_surface_distances`` and ``compute_robust_hausdorff(..., 95)`` with the
voxel spacing). The surfaces are surface elements (surfels) on the grid of voxel corners, each
with its area in mm^2 (marching-cubes area of its 2x2x2 neighbourhood, MONAI's port of DeepMind's
table); from every surfel of each mask the Euclidean distance (mm) to the other mask's surface is
taken, and per direction the 95th percentile is the distance at which the sorted surfels'
cumulative **area** first reaches 95% (no interpolation). HD95 is the **larger of the two directed
95th percentiles** (:func:`hd95`). On real cases this differs from a voxel-centre HD95 (MONAI's
:func:`monai.metrics.compute_hausdorff_distance`, medpy, a distance transform on boundary voxels)
by up to about half a millimetre; medpy and panoptica also pool both directions.

Empty structures follow the BraTS conventions:

* ground truth and prediction both empty: Dice 1, IoU 1, sensitivity 1, precision 1, HD95 0;
* exactly one of them empty: Dice 0, IoU 0, sensitivity 0, precision 0, HD95
  :data:`EMPTY_HD95_MM` (373.13 mm, the diagonal of a 240x240x155 1 mm volume; the organisers'
  2023 script writes 374 here, as for a missed lesion, where its infinite distance is replaced).

Specificity is TN / (TN + FP) and always defined (the background is never empty).

Optional BraTS 2023 lesion-wise scores (:func:`lesion_wise_scores`, ``lesion_wise=True``) add
``lesion_dice_<region>`` and ``lesion_hd95_<region>`` for the task's lesion structures
(:func:`lesion_structures`: its regions, BraTS TC, WT and ET; every structure of a task without
regions).

``volume-voxels`` (Kaggle LGG, whose files store no spacing): the same per-patient scores on the
whole volume of slices, the protocol of its publication (per-volume Dice, not per slice), with
HD95 in voxels (``hd95_voxels``; exactly one side empty: the diagonal of the case's grid in
voxels) and the volumes in voxels (``pred_voxels``, ``true_voxels``).

``image`` (2D image/mask folders, one case per image): ``dice``, ``iou``, ``accuracy`` (pixel
accuracy, (TP + TN) / pixels), ``sensitivity``, ``specificity``, ``precision`` and the pixel
counts ``pred_pixels``, ``true_pixels``; no distance. Empty masks: both empty gives Dice 1, IoU 1,
sensitivity 1 and precision 1 (nothing to find, nothing wrongly found); exactly one empty gives
Dice 0, IoU 0, and sensitivity 0 (tumour missed) or precision 0 (tumour invented); a ratio whose
denominator is 0 while the other mask is not empty is 0 (sensitivity with an empty ground truth,
precision with an empty prediction). Specificity is 1 on an image without background (no
negative to get wrong); pixel accuracy is always defined.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cc3d
import numpy as np
import torch
from monai.metrics import compute_dice, compute_iou
from monai.metrics.confusion_matrix import (
    compute_confusion_matrix_metric,
    get_confusion_matrix,
)
from monai.metrics.utils import get_code_to_measure_table
from scipy import ndimage

from pipeline.tasks.task import DEFAULT_TASK, Task

__all__ = [
    "EMPTY_HD95_MM",
    "LESION_MISS_HD95_MM",
    "METRIC_SETS",
    "case_metrics",
    "hd95",
    "lesion_structures",
    "lesion_wise_scores",
    "metric_columns",
    "structure_metrics",
]


#: HD95 (mm) when exactly one of prediction and ground truth is empty: the diagonal of a 240x240x155 volume.
EMPTY_HD95_MM = 373.13

#: HD95 (mm) of a missed or a false-positive lesion in the BraTS 2023 lesion-wise scores.
LESION_MISS_HD95_MM = 374.0

#: Per-structure metrics of each metric set (:data:`pipeline.tasks.task.METRIC_SETS`), in column order.
METRIC_SETS: dict[str, tuple[str, ...]] = {
    "volume": ("dice", "hd95", "sensitivity", "specificity", "precision", "iou", "pred_volume_ml", "true_volume_ml"),
    "volume-voxels": ("dice", "hd95_voxels", "sensitivity", "specificity", "precision", "iou", "pred_voxels", "true_voxels"),
    "image": ("dice", "iou", "accuracy", "sensitivity", "specificity", "precision", "pred_pixels", "true_pixels"),
}

#: Per-structure metrics of the BraTS tasks (``volume``), in column order.
METRIC_NAMES: tuple[str, ...] = METRIC_SETS["volume"]

#: Lesion-wise metrics (BraTS 2023), reported for the regions only.
LESION_METRIC_NAMES: tuple[str, ...] = ("lesion_dice", "lesion_hd95")


def lesion_structures(task: Task = DEFAULT_TASK) -> tuple[str, ...]:
    """Structures the lesion-wise scores cover: the task's regions (BraTS 2023 ranking regions TC, WT, ET), else every structure."""
    return task.regions or tuple(task.structures)


#: Regions that the lesion-wise scores cover (the BraTS 2023 ranking regions).
LESION_REGIONS: tuple[str, ...] = lesion_structures()


def metric_columns(lesion_wise: bool = False, task: Task = DEFAULT_TASK) -> list[str]:
    """Column names of :func:`case_metrics`, grouped by metric then structure."""
    columns = [f"{metric}_{structure}" for metric in METRIC_SETS[task.metrics] for structure in task.structures]
    if lesion_wise:
        columns += [f"{metric}_{region}" for metric in LESION_METRIC_NAMES for region in lesion_structures(task)]
    return columns


def _as_batch(mask: np.ndarray) -> torch.Tensor:
    """A boolean mask as MONAI's one-hot ``(B=1, C=1, ...)`` float tensor."""
    return torch.as_tensor(np.ascontiguousarray(mask, dtype=bool)).float()[None, None]


def _surfels(mask: np.ndarray, area_table: np.ndarray, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A mask's surface elements on the grid of its voxel corners, and the area of each (mm^2; 2D: length in mm).

    Each corner's code is the pattern of the 2^n voxels around it (``kernel``: one bit per voxel);
    corners whose voxels are neither all outside nor all inside are surfels, and ``area_table``
    gives the area of the surface that crosses them. ``mask`` needs no margin: it is padded here.
    """
    codes = ndimage.correlate(np.pad(mask, 1).astype(np.uint8), kernel, mode="constant", cval=0)
    surfels = (codes != 0) & (codes != len(area_table) - 1)
    return surfels, area_table[codes[surfels]]


def _area_weighted_percentile(distances: np.ndarray, areas: np.ndarray, percentile: float) -> float:
    """The smallest distance at which the surfels sorted by distance reach ``percentile`` % of the surface area.

    ``surface_distance.compute_robust_hausdorff``'s rule for one direction (ties in distance ordered
    by area, as its sort of (distance, area) pairs does; the last surfel if rounding leaves none).
    """
    order = np.lexsort((areas, distances))
    sorted_areas = areas[order]
    cumulative_share = np.cumsum(sorted_areas) / np.sum(sorted_areas)
    index = min(int(np.searchsorted(cumulative_share, percentile / 100.0)), distances.size - 1)
    return float(distances[order][index])


def hd95(pred_mask: np.ndarray, true_mask: np.ndarray, spacing: Sequence[float], one_empty: float = EMPTY_HD95_MM) -> float:
    """HD95 in the units of ``spacing`` between two boolean masks, as the BraTS 2023 evaluation computes it.

    The larger of the two directed, surfel-area-weighted 95th percentiles of the surface distances
    (DeepMind's ``compute_robust_hausdorff(compute_surface_distances(...), 95)``, see the module
    docstring). Written out here because DeepMind's ``surface-distance`` is on PyPI only as an
    unmaintained 2024 copy (it fails under NumPy 2 on an empty mask and sorts in Python) and MONAI
    has no area-weighted percentile (its surface distances are per voxel or, in
    ``get_mask_edges``, several times slower). MONAI's :func:`get_code_to_measure_table` gives
    the surfel areas (its port of DeepMind's table, float32 where DeepMind's is float64: they agree
    to 1e-7 relative) and scipy's exact distance transform the distances. 2D masks use contour
    lengths for areas.

    Args:
        pred_mask: predicted boolean mask (2D or 3D).
        true_mask: ground-truth boolean mask, same shape.
        spacing: voxel size along each array axis (mm; 1 for voxels); anisotropic allowed.
        one_empty: the value when exactly one mask is empty (BraTS: 373.13 mm); both empty gives 0.

    Returns:
        The HD95 in the units of ``spacing``.
    """
    pred = np.asarray(pred_mask, dtype=bool)
    true = np.asarray(true_mask, dtype=bool)
    pred_any, true_any = bool(pred.any()), bool(true.any())
    if not pred_any and not true_any:
        return 0.0
    if pred_any != true_any:
        return float(one_empty)
    sampling = tuple(float(s) for s in spacing)
    area_table, kernel = get_code_to_measure_table(sampling)
    area_table, kernel = area_table.numpy().astype(np.float64), kernel.numpy()[0, 0]
    union_box = ndimage.find_objects((pred | true).astype(np.uint8))[0]
    pred_surfels, pred_areas = _surfels(pred[union_box], area_table, kernel)
    true_surfels, true_areas = _surfels(true[union_box], area_table, kernel)
    pred_to_true = ndimage.distance_transform_edt(~true_surfels, sampling=sampling)[pred_surfels]
    true_to_pred = ndimage.distance_transform_edt(~pred_surfels, sampling=sampling)[true_surfels]
    return max(_area_weighted_percentile(pred_to_true, pred_areas, 95.0), _area_weighted_percentile(true_to_pred, true_areas, 95.0))


def structure_metrics(pred_mask: np.ndarray, true_mask: np.ndarray, spacing: Sequence[float], metric_set: str = "volume") -> dict[str, float]:
    """The metrics of ``metric_set`` (:data:`METRIC_SETS`; default the BraTS :data:`METRIC_NAMES`) for one pair of boolean masks on a grid with voxel ``spacing`` (mm; 1 for the voxel and image sets)."""
    if np.shape(pred_mask) != np.shape(true_mask):
        raise ValueError(f"prediction shape {np.shape(pred_mask)} differs from ground truth shape {np.shape(true_mask)}")
    if len(spacing) != np.ndim(true_mask):
        raise ValueError(f"spacing {tuple(spacing)} does not match a {np.ndim(true_mask)}D mask")
    pred, true = _as_batch(pred_mask), _as_batch(true_mask)
    pred_voxels, true_voxels = int(pred.sum()), int(true.sum())
    voxel_ml = math.prod(float(s) for s in spacing) / 1000.0
    confusion = get_confusion_matrix(pred, true, include_background=True)

    def rate(name: str) -> float:
        value = float(compute_confusion_matrix_metric(name, confusion).item())
        if math.isnan(value) and name == "specificity":  # no background at all: no negative to get wrong
            return 1.0
        if math.isnan(value):  # 0/0: an empty structure; BraTS counts agreement as 1, a miss as 0
            return 1.0 if pred_voxels == true_voxels == 0 else 0.0
        return value

    values: dict[str, float] = {
        "dice": float(compute_dice(pred, true, include_background=True, ignore_empty=False).item()),
        "sensitivity": rate("sensitivity"),
        "specificity": rate("specificity"),
        "precision": rate("precision"),
        "iou": float(compute_iou(pred, true, include_background=True, ignore_empty=False).item()),
    }
    if metric_set == "image":
        correct = int(np.count_nonzero(np.asarray(pred_mask, dtype=bool) == np.asarray(true_mask, dtype=bool)))
        values.update(accuracy=correct / max(int(np.size(true_mask)), 1), pred_pixels=pred_voxels, true_pixels=true_voxels)
    elif metric_set == "volume-voxels":
        diagonal = math.sqrt(sum(n * n for n in np.shape(true_mask)))
        values.update(hd95_voxels=hd95(pred_mask, true_mask, (1.0,) * np.ndim(true_mask), one_empty=diagonal), pred_voxels=pred_voxels, true_voxels=true_voxels)
    else:
        values.update(hd95=hd95(pred_mask, true_mask, spacing), pred_volume_ml=pred_voxels * voxel_ml, true_volume_ml=true_voxels * voxel_ml)
    return {name: values[name] for name in METRIC_SETS[metric_set]}


def lesion_wise_scores(
    pred_mask: np.ndarray,
    true_mask: np.ndarray,
    spacing: Sequence[float],
    dilation_iterations: int = 3,
    min_lesion_volume_mm3: float = 50.0,
) -> tuple[float, float]:
    """BraTS 2023 lesion-wise Dice and HD95 of one region.

    Ground-truth lesions are the 26-connected components of the ground truth, merged when their
    dilations (``dilation_iterations``) touch. Each lesion is matched to every predicted
    26-connected component that meets the lesion's own dilation; its Dice and HD95 are computed
    against the union of those components (HD95 :data:`LESION_MISS_HD95_MM` when none). Lesions
    of at most ``min_lesion_volume_mm3`` are dropped from the average (their matched components
    still do not count as false positives). Predicted components that match no lesion are false
    positives with Dice 0 and HD95 374.

    Returns:
        ``(sum of lesion Dice / (lesions + false positives), mean HD95 over the same)``; both
        masks empty (or nothing left after dropping) gives ``(1.0, 0.0)``.
    """
    true = np.asarray(true_mask, dtype=bool)
    pred = np.asarray(pred_mask, dtype=bool)
    voxel_mm3 = math.prod(float(s) for s in spacing)
    # The dilation element of the BraTS 2023 evaluation code (18-connected).
    element = ndimage.generate_binary_structure(3, 2)
    def dilate(mask: np.ndarray) -> np.ndarray:
        # scipy reads iterations=0 as "until nothing changes"; here 0 means no dilation.
        return ndimage.binary_dilation(mask, element, iterations=dilation_iterations) if dilation_iterations > 0 else mask

    merged = cc3d.connected_components(dilate(true), connectivity=26)
    lesions = np.where(true, merged, 0)
    pred_components = cc3d.connected_components(pred, connectivity=26)

    matched: set[int] = set()
    dice_scores: list[float] = []
    hd95_scores: list[float] = []
    for lesion_id, box in enumerate(ndimage.find_objects(lesions), start=1):
        if box is None:
            continue
        # Work inside the lesion's bounding box grown by the dilation, instead of the whole volume.
        margin = max(dilation_iterations, 0)
        grown = tuple(slice(max(s.start - margin, 0), s.stop + margin) for s in box)
        lesion_box = lesions[grown] == lesion_id
        reach = dilate(lesion_box)
        hits = np.unique(pred_components[grown][reach])
        hits = hits[hits != 0]
        matched.update(int(h) for h in hits)
        lesion = lesions == lesion_id
        if lesion.sum() * voxel_mm3 <= min_lesion_volume_mm3:
            continue
        if hits.size == 0:
            dice_scores.append(0.0)
            hd95_scores.append(LESION_MISS_HD95_MM)
            continue
        predicted = np.isin(pred_components, hits)
        overlap = np.count_nonzero(predicted & lesion)
        dice_scores.append(2.0 * overlap / (np.count_nonzero(predicted) + np.count_nonzero(lesion)))
        hd95_scores.append(hd95(predicted, lesion, spacing))

    false_positives = len(set(np.unique(pred_components).tolist()) - matched - {0})
    count = len(dice_scores) + false_positives
    if count == 0:
        return 1.0, 0.0
    return sum(dice_scores) / count, (sum(hd95_scores) + false_positives * LESION_MISS_HD95_MM) / count


def case_metrics(
    pred_internal: np.ndarray,
    gt_internal: np.ndarray,
    spacing: Sequence[float],
    lesion_wise: bool = False,
    lesion_dilation_iterations: int = 3,
    min_lesion_volume_mm3: float = 50.0,
    task: Task = DEFAULT_TASK,
) -> dict[str, float]:
    """Per-patient (per-image) metrics of a predicted against a ground-truth internal label map: the task's labels and metric set (:data:`METRIC_SETS`).

    Args:
        pred_internal: predicted internal labels, in the original voxel grid.
        gt_internal: ground-truth internal labels, same shape.
        spacing: voxel size in mm along each array axis (the NIfTI zooms).
        lesion_wise: also compute the BraTS 2023 lesion-wise Dice and HD95 of :func:`lesion_structures`.
        lesion_dilation_iterations: dilation used to merge and match lesions (3 for GLI).
        min_lesion_volume_mm3: lesions of at most this volume are dropped from lesion-wise scores.
        task: whose structures are scored (default BraTS glioma).

    Returns:
        ``{"<metric>_<structure>": value}`` in the order of :func:`metric_columns`.

    Example:
        >>> import numpy as np
        >>> gt = np.zeros((4, 4, 4), np.uint8); gt[1:3, 1:3, 1:3] = 3
        >>> round(case_metrics(gt, gt, (1.0, 1.0, 1.0))["dice_ET"], 3), case_metrics(gt, gt, (1, 1, 1))["hd95_NEC"]
        (1.0, 0.0)
    """
    pred_masks, true_masks = task.structure_masks(np.asarray(pred_internal)), task.structure_masks(np.asarray(gt_internal))
    per_structure = {name: structure_metrics(pred_masks[name], true_masks[name], spacing, task.metrics) for name in task.structures}
    result = {f"{metric}_{name}": per_structure[name][metric] for metric in METRIC_SETS[task.metrics] for name in task.structures}
    if lesion_wise:
        lesion = {
            name: lesion_wise_scores(
                pred_masks[name], true_masks[name], spacing, lesion_dilation_iterations, min_lesion_volume_mm3
            )
            for name in lesion_structures(task)
        }
        result.update({f"lesion_dice_{name}": lesion[name][0] for name in lesion})
        result.update({f"lesion_hd95_{name}": lesion[name][1] for name in lesion})
    return result
