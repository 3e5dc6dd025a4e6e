"""Metric parity with scikit-learn, NaN-safety, bootstrap CIs and aggregation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from mammojax.evaluation.metrics import classification_metrics, pr_curve, roc_auc, roc_curve


def _fixture(seed: int, n: int = 200, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    if ties:
        s = np.round(s, 1)  # many equal scores across both classes
    return y, s


@pytest.mark.parametrize("seed,ties,tau", [(0, False, 0.5), (1, True, 0.5), (2, True, 0.3),
                                           (3, False, 0.7), (4, True, 0.4)])
def test_metrics_match_sklearn(seed, ties, tau):
    y, s = _fixture(seed, ties=ties)
    m = classification_metrics(y, s, tau=tau)
    pred = (s >= tau).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-9)
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred), abs=1e-9)
    assert m["specificity"] == pytest.approx(skm.recall_score(1 - y, 1 - pred), abs=1e-9)
    assert m["ppv"] == pytest.approx(skm.precision_score(y, pred), abs=1e-9)
    assert m["npv"] == pytest.approx(skm.precision_score(1 - y, 1 - pred), abs=1e-9)
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred), abs=1e-9)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-9)
    assert m["n"] == y.size and m["n_pos"] == int(y.sum())


@pytest.mark.parametrize("seed,ties", [(5, False), (6, True)])
def test_curves_match_sklearn(seed, ties):
    y, s = _fixture(seed, n=120, ties=ties)
    ours = roc_curve(y, s)
    fpr, tpr, thr = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(ours["fpr"], fpr, atol=1e-12)
    np.testing.assert_allclose(ours["tpr"], tpr, atol=1e-12)
    np.testing.assert_allclose(ours["thresholds"][1:], thr[1:], atol=1e-12)
    assert np.trapezoid(ours["tpr"], ours["fpr"]) == pytest.approx(roc_auc(y, s), abs=1e-9)
    pr = pr_curve(y, s)
    assert pr["average_precision"] == pytest.approx(skm.average_precision_score(y, s), abs=1e-9)
    precision, recall, _ = skm.precision_recall_curve(y, s)
    # sklearn lists points by increasing threshold and appends (P=1, R=0).
    np.testing.assert_allclose(pr["precision"], precision[:-1][::-1], atol=1e-12)
    np.testing.assert_allclose(pr["recall"], recall[:-1][::-1], atol=1e-12)


def test_all_one_class_gives_nan_not_errors():
    s = np.array([0.1, 0.6, 0.9])
    only_neg = classification_metrics([0, 0, 0], s, tau=0.5)
    assert math.isnan(only_neg["auc"]) and math.isnan(only_neg["sensitivity"])
    assert only_neg["specificity"] == pytest.approx(1 / 3)
    assert math.isnan(only_neg["f1"]) is False  # FP exist: F1 = 0
    assert only_neg["f1"] == 0.0
    only_pos = classification_metrics([1, 1, 1], s, tau=0.95)
    assert math.isnan(only_pos["auc"]) and math.isnan(only_pos["specificity"])
    assert math.isnan(only_pos["ppv"])  # nothing called positive
    assert only_pos["sensitivity"] == 0.0
    empty = classification_metrics([], [], tau=0.5)
    assert empty["n"] == 0 and math.isnan(empty["accuracy"]) and math.isnan(empty["auc"])


def test_curves_of_one_class_or_no_data_are_nan_and_silent():
    import warnings

    s = np.array([0.2, 0.2, 0.7])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's missing-class warnings are answered here
        only_neg, only_pos = roc_curve([0, 0, 0], s), roc_curve([1, 1, 1], s)
        no_pos_pr, empty_roc, empty_pr = pr_curve([0, 0, 0], s), roc_curve([], []), pr_curve([], [])
    np.testing.assert_allclose(only_neg["fpr"], [0, 1 / 3, 1])
    assert np.isnan(only_neg["tpr"]).all() and np.isnan(only_pos["fpr"]).all()
    np.testing.assert_allclose(only_neg["thresholds"], [np.inf, 0.7, 0.2])
    assert np.isnan(no_pos_pr["recall"]).all() and math.isnan(no_pos_pr["average_precision"])
    np.testing.assert_allclose(no_pos_pr["precision"], [0, 0])
    assert empty_roc["thresholds"].tolist() == [np.inf] and np.isnan(empty_roc["tpr"]).all()
    assert empty_pr["precision"].size == 0 and math.isnan(empty_pr["average_precision"])


def test_auc_is_invariant_to_monotone_transforms_and_counts_ties_half():
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    y, s = _fixture(7)
    assert roc_auc(y, s) == pytest.approx(roc_auc(y, np.log(s + 1e-3) * 3 - 1), abs=1e-12)


# ---------------------------------------------------------------------------
# Bootstrap confidence intervals


def _clustered(seed=0, n_patients=40, views=4):
    """Patients whose views share one score: images are strongly correlated."""
    rng = np.random.default_rng(seed)
    patient_label = rng.integers(0, 2, n_patients)
    patient_score = np.clip(rng.normal(0.4 + 0.2 * patient_label, 0.2), 0, 1)
    y = np.repeat(patient_label, views)
    s = np.repeat(patient_score, views) + rng.normal(0, 1e-3, n_patients * views)
    groups = np.repeat([f"p{i}" for i in range(n_patients)], views)
    return y, s, groups


@pytest.mark.parametrize("n,decimals", [(7, 1), (250, 1), (250, 2), (10_000, 2)])
def test_bootstrap_auc_equals_sklearn_with_ties(n, decimals):
    from mammojax.evaluation.bootstrap import resample_auc

    rng = np.random.default_rng(n + decimals)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]  # both classes, even for n = 7
    s = np.round(rng.random(n) + 0.3 * y, decimals)  # rounding makes many ties across classes
    assert len(np.unique(s)) < n
    assert resample_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert math.isnan(resample_auc(np.zeros(n, int), s)) and math.isnan(resample_auc([], []))


def test_bootstrap_is_reproducible_and_contains_point():
    from mammojax.evaluation.bootstrap import bootstrap_ci

    y, s, groups = _clustered()
    a = bootstrap_ci(y, s, groups, n_resamples=300, seed=7)
    b = bootstrap_ci(y, s, groups, n_resamples=300, seed=7)
    c = bootstrap_ci(y, s, groups, n_resamples=300, seed=8)
    assert a == b and a != c
    assert a["low"] <= a["point"] <= a["high"]
    assert a["point"] == pytest.approx(roc_auc(y, s))
    assert a["n_used"] + a["n_skipped"] == 300


def test_patient_resampling_is_wider_than_image_resampling_for_correlated_views():
    from mammojax.evaluation.bootstrap import bootstrap_ci

    y, s, groups = _clustered(1)
    by_patient = bootstrap_ci(y, s, groups, n_resamples=400, seed=0)
    by_image = bootstrap_ci(y, s, None, n_resamples=400, seed=0)
    # Four identical views make image resampling see 4x the evidence: the CI
    # shrinks by about a factor of two. Patient resampling does not fool itself.
    width_patient = by_patient["high"] - by_patient["low"]
    width_image = by_image["high"] - by_image["low"]
    assert width_patient > 1.5 * width_image


def test_resamples_without_a_class_are_skipped_and_counted():
    from mammojax.evaluation.bootstrap import bootstrap_ci

    # One positive patient among four: (3/4)**4, about a third of draws, miss it.
    y = np.array([0, 0, 0, 1])
    s = np.array([0.1, 0.2, 0.3, 0.9])
    out = bootstrap_ci(y, s, ["a", "b", "c", "d"], n_resamples=200, seed=0)
    assert out["n_skipped"] > 0 and out["n_used"] + out["n_skipped"] == 200
    none = bootstrap_ci([0, 0], [0.1, 0.2], None, n_resamples=20, seed=0)
    assert none["n_used"] == 0 and math.isnan(none["low"])


# ---------------------------------------------------------------------------
# Image -> breast -> patient aggregation


def test_aggregation_levels_max_and_mean():
    from mammojax.evaluation.aggregate import by_level

    patients = ["a", "a", "a", "b", "b", "c"]
    sides = ["L", "L", "R", "L", None, "R"]
    labels = [0, 0, 1, 0, 0, 0]
    scores = [0.1, 0.3, 0.8, 0.2, 0.4, 0.6]
    patient = by_level(labels, scores, patients, sides, "patient", "max")
    assert patient.keys == ["a", "b", "c"]
    np.testing.assert_allclose(patient.scores, [0.8, 0.4, 0.6])
    np.testing.assert_array_equal(patient.labels, [1, 0, 0])
    mean = by_level(labels, scores, patients, sides, "patient", "mean")
    np.testing.assert_allclose(mean.scores, [0.4, 0.3, 0.6])
    breast = by_level(labels, scores, patients, sides, "breast", "max")
    # a-L, a-R, b-L, b-(unknown side: its own breast), c-R
    assert len(breast.keys) == 5
    np.testing.assert_allclose(breast.scores, [0.3, 0.8, 0.2, 0.4, 0.6])
    np.testing.assert_array_equal(breast.labels, [0, 1, 0, 0, 0])
    assert breast.patients == ["a", "a", "b", "b", "c"]
    image = by_level(labels, scores, patients, sides, "image")
    np.testing.assert_allclose(image.scores, scores)
