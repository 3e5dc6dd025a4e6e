"""Binary classification metrics computed on the host with NumPy.

Conventions shared by every function here:

* ``labels`` are 0 (normal) / 1 (cancer); ``scores`` are probabilities (or any
  monotone score) of the positive class.
* An image is called positive when ``score >= tau`` (the same rule as
  scikit-learn's ``roc_curve`` thresholds), so ``tau = 0`` calls everything
  positive.
* Nothing here raises on degenerate data: the AUC is NaN when one class is
  absent, and every ratio whose denominator is zero (sensitivity without
  positives, PPV without positive calls, ...) is NaN. Training logs and reports
  print NaN as "n/a" rather than crashing on a small validation split.
"""

from __future__ import annotations

import math

import numpy as np


def _as_arrays(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return y, s


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied scores counting 1/2).

    NaN when either class is absent.
    """
    y, s = _as_arrays(labels, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(s)
    rank_sum = ranks[y == 1].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    # Boundaries of runs of equal values in sorted order.
    new_run = np.concatenate(([True], sorted_vals[1:] != sorted_vals[:-1]))
    run_id = np.cumsum(new_run) - 1
    run_start = np.flatnonzero(new_run)
    run_end = np.concatenate((run_start[1:], [values.size]))  # exclusive
    mean_rank = (run_start + 1 + run_end) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = mean_rank[run_id]
    return ranks


def confusion_counts(labels, predictions) -> dict[str, int]:
    """``tp, fp, tn, fn`` for 0/1 labels and 0/1 predictions."""
    y = np.asarray(labels).astype(bool).ravel()
    p = np.asarray(predictions).astype(bool).ravel()
    return {"tp": int(np.sum(y & p)), "fp": int(np.sum(~y & p)),
            "tn": int(np.sum(~y & ~p)), "fn": int(np.sum(y & ~p))}


def rates_from_counts(tp: int, fp: int, tn: int, fn: int) -> dict[str, float]:
    """Sensitivity, specificity, accuracy, F1, PPV, NPV (NaN for empty denominators)."""
    sensitivity = _ratio(tp, tp + fn)
    ppv = _ratio(tp, tp + fp)
    return {
        "sensitivity": sensitivity,
        "specificity": _ratio(tn, tn + fp),
        "accuracy": _ratio(tp + tn, tp + fp + tn + fn),
        # F1 = 2TP / (2TP + FP + FN): defined whenever anything is positive.
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "ppv": ppv,
        "npv": _ratio(tn, tn + fn),
    }


def classification_metrics(labels, scores, tau: float = 0.5) -> dict:
    """Every scalar metric of a binary classifier at threshold ``tau``.

    Returns a dict with ``auc, sensitivity, specificity, accuracy, f1, ppv, npv``
    (floats, NaN where undefined: see the module docstring), the confusion counts
    ``tp, fp, tn, fn``, ``n`` (examples), ``n_pos`` (positives) and ``tau``.
    """
    y, s = _as_arrays(labels, scores)
    counts = confusion_counts(y, s >= tau)
    out = {"auc": roc_auc(y, s)}
    out.update(rates_from_counts(**counts))
    out.update(counts)
    out.update(n=int(y.size), n_pos=int(y.sum()), tau=float(tau))
    return out


def roc_curve(labels, scores) -> dict[str, np.ndarray]:
    """ROC points ``fpr, tpr, thresholds`` from (0, 0) to (1, 1).

    One point per distinct score (descending), calling ``score >= threshold``
    positive; the first threshold is +inf (nothing called positive). With one
    class absent the corresponding rate is NaN.
    """
    y, s = _as_arrays(labels, scores)
    thresholds, tp, fp = _cumulative_counts(y, s)
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tp / n_pos if n_pos else np.full(tp.shape, np.nan)
        fpr = fp / n_neg if n_neg else np.full(fp.shape, np.nan)
    return {"fpr": fpr, "tpr": tpr, "thresholds": thresholds}


def pr_curve(labels, scores) -> dict[str, np.ndarray]:
    """Precision-recall points at every distinct score (descending thresholds).

    Also returns ``average_precision`` (step-wise area, as scikit-learn's
    ``average_precision_score``), NaN without positives.
    """
    y, s = _as_arrays(labels, scores)
    thresholds, tp, fp = _cumulative_counts(y, s)
    thresholds, tp, fp = thresholds[1:], tp[1:], fp[1:]  # drop the empty call set
    n_pos = int(y.sum())
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / n_pos if n_pos else np.full(tp.shape, np.nan)
    if n_pos:
        previous_recall = np.concatenate(([0.0], recall[:-1]))
        ap = float(np.sum((recall - previous_recall) * precision))
    else:
        ap = math.nan
    return {"precision": precision, "recall": recall, "thresholds": thresholds,
            "average_precision": ap}


def _cumulative_counts(y: np.ndarray, s: np.ndarray):
    """TP and FP counts when calling ``score >= t`` for +inf and each distinct t."""
    if s.size == 0:
        return np.array([np.inf]), np.zeros(1), np.zeros(1)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # Last index of each run of equal scores: counts there include the whole tie.
    last_of_run = np.flatnonzero(np.concatenate((s_sorted[1:] != s_sorted[:-1], [True])))
    tp = np.cumsum(y_sorted)[last_of_run].astype(np.float64)
    fp = (last_of_run + 1 - tp).astype(np.float64)
    thresholds = np.concatenate(([np.inf], s_sorted[last_of_run]))
    return thresholds, np.concatenate(([0.0], tp)), np.concatenate(([0.0], fp))
