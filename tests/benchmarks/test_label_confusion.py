"""The label confusion of the real-data cross-validation on tiny hand-made label arrays with known counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.label_confusion import LABELS, arm_confusions, confusion_markdown, label_confusion, nec_shares

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
