"""Temperature scaling lowers NLL and ECE on a miscalibrated model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mammojax.evaluation.calibration import (apply_temperature, expected_calibration_error,
                                             fit_temperature, negative_log_likelihood,
                                             reliability_bins)


def _miscalibrated(seed=0, n=2000, scale=4.0):
    """Logits of a calibrated model (true P(y=1) = sigmoid(z)), multiplied by ``scale``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    logits = np.stack([np.zeros(n), z * scale], axis=1)
    return logits, y


@pytest.mark.parametrize("scale", [4.0, 0.3])  # over- and under-confident
def test_temperature_recovers_scale_and_improves_nll_and_ece(scale):
    logits, y = _miscalibrated(scale=scale)
    t = fit_temperature(logits, y)
    assert t == pytest.approx(scale, rel=0.15)
    assert negative_log_likelihood(logits, y, t) < negative_log_likelihood(logits, y, 1.0)
    before = expected_calibration_error(y, apply_temperature(logits, 1.0)[:, 1])
    after = expected_calibration_error(y, apply_temperature(logits, t)[:, 1])
    assert after < before / 2


def test_temperature_keeps_ranking_and_rows_sum_to_one():
    logits, _ = _miscalibrated(1, n=50)
    p1, p2 = apply_temperature(logits, 1.0), apply_temperature(logits, 3.0)
    np.testing.assert_allclose(p2.sum(1), 1.0, atol=1e-12)
    assert (np.argsort(p1[:, 1]) == np.argsort(p2[:, 1])).all()


def test_ece_by_hand_and_reliability_bins():
    y = np.array([0, 1, 1, 0])
    p = np.array([0.1, 0.1, 0.9, 0.9])  # two bins, each half right
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.4)
    bins = reliability_bins(y, np.stack([1 - p, p], 1), n_bins=10)
    assert bins["count"].sum() == 4 and bins["count"][0] == 2 and bins["count"][8] == 2
    assert math.isnan(bins["mean_prob"][5])
    assert math.isnan(expected_calibration_error([], []))
    assert fit_temperature(np.zeros((0, 2)), []) == 1.0


@pytest.mark.parametrize("labels", ["mixed", "all_negative", "all_positive"])
def test_reliability_bins_match_sklearn_calibration_curve(labels):
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(0)
    # Probabilities on the bin edges (0, 0.1, ..., 1) test which bin owns an edge.
    p = np.concatenate([rng.random(300), np.linspace(0, 1, 11), [0.55] * 5])
    y = {"mixed": (rng.random(p.size) < p).astype(int), "all_negative": np.zeros(p.size, int),
         "all_positive": np.ones(p.size, int)}[labels]
    bins = reliability_bins(y, p, n_bins=10)
    frac_pos, mean_prob = calibration_curve(y, p, n_bins=10, pos_label=1)
    used = bins["count"] > 0
    np.testing.assert_allclose(bins["frac_pos"][used], frac_pos, atol=1e-12)
    np.testing.assert_allclose(bins["mean_prob"][used], mean_prob, atol=1e-12)
    # Counts: bins are (lo, hi], the first also holding 0.
    lo, hi = bins["edges"][:-1], bins["edges"][1:]
    by_hand = [np.sum((p > a) & (p <= b)) + (np.sum(p == 0) if i == 0 else 0)
               for i, (a, b) in enumerate(zip(lo, hi))]
    np.testing.assert_array_equal(bins["count"], by_hand)


def test_a_fit_that_ends_at_its_bound_is_told_apart_and_worded_once():
    from mammojax.evaluation.calibration import bound_warning, fit_temperature, temperature_at_bound

    # Every margin large and positive, half the labels positive and unrelated to the margins: the best
    # a temperature alone can do is flatten every probability towards 0.5, so the fit runs to e^5
    # (the max of a woman's views is such a shifted score; an offset would be the cure).
    rng = np.random.default_rng(0)
    margins = 30.0 + rng.normal(size=400)
    logits = np.stack([np.zeros_like(margins), margins], axis=1)
    flat = fit_temperature(logits, np.arange(400) % 2)
    assert temperature_at_bound(flat) and flat == pytest.approx(np.exp(5.0), rel=1e-3)
    informative = fit_temperature(logits - [0, 8.0], (margins > 8.0).astype(int))
    assert not temperature_at_bound(informative) and not temperature_at_bound(1.0)
    assert "patient-level temperature fit ended at its bound" in bound_warning("patient", flat)


def test_platt_recovers_the_temperature_and_offset_that_generated_the_labels():
    from mammojax.evaluation.calibration import fit_platt

    # Labels drawn from sigmoid(m / 2 - 1.5): the maximum-likelihood fit converges to (2, -1.5) at
    # rate 1/sqrt(N); with N = 20,000 and margins of spread 3 the standard errors of 1/T and b are
    # about 0.01 and 0.02, so 5 standard errors bound the estimates.
    rng = np.random.default_rng(1)
    margins = rng.normal(0.0, 3.0, 20_000)
    labels = (rng.random(margins.size) < 1 / (1 + np.exp(-(margins / 2.0 - 1.5)))).astype(int)
    temperature, offset = fit_platt(margins, labels)
    assert 1 / temperature == pytest.approx(0.5, abs=0.05) and offset == pytest.approx(-1.5, abs=0.1)
    assert fit_platt([], []) == (1.0, 0.0)


def test_an_offset_is_the_cure_for_shifted_margins():
    from mammojax.evaluation.calibration import fit_platt, fit_temperature, temperature_at_bound

    # The case that sent the temperature alone to its bound (above): shifted margins (a woman's max
    # over views, a class-weighted loss) that still rank the labels. The offset takes the shift, the
    # temperature stays inside its range, and the probabilities track the observed rate.
    rng = np.random.default_rng(2)
    margins = rng.normal(0.0, 1.0, 4000)
    labels = (rng.random(margins.size) < 1 / (1 + np.exp(-(margins - 1.0)))).astype(int)
    shifted = margins + 6.0
    alone = fit_temperature(np.stack([np.zeros_like(shifted), shifted], axis=1), labels)
    temperature, offset = fit_platt(shifted, labels)
    assert temperature_at_bound(alone) or alone > 3.0
    # Generated as sigmoid(m - 1) = sigmoid(shifted - 7): 1/T near 1 and the intercept at the unshifted
    # margin, offset + 6 / T, near -1 (standard errors about 0.04 and 0.05 at N = 4000; 3-5 of them).
    assert 0.8 < temperature < 1.25 and offset + 6.0 / temperature == pytest.approx(-1.0, abs=0.2)
    probs = 1 / (1 + np.exp(-(shifted / temperature + offset)))
    # The mean probability is the observed rate (a property of the logistic MLE with an offset).
    assert probs.mean() == pytest.approx(labels.mean(), abs=1e-3)
    # Scores that carry nothing: the temperature runs to its bound, and the probability is the base rate.
    noise = fit_platt(shifted, rng.permutation(labels))
    assert temperature_at_bound(noise[0]) or noise[0] > 20
