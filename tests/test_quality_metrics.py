"""Quality and fairness metrics against hand-computed, scikit-learn-style cases
and against naive reference implementations (pairwise AUC, per-class loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modelmon.quality import compute_quality, macro_scores, roc_auc

NAN = math.nan


def q(task="classification", pred=(), label=(), score=None, group=None, groups=(), positive=1, binary=True, ref=""):
    pred = np.asarray(pred, dtype=float)
    label = np.asarray(label, dtype=float)
    score = np.full(len(pred), NAN) if score is None else np.asarray(score, dtype=float)
    group = np.full(len(pred), -1, dtype=np.int16) if group is None else np.asarray(group, dtype=np.int16)
    return compute_quality(task, pred, label, score, group, list(groups), positive, reference_group=ref, binary=binary)


def test_binary_classification_hand_computed():
    # tp=2 (rows 0,1), fn=2 (rows 2,3), fp=3 (rows 4,5,6), tn=3
    y_true = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    y_pred = [1, 1, 0, 0, 1, 1, 1, 0, 0, 0]
    rep = q(pred=y_pred, label=y_true)
    assert rep.n == 10
    assert rep.accuracy == pytest.approx(0.5)
    assert rep.precision == pytest.approx(2 / 5)
    assert rep.recall == pytest.approx(2 / 4)
    assert rep.f1 == pytest.approx(4 / 9)  # 2PR/(P+R) = 0.4/0.9
    assert rep.mae is None and rep.roc_auc is None


def test_positive_class_code_is_respected():
    # Same data with the positive class being code 0 instead of 1.
    y_true = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    y_pred = [1, 1, 0, 0, 1, 1, 1, 0, 0, 0]
    rep = q(pred=y_pred, label=y_true, positive=0)
    # class 0: tp=3 (rows 7,8,9), fp=2 (rows 2,3), fn=3 (rows 4,5,6)
    assert rep.precision == pytest.approx(3 / 5)
    assert rep.recall == pytest.approx(3 / 6)
    assert rep.f1 == pytest.approx(6 / 11)


def test_undefined_binary_metrics_are_not_reported():
    rep = q(pred=[0, 0, 0], label=[1, 0, 0])  # no positive prediction
    assert rep.precision is None
    assert rep.recall == 0.0
    assert rep.f1 == 0.0
    rep = q(pred=[0, 0], label=[0, 0])  # no positives at all
    assert rep.precision is None and rep.recall is None and rep.f1 is None
    assert rep.accuracy == 1.0
    rep = q(pred=[0, 1], label=[0, 1], positive=None)  # positive class never seen
    assert rep.accuracy == 1.0 and rep.precision is None


def test_rows_missing_prediction_or_label_are_ignored():
    rep = q(pred=[1, NAN, 0, 1], label=[1, 0, NAN, 0])
    assert rep.n == 2
    assert rep.accuracy == pytest.approx(0.5)


def test_empty_window_reports_nothing():
    rep = q(pred=[], label=[])
    assert rep.n == 0 and rep.accuracy is None and rep.f1 is None


def test_roc_auc_sklearn_doc_example_and_ties():
    # sklearn's roc_auc_score docs: y=[0,0,1,1], scores=[0.1,0.4,0.35,0.8] -> 0.75
    rep = q(pred=[0, 0, 0, 1], label=[0, 0, 1, 1], score=[0.1, 0.4, 0.35, 0.8])
    assert rep.roc_auc == pytest.approx(0.75)
    # A tie between a positive and a negative counts one half: (0.5 + 1 + 1 + 1) / 4
    assert roc_auc(np.array([0.5, 0.5, 0.2, 0.9]), np.array([False, True, False, True])) == pytest.approx(0.875)
    # Rows without a score are left out of the AUC only.
    rep = q(pred=[0, 0, 0, 1, 1], label=[0, 0, 1, 1, 0], score=[0.1, 0.4, 0.35, 0.8, NAN])
    assert rep.roc_auc == pytest.approx(0.75)
    assert rep.accuracy == pytest.approx(3 / 5)
    # One class only: undefined.
    assert q(pred=[1, 1], label=[1, 1], score=[0.2, 0.3]).roc_auc is None


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(7)
    y = rng.random(300) < 0.3
    s = np.round(rng.random(300) + 0.4 * y, 2)  # rounded: many ties
    pos, neg = s[y], s[~y]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(s, y) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_macro_sklearn_doc_example():
    # sklearn precision_score docs: macro precision 0.22, recall 0.33, f1 0.26
    y_true = [0, 1, 2, 0, 1, 2]
    y_pred = [0, 2, 1, 0, 0, 1]
    rep = q(pred=y_pred, label=y_true, binary=False)
    assert rep.accuracy == pytest.approx(2 / 6)
    assert rep.precision == pytest.approx(2 / 9)
    assert rep.recall == pytest.approx(1 / 3)
    assert rep.f1 == pytest.approx(0.8 / 3)
    assert rep.roc_auc is None


def test_macro_class_only_in_predictions_counts_as_zero():
    # class 2 is predicted once but never true: precision 0, recall 0, f1 0
    p, r, f = macro_scores(np.array([0.0, 2.0, 1.0]), np.array([0.0, 0.0, 1.0]))
    assert p == pytest.approx((1 + 1 + 0) / 3)
    assert r == pytest.approx((0.5 + 1 + 0) / 3)
    assert f == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_macro_matches_per_class_loop():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, 500).astype(float)
    p = np.where(rng.random(500) < 0.6, y, rng.integers(0, 5, 500)).astype(float)
    precs, recs, f1s = [], [], []
    for c in sorted(set(y) | set(p)):
        tp = sum(1 for a, b in zip(y, p, strict=True) if a == c and b == c)
        npred = sum(1 for b in p if b == c)
        ntrue = sum(1 for a in y if a == c)
        pr = tp / npred if npred else 0.0
        rc = tp / ntrue if ntrue else 0.0
        precs.append(pr)
        recs.append(rc)
        f1s.append(2 * pr * rc / (pr + rc) if pr + rc else 0.0)
    got = macro_scores(p, y)
    assert got == pytest.approx((np.mean(precs), np.mean(recs), np.mean(f1s)))


def test_regression_sklearn_doc_example():
    # sklearn mean_absolute_error docs: 0.5; mean_squared_error docs: 0.375
    rep = q(task="regression", pred=[2.5, 0.0, 2, 8], label=[3, -0.5, 2, 7])
    assert rep.mae == pytest.approx(0.5)
    assert rep.rmse == pytest.approx(math.sqrt(0.375))
    assert rep.accuracy is None and rep.f1 is None


def test_fairness_hand_computed():
    #          group a (code 0)    group b (code 1)
    pred = [1, 1, 0, 0, 1, 0, 0, 0]
    label = [1, 0, 1, 0, 1, 1, 1, 0]
    group = [0, 0, 0, 0, 1, 1, 1, 1]
    rep = q(pred=pred, label=label, group=group, groups=["a", "b", "c"], ref="a")
    assert rep.group_events == {"a": 4, "b": 4}  # c has no rows: not reported
    assert rep.group_positive_rate == pytest.approx({"a": 0.5, "b": 0.25})
    assert rep.group_accuracy == pytest.approx({"a": 0.5, "b": 0.5})
    # TPR: a -> positives rows 0,2 predicted 1,0 = 1/2; b -> rows 4,5,6 predicted 1,0,0 = 1/3
    assert rep.group_true_positive_rate == pytest.approx({"a": 0.5, "b": 1 / 3})
    assert rep.demographic_parity_difference == pytest.approx(0.25)
    assert rep.equal_opportunity_difference == pytest.approx(0.5 - 1 / 3)
    assert rep.group_disparate_impact == pytest.approx({"a": 1.0, "b": 0.5})


def test_fairness_needs_two_groups_for_differences():
    rep = q(pred=[1, 0], label=[1, 0], group=[0, -1], groups=["a", "b"])
    assert rep.group_positive_rate == {"a": 1.0}
    assert rep.demographic_parity_difference is None
    assert rep.equal_opportunity_difference is None
