"""Temperature scaling and calibration error.

Temperature scaling (Guo et al., 2017) divides the logits by one scalar ``T``
fitted on validation data to minimise the negative log-likelihood. It changes
no ranking (AUC is unchanged) and no argmax, only how much the probabilities
can be trusted. ``T > 1`` softens an over-confident model.

:func:`probabilities` is the package's one temperature-softmax: the scorer,
training validation, evaluation and the operating points all call it.
"""

from __future__ import annotations

import math

import numpy as np

# log T is searched in this interval: T from about 0.007 to 150 covers any
# sensible model and keeps the bounded search well defined.
_LOG_T_BOUNDS = (-5.0, 5.0)

POSITIVE_CLASS = 1  # the lesion class: label 1 of every task


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def negative_log_likelihood(logits, labels, temperature: float = 1.0) -> float:
    """Mean NLL of ``labels`` under ``softmax(logits / temperature)``."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    y = np.asarray(labels).astype(np.int64).ravel()
    if y.size == 0:
        return math.nan
    return float(-_log_softmax(z)[np.arange(y.size), y].mean())


def fit_temperature(logits, labels) -> float:
    """The temperature minimising validation NLL (1.0 when there is no data).

    ``logits`` is ``(N, C)``; the 1-D search is over ``log T``, so ``T`` stays
    positive and large and small temperatures are searched evenly.
    """
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).ravel()
    if y.size == 0 or not np.isfinite(z).all():
        return 1.0
    result = minimize_scalar(lambda log_t: negative_log_likelihood(z, y, math.exp(log_t)),
                             bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-4})
    best = math.exp(float(result.x))
    # Never return something worse than no scaling (a flat NLL can stop anywhere).
    if negative_log_likelihood(z, y, best) > negative_log_likelihood(z, y, 1.0):
        return 1.0
    return best


def temperature_at_bound(temperature: float) -> bool:
    """True when a fitted temperature stopped at an end of its search range (e^-5 or e^5).

    Then the fit did not find a minimum: the level's scores carry no
    information at the scale of their margins (at e^5 every probability is
    close to 0.5), so its probabilities mean nothing and only their ranking
    (the AUC) does. Reports, ``metrics.json``, the CV summary and the page say so.
    """
    log_t = math.log(float(temperature)) if temperature > 0 else -math.inf
    return min(abs(log_t - _LOG_T_BOUNDS[0]), abs(log_t - _LOG_T_BOUNDS[1])) < 1e-3


def bound_warning(level: str, temperature: float) -> str:
    """The one sentence every output uses for a temperature fit that ended at its bound."""
    return (f"the {level}-level temperature fit ended at its bound (T = {temperature:.2f}): the {level} "
            f"probabilities are near 0.5 and not calibrated; only their ranking (the AUC) is meaningful")


def apply_temperature(logits, temperature: float) -> np.ndarray:
    """Class probabilities ``softmax(logits / T)``, shape ``(N, C)``.

    The positive-class probability of a binary model is ``[:, 1]``.
    """
    return np.exp(_log_softmax(np.asarray(logits, dtype=np.float64) / float(temperature)))


def probabilities(logits, temperature: float = 1.0) -> np.ndarray:
    """Positive-class probability ``(N,)`` float64 of film logits ``(N, C)``: ``softmax(z / T)[:, 1]``.

    The one temperature-softmax of the package. A one-logit model's logit is
    read as ``[0, z]`` (a sigmoid).
    """
    z = np.asarray(logits, np.float64)
    if z.shape[-1] == 1:
        z = np.concatenate([np.zeros_like(z), z], axis=-1)
    return apply_temperature(z, temperature)[..., POSITIVE_CLASS]


def _positive_probs(probs) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    return p[:, 1] if p.ndim == 2 else p.ravel()


def reliability_bins(labels, probs, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Equal-width bins of the positive-class probability.

    Returns ``edges`` (n_bins + 1), and per bin ``count``, ``mean_prob`` (mean
    predicted probability) and ``frac_pos`` (observed fraction of positives),
    NaN for empty bins. ``probs`` is ``(N,)`` or ``(N, 2)``.

    The per-bin means are scikit-learn's ``calibration_curve`` (uniform
    strategy); it returns only the non-empty bins and no counts, so the counts,
    which weight the ECE, come from the same binning rule here: bins are
    ``(lo, hi]``, the first also holding exactly 0.
    """
    from sklearn.calibration import calibration_curve

    p = _positive_probs(probs)
    y = np.asarray(labels).astype(np.int64).ravel()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # calibration_curve's own rule: the number of inner edges below p.
    count = np.bincount(np.searchsorted(edges[1:-1], p), minlength=n_bins).astype(np.int64)
    mean_prob = np.full(n_bins, np.nan)
    frac_pos = np.full(n_bins, np.nan)
    if p.size:
        # pos_label=1 keeps one-class labels (all normal, all cancer) meaningful.
        frac_pos[count > 0], mean_prob[count > 0] = calibration_curve(
            y, p, n_bins=n_bins, strategy="uniform", pos_label=1)
    return {"edges": edges, "count": count, "mean_prob": mean_prob, "frac_pos": frac_pos}


def expected_calibration_error(labels, probs, n_bins: int = 15) -> float:
    """ECE over equal-width bins of the positive-class probability.

    ``sum_b |frac_pos_b - mean_prob_b| * n_b / N``: the gap between predicted
    cancer probability and observed cancer rate, weighted by bin size. NaN for
    no data.
    """
    bins = reliability_bins(labels, probs, n_bins)
    n = bins["count"].sum()
    if n == 0:
        return math.nan
    used = bins["count"] > 0
    gaps = np.abs(bins["frac_pos"][used] - bins["mean_prob"][used])
    return float(np.sum(gaps * bins["count"][used]) / n)
