"""lepton_nb.metrics against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

import lepton_nb as ln


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_report_equals_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 10, 500)
    y_pred = np.where(rng.random(500) < 0.7, y_true, rng.integers(0, 10, 500))
    rep = ln.metrics.report(y_true, y_pred, num_classes=10)
    assert rep["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert rep["recall_macro"] == pytest.approx(skm.recall_score(y_true, y_pred, average="macro"))
    assert rep["precision_macro"] == pytest.approx(skm.precision_score(y_true, y_pred, average="macro"))
    assert rep["f1_macro"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    np.testing.assert_array_equal(rep["confusion"], skm.confusion_matrix(y_true, y_pred, labels=range(10)))
    per = skm.precision_recall_fscore_support(y_true, y_pred, labels=range(10), zero_division=0)
    for i, row in enumerate(rep["per_class"]):
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (per[0][i], per[1][i], per[2][i], per[3][i]))


def test_a_never_predicted_class_counts_as_zero_like_scikit_learn():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 1])  # class 2 never predicted
    rep = ln.metrics.report(y_true, y_pred)
    assert rep["f1_macro"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert rep["precision_macro"] == pytest.approx(
        skm.precision_score(y_true, y_pred, average="macro", zero_division=0))


def test_report_accepts_scores_and_class_names():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    rep = ln.metrics.report([0, 1, 1], scores, class_names=["healthy", "sick"])
    assert rep["accuracy"] == pytest.approx(2 / 3)
    assert [r["class"] for r in rep["per_class"]] == ["healthy", "sick"]
    assert list(ln.metrics.per_class_table(rep).index) == ["healthy", "sick"]


@pytest.mark.parametrize(("y_true", "y_pred", "message"), [
    ([0, 1], [0], "2 labels but y_pred has 1"),
    ([0, -1], [0, 1], ">= 0"),
    ([0, 1.5], [0, 1], "integers"),
    ([0, 3], [0, 1], "exceed num_classes"),
])
def test_report_rejects_bad_labels(y_true, y_pred, message):
    with pytest.raises(ValueError, match=message):
        ln.metrics.report(np.array(y_true), np.array(y_pred), num_classes=2 if "exceed" in message else None)


def test_compare_with_claim_has_the_claim_and_differences():
    rep = ln.metrics.report([0, 1, 1, 0], [0, 1, 0, 0])
    table = ln.metrics.compare_with_claim({"mlp": rep})
    assert table.loc["seed article (claimed)", "accuracy"] == 96.5
    assert table.loc["mlp", "accuracy"] == 75.0
    assert table.loc["  mlp - claim (points)", "accuracy"] == pytest.approx(-21.5)


def test_top_confusions_names_the_largest_off_diagonal_cells():
    rep = ln.metrics.report([0, 0, 0, 1, 1, 2], [1, 1, 0, 2, 1, 2], class_names=["a", "b", "c"])
    assert ln.metrics.top_confusions(rep, 2) == [("a", "b", 2), ("b", "c", 1)]
