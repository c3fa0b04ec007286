"""The label confusion of the real-data cross-validation on tiny hand-made label arrays with known counts."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from benchmarks.label_confusion import LABELS, arm_confusions, case_confusion, confusion_markdown, label_confusion, nec_shares
from benchmarks.real_cv import labelled_cases, patients_by_source
from pipeline.datasets.records import CaseRecord

# Six voxels: three true NEC (one predicted NEC, two ED), one true ED predicted ED, one background, one true ET predicted background.
TRUTH = np.array([[1, 1, 1], [2, 0, 3]], dtype=np.uint8)
PREDICTED = np.array([[1, 2, 2], [2, 0, 0]], dtype=np.uint8)


def test_labels_are_the_internal_ones_in_value_order() -> None:
    assert LABELS == ("background", "NEC", "ED", "ET")


def test_rows_are_true_labels_and_columns_predicted_ones() -> None:
    counts = label_confusion(PREDICTED, TRUTH)
    expected = np.array(
        [
            [1, 0, 0, 0],  # true background: predicted background
            [0, 1, 2, 0],  # true NEC: 1 as NEC, 2 as ED
            [0, 0, 1, 0],  # true ED: as ED
            [1, 0, 0, 0],  # true ET: as background
        ]
    )
    np.testing.assert_array_equal(counts, expected)
    assert counts[1, 2] == 2 and counts[2, 1] == 0  # swapped rows and columns would put the 2 at [2, 1]
    assert counts.sum() == TRUTH.size and counts.dtype == np.int64
    np.testing.assert_array_equal(label_confusion(TRUTH, PREDICTED), expected.T)
    np.testing.assert_array_equal(label_confusion(TRUTH, TRUTH), np.diag([1, 3, 1, 1]))


def test_bad_shapes_and_labels_are_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        label_confusion(PREDICTED, TRUTH[:1])
    with pytest.raises(ValueError, match="outside"):
        label_confusion(PREDICTED + 2, TRUTH)  # a predicted 4


def test_nec_shares_of_one_patient() -> None:
    shares = nec_shares(label_confusion(PREDICTED, TRUTH))
    assert shares == {"nec_as_NEC": pytest.approx(1 / 3), "nec_as_ED": pytest.approx(2 / 3)}
    assert all(math.isnan(v) for v in nec_shares(label_confusion(np.zeros(3, np.uint8), np.array([0, 2, 3]))).values())  # no true NEC


def test_arm_tables_sum_patients_and_give_row_percentages() -> None:
    one = label_confusion(PREDICTED, TRUTH).tolist()
    perfect = label_confusion(TRUTH, TRUTH).tolist()
    rows = [
        {"fold": 0, "case_id": "a", "arm": "pipeline", "confusion": one},
        {"fold": 1, "case_id": "b", "arm": "pipeline", "confusion": perfect},
        {"fold": 0, "case_id": "a", "arm": "baseline", "confusion": perfect},
        {"fold": 1, "case_id": "b", "arm": "baseline"},  # reused from an earlier result without a confusion: left out
    ]
    tables = arm_confusions(rows)
    assert list(tables) == ["pipeline", "baseline"]
    assert tables["pipeline"]["patients"] == 2 and tables["baseline"]["patients"] == 1
    assert tables["pipeline"]["counts"][1] == [0, 4, 2, 0]  # true NEC: 1 + 3 as NEC, 2 as ED
    assert tables["pipeline"]["row_percent"][1] == pytest.approx([0.0, 400 / 6, 200 / 6, 0.0])
    assert tables["pipeline"]["row_percent"][3] == pytest.approx([50.0, 0.0, 0.0, 50.0])  # true ET: one of two lost to background

    text = confusion_markdown(tables, rows)
    assert "**pipeline** (2 patients)" in text and "**baseline** (1 patients)" in text
    assert "| true \\ predicted | background | NEC | ED | ET | true voxels |" in text
    assert "| NEC | 0 (0.0 %) | 4 (66.7 %) | 2 (33.3 %) | 0 (0.0 %) | 6 |" in text
    assert "| 0 | a | pipeline | 3 | 33.3 % | 66.7 % |" in text  # per patient: true NEC, as NEC, as ED
    assert "| 1 | b | baseline |" not in text


@pytest.mark.real_data
@pytest.mark.slow
def test_the_cohort_is_the_21_real_patients_and_a_real_case_confusion_counts_its_labels(real_brats_dir: Path, tmp_path: Path) -> None:
    """The three source folders hold 2 + 5 + 14 labelled patients; a lower-grade glioma's NEC-heavy labels land in the right rows."""

    cases = labelled_cases(real_brats_dir.parent)
    if "Brats18_TCIA10_628_1" not in cases:
        pytest.skip(f"real_brats_more not found in {real_brats_dir.parent}")
    assert len(cases) == 21
    assert {source: len(ids) for source, ids in patients_by_source(cases).items()} == {"real_brats": 2, "real_brats_train": 5, "real_brats_more": 14}

    folder = cases["Brats18_TCIA10_628_1"]
    seg = folder / "Brats18_TCIA10_628_1_seg.nii.gz"
    record = CaseRecord("Brats18_TCIA10_628_1", (), seg, "test")  # BraTS 2018: 1 NCR/NET, 2 ED, 4 ET
    counts = case_confusion(seg, record)
    np.testing.assert_array_equal(np.diag(counts)[1:], [103_582, 51_717, 1_976])  # the data folder's README
    assert counts.sum() == 240 * 240 * 155 and np.count_nonzero(counts - np.diag(np.diag(counts))) == 0

    truth = nib.load(seg)
    edema = tmp_path / "edema_seg.nii.gz"  # every tumour voxel called ED (BraTS 2)
    nib.save(nib.Nifti1Image((np.asarray(truth.dataobj) > 0).astype(np.uint8) * 2, truth.affine, truth.header), edema)
    assert case_confusion(edema, record)[1].tolist() == [0, 0, 103_582, 0]
