"""Temperature scaling, its offset, and calibration error.

Temperature scaling (Guo et al., 2017) divides the logits by one scalar ``T``
fitted on validation data to minimise the negative log-likelihood. It changes
no ranking (AUC is unchanged) and no argmax, only how much the probabilities
can be trusted. ``T > 1`` softens an over-confident model.

A temperature alone keeps ``p = 0.5`` at margin 0. Where the margins are
shifted (a class-weighted loss trains the network as if the classes were
balanced; a woman's maximum over her views sits higher than a typical view's),
the only way a temperature can lower the NLL is to flatten every probability
towards 0.5, so the fit runs to its upper bound and the probabilities mean
nothing. :func:`fit_platt` therefore fits the temperature together with an
offset, ``p = sigmoid(margin / T + b)`` (Platt, 1999): the shift is the
offset's job, and ``T`` keeps its meaning. Still monotone, so AUC is unchanged.

:func:`probabilities` is the package's one temperature-softmax: the scorer,
training validation, evaluation and the operating points all call it.
"""

from __future__ import annotations

import math

import numpy as np

# log T is searched in this interval: T from about 0.007 to 150 covers any
# sensible model and keeps the bounded search well defined.
_LOG_T_BOUNDS = (-5.0, 5.0)
# The offset b of sigmoid(m / T + b): +-20 is a probability within 2e-9 of 0 or 1,
# reached only by validation sets of one class.
_OFFSET_BOUND = 20.0

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


def _margin_nll(margins: np.ndarray, labels: np.ndarray, log_t: float, offset: float) -> float:
    s = margins / math.exp(log_t) + offset
    # -log sigmoid(s) for a positive, -log sigmoid(-s) for a negative, without overflow.
    return float(np.mean(np.logaddexp(0.0, np.where(labels == 1, -s, s))))


def fit_platt(margins, labels) -> tuple[float, float]:
    """``(T, b)`` minimising the validation NLL of ``sigmoid(margin / T + b)``; ``(1, 0)`` without data.

    ``margins`` are lesion margins ``z1 - z0`` ``(N,)``. The search is over
    ``log T`` (bounded as in :func:`fit_temperature`) and ``b`` (bounded by
    +-20), started from no scaling and from the temperature-only fit; the
    result is never worse than no scaling.
    """
    from scipy.optimize import minimize

    m = np.asarray(margins, np.float64).ravel()
    y = np.asarray(labels).astype(np.int64).ravel()
    if y.size == 0 or not np.isfinite(m).all():
        return 1.0, 0.0
    objective = lambda x: _margin_nll(m, y, x[0], x[1])  # noqa: E731
    bounds = [_LOG_T_BOUNDS, (-_OFFSET_BOUND, _OFFSET_BOUND)]
    starts = [(0.0, 0.0), (math.log(fit_temperature(np.stack([np.zeros_like(m), m], axis=1), y)), 0.0)]
    best = min((minimize(objective, np.array(x0), method="L-BFGS-B", bounds=bounds) for x0 in starts),
               key=lambda r: float(r.fun))
    log_t, offset = (float(v) for v in best.x)
    if objective((log_t, offset)) > objective((0.0, 0.0)):
        return 1.0, 0.0
    return math.exp(log_t), offset


def temperature_at_bound(temperature: float) -> bool:
    """True when a fitted temperature stopped at an end of its search range (e^-5 or e^5).

    Then the fit did not find a minimum. With the offset of :func:`fit_platt`
    this happens only when the level's validation scores carry no information
    (at e^5 every probability is the offset's, about the validation share of
    positives), so only their ranking (the AUC) is worth reading. Reports,
    ``metrics.json``, the CV summary and the page say so.
    """
    log_t = math.log(float(temperature)) if temperature > 0 else -math.inf
    return min(abs(log_t - _LOG_T_BOUNDS[0]), abs(log_t - _LOG_T_BOUNDS[1])) < 1e-3


def bound_warning(level: str, temperature: float) -> str:
    """The one sentence every output uses for a temperature fit that ended at its bound."""
    return (f"the {level}-level temperature fit ended at its bound (T = {temperature:.2f}): the {level} scores "
            f"carried no information on the validation women, so every {level} probability is about the same; "
            f"only their ranking (the AUC) is meaningful")


def apply_temperature(logits, temperature: float) -> np.ndarray:
    """Class probabilities ``softmax(logits / T)``, shape ``(N, C)``.

    The positive-class probability of a binary model is ``[:, 1]``.
    """
    return np.exp(_log_softmax(np.asarray(logits, dtype=np.float64) / float(temperature)))


def probabilities(logits, temperature: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """Positive-class probability ``(N,)`` float64 of film logits ``(N, C)``: ``softmax(z / T + [0, b])[:, 1]``.

    The one temperature-softmax of the package; for two classes it is
    ``sigmoid((z1 - z0) / T + b)`` (:func:`fit_platt`). A one-logit model's
    logit is read as ``[0, z]`` (a sigmoid).
    """
    z = np.asarray(logits, np.float64)
    if z.shape[-1] == 1:
        z = np.concatenate([np.zeros_like(z), z], axis=-1)
    z = z / float(temperature)
    if offset:
        z = z.copy()
        z[..., POSITIVE_CLASS] += float(offset)
    return apply_temperature(z, 1.0)[..., POSITIVE_CLASS]


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
