"""Post-processing chosen on a real-data cross-validation's out-of-fold predictions, and what it gains.

Reads a ``benchmarks.real_cv`` result (its run folders hold each fold's data list and the
pipeline's predictions of the held-out patients), pools the pipeline's out-of-fold predictions
and lets :func:`pipeline.evaluation.postprocess_tuning.select_postprocessing` choose the post-processing
the nnU-Net way. Prints the candidate table and the mean Dice per region before and after, and
records them beside the result (``<result>-postprocessing.json``/``.md``).

The predictions were written with the run's own post-processing (``configs/inference.yaml``:
whole-tumour specks under 20 voxels dropped), so "before" is that setting. As in nnU-Net's
cross-validation, the settings are chosen on the same out-of-fold cases they are scored on, so
the "after" figure is slightly optimistic; ``tune-postprocessing`` chooses on each fold's
validation cases instead.

    python -m benchmarks.postprocess_cv benchmarks/results/real_cv-<machine>-<date>-<label>.json [--lesion-wise]

``--lesion-wise`` adds a second table: the BraTS 2023 lesion-wise Dice (the ranking metric since
2023, which counts every false-positive component as a lesion of Dice 0) next to the plain Dice
and the number of predicted components per region, for the chosen settings and for minimum TC and
ET component sizes on top of them, so that a size is chosen on both scores.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.cv_folds import fold_run_folder
from pipeline.datasets.datalist import load_datalist
from pipeline.core.errors import PipelineError
from pipeline.evaluation.evaluate import PREDICTIONS_DIR, read_internal_labels
from pipeline.core.io import write_json, write_text
from pipeline.inference.postprocess import PostProcessing
from pipeline.evaluation.postprocess_tuning import PostProcessingChoice, select_postprocessing
from pipeline.inference.writers import segmentation_filename

__all__ = ["LESION_SIZES", "class_table", "lesion_wise_table", "out_of_fold_pairs", "main"]

#: Minimum TC and ET component sizes (voxels) tried on top of the chosen settings in the lesion-wise table.
LESION_SIZES: tuple[int, ...] = (0, 50, 100, 200, 500, 1000)


def out_of_fold_pairs(result: dict) -> list[tuple]:
    """``(predicted, truth)`` internal labels of every held-out patient of the result's pipeline arm."""
    pairs = []
    for fold in result["folds"]:
        fold_dir = fold_run_folder(result, int(fold["fold"]))
        for record in load_datalist(fold_dir / "datalist.json").cases("test"):
            seg = fold_dir / "pipeline_eval" / PREDICTIONS_DIR / segmentation_filename(record.case_id)
            predicted, _ = read_internal_labels(seg, record.label_convention)
            truth, image = read_internal_labels(record.label, record.label_convention)
            pairs.append((predicted, truth, tuple(float(z) for z in image.header.get_zooms()[:3])))
    return pairs


def lesion_wise_table(pairs: Sequence[tuple], chosen: PostProcessing, sizes: Sequence[int] = LESION_SIZES) -> pd.DataFrame:
    """Mean Dice, lesion-wise Dice and predicted components per region of ``chosen`` plus each minimum TC/ET component size."""
    import cc3d

    from pipeline.tasks.labels import region_masks
    from pipeline.evaluation.metrics import lesion_wise_scores

    rows = []
    for size in sizes:
        settings = chosen.to_config()
        settings["min_component_voxels"] = {**settings["min_component_voxels"], "TC": size, "ET": size}
        post = PostProcessing.from_config(settings)
        scores: dict[str, list[float]] = {}
        for predicted, truth, spacing in pairs:
            pred_masks, true_masks = region_masks(post(predicted)), region_masks(truth)
            for region in ("WT", "TC", "ET"):
                p, t = pred_masks[region], true_masks[region]
                both = np.count_nonzero(p) + np.count_nonzero(t)
                scores.setdefault(f"dice_{region}", []).append(1.0 if both == 0 else 2.0 * np.count_nonzero(p & t) / both)
                scores.setdefault(f"lesion_dice_{region}", []).append(lesion_wise_scores(p, t, spacing)[0])
                scores.setdefault(f"components_{region}", []).append(float(cc3d.connected_components(p, connectivity=26).max()))
        rows.append({"min_TC_ET_voxels": size, **{key: float(np.mean(values)) for key, values in scores.items()}})
    return pd.DataFrame(rows)


def class_table(pairs: Sequence[tuple], settings: dict[str, PostProcessing]) -> pd.DataFrame:
    """Per setting, means over the cases of the NEC and ED Dice (both empty: 1) and the shares of the true NEC predicted as NEC and as ED, over all cases' voxels.

    The greedy choice judges the nested regions (WT, TC, ET); this table shows what a setting does
    to the classes inside them, where the necrosis called edema shows.
    """
    from benchmarks.label_confusion import LABELS, label_confusion, nec_shares

    rows = []
    for name, post in settings.items():
        dice: dict[str, list[float]] = {"NEC": [], "ED": []}
        counts = np.zeros((len(LABELS), len(LABELS)), np.int64)
        for predicted, truth, _ in pairs:
            labels = post(predicted)
            counts += label_confusion(labels, truth)
            for cls in dice:
                value = LABELS.index(cls)
                p, t = labels == value, truth == value
                both = np.count_nonzero(p) + np.count_nonzero(t)
                dice[cls].append(1.0 if both == 0 else 2.0 * np.count_nonzero(p & t) / both)
        rows.append({"setting": name, **{f"dice_{cls}": float(np.mean(values)) for cls, values in dice.items()}, **nec_shares(counts)})
    return pd.DataFrame(rows)


def report(choice: PostProcessingChoice) -> str:
    """The choice, its gain and the candidate table as markdown."""
    return f"```\n{choice.describe()}\n\n{choice.table.to_string(index=False, float_format=lambda v: f'{v:.4f}')}\n```\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.postprocess_cv", description=__doc__.split("\n\n")[0])
    parser.add_argument("result", type=Path, help="a benchmarks.real_cv result JSON")
    parser.add_argument("--lesion-wise", action="store_true", help="also tabulate lesion-wise Dice for minimum TC/ET component sizes")
    args = parser.parse_args(argv)
    try:
        result = json.loads(args.result.read_text())
        pairs = out_of_fold_pairs(result)
        choice = select_postprocessing([(predicted, truth) for predicted, truth, _ in pairs])
        lesions = lesion_wise_table(pairs, choice.postprocessing) if args.lesion_wise else None
        classes = class_table(pairs, {"none": PostProcessing(), "chosen": choice.postprocessing})
    except (OSError, ValueError, KeyError, PipelineError) as err:
        print(f"error: {args.result}: cannot choose post-processing from this result ({err})", file=sys.stderr)
        return 1
    text = report(choice)
    text += "\nNEC and ED (means over the cases; shares of all true NEC voxels), without post-processing and with the chosen settings:\n\n"
    text += f"```\n{classes.to_string(index=False, float_format=lambda v: f'{v:.3f}')}\n```\n"
    if lesions is not None:
        text += "\nOn top of the chosen settings, minimum TC and ET component sizes (means over the cases):\n\n"
        text += f"```\n{lesions.to_string(index=False, float_format=lambda v: f'{v:.3f}')}\n```\n"
    stem = args.result.with_name(args.result.stem + "-postprocessing")
    write_json(stem.with_suffix(".json"), {
        "result": args.result.name, "cases": choice.cases, "chosen": choice.postprocessing.to_config(),
        "before": choice.before, "after": choice.after, "table": choice.table.to_dict("records"),
        "lesion_wise": None if lesions is None else lesions.to_dict("records"),
        "classes": classes.to_dict("records"),
    })
    write_text(stem.with_suffix(".md"), f"## Post-processing chosen on the out-of-fold predictions of {args.result.name}\n\n{text}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
