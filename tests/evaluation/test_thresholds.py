"""Threshold policies pick the operating point they promise."""

from __future__ import annotations

import numpy as np
import pytest

from mammojax.errors import MammojaxError
from mammojax.evaluation.metrics import classification_metrics
from mammojax.evaluation.thresholds import choose_threshold


def _scores(seed=0, n=300):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, 1 / (1 + np.exp(-rng.normal(1.2 * y - 0.6, 1.0)))


def _youden(y, s, t):
    m = classification_metrics(y, s, tau=t)
    return m["sensitivity"] + m["specificity"] - 1


def test_fixed_returns_tau():
    y, s = _scores()
    assert choose_threshold(y, s, "fixed", tau=0.37) == 0.37


def test_youden_maximises_j_over_every_candidate():
    y, s = _scores(1)
    t = choose_threshold(y, s, "youden")
    best = _youden(y, s, t)
    candidates = np.concatenate([np.unique(s), np.linspace(0, 1, 101)])
    assert all(_youden(y, s, c) <= best + 1e-12 for c in candidates)
    assert best > _youden(y, s, 0.5) - 1e-12


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_sensitivity_target_met_with_best_specificity(target):
    y, s = _scores(2)
    t = choose_threshold(y, s, "sensitivity", target=target)
    m = classification_metrics(y, s, tau=t)
    assert m["sensitivity"] >= target
    # The next-higher distinct score would miss the target: t is the most specific choice.
    higher = np.unique(s[s > t])
    if higher.size:
        assert classification_metrics(y, s, tau=higher[0])["sensitivity"] < target


@pytest.mark.parametrize("target", [0.8, 0.9])
def test_specificity_target_met_with_best_sensitivity(target):
    y, s = _scores(3)
    t = choose_threshold(y, s, "specificity", target=target)
    m = classification_metrics(y, s, tau=t)
    assert m["specificity"] >= target
    lower = np.unique(s[s < t])
    if lower.size:
        assert classification_metrics(y, s, tau=lower[-1])["specificity"] < target


def test_specificity_one_gives_finite_threshold_above_all_negatives():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.2, 0.9, 0.3, 0.9])
    t = choose_threshold(y, s, "specificity", target=1.0)
    assert np.isfinite(t) and classification_metrics(y, s, tau=t)["fp"] == 0


def test_one_class_falls_back_to_tau_and_bad_policy_is_a_user_error():
    assert choose_threshold([1, 1], [0.2, 0.4], "youden", tau=0.42) == 0.42
    with pytest.raises(MammojaxError, match="unknown threshold policy"):
        choose_threshold([0, 1], [0.2, 0.4], "median")
