"""Binary classification metrics computed on the host, through scikit-learn.

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
  scikit-learn raises on empty inputs and warns (or returns 0 or 1) where a
  class is missing, so those cases are answered here before it is called.

scikit-learn is imported inside the functions: ``mammojax.evaluation`` is
imported by modules that must stay light until a metric is actually needed.
"""

from __future__ import annotations

import contextlib
import math
import warnings

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


def _both_classes(y: np.ndarray) -> bool:
    return bool(y.size) and 0 < int(y.sum()) < y.size


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve (tied scores count 1/2), NaN when either class is absent."""
    from sklearn.metrics import roc_auc_score

    y, s = _as_arrays(labels, scores)
    if not _both_classes(y):
        return math.nan
    return float(roc_auc_score(y, s))


def confusion_counts(labels, predictions) -> dict[str, int]:
    """``tp, fp, tn, fn`` for 0/1 labels and 0/1 predictions (all 0 when empty)."""
    from sklearn.metrics import confusion_matrix

    y = np.asarray(labels).astype(bool).ravel()
    p = np.asarray(predictions).astype(bool).ravel()
    if y.size == 0:
        return {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    # labels=[False, True] fixes the 2x2 layout even when one class is absent.
    tn, fp, fn, tp = confusion_matrix(y, p, labels=[False, True]).ravel()
    return {"tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)}


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
    class absent the corresponding rate is NaN; with no scores the curve is the
    single +inf point with NaN rates.
    """
    from sklearn.metrics import roc_curve as sk_roc_curve

    y, s = _as_arrays(labels, scores)
    if y.size == 0:
        return {"fpr": np.full(1, np.nan), "tpr": np.full(1, np.nan), "thresholds": np.array([np.inf])}
    with _quiet_missing_class():  # the missing class's rate comes back NaN, as documented
        # Every distinct score keeps its point: the threshold policies search them all.
        fpr, tpr, thresholds = sk_roc_curve(y, s, drop_intermediate=False)
    return {"fpr": fpr.astype(np.float64), "tpr": tpr.astype(np.float64),
            "thresholds": thresholds.astype(np.float64)}


def pr_curve(labels, scores) -> dict[str, np.ndarray]:
    """Precision-recall points at every distinct score (descending thresholds).

    Also returns ``average_precision`` (scikit-learn's ``average_precision_score``,
    the step-wise area). Without positives, recall and the average precision
    are NaN (scikit-learn would report recall 1 and AP 0).
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y, s = _as_arrays(labels, scores)
    if y.size == 0:
        empty = np.zeros(0)
        return {"precision": empty, "recall": empty, "thresholds": empty, "average_precision": math.nan}
    with _quiet_missing_class():
        precision, recall, thresholds = precision_recall_curve(y, s)
    # scikit-learn lists increasing thresholds and appends the (P=1, R=0) end
    # point; here thresholds descend, as in roc_curve, and that point is left out.
    precision, recall, thresholds = precision[:-1][::-1], recall[:-1][::-1], thresholds[::-1]
    has_positives = bool(y.any())
    return {"precision": precision.astype(np.float64),
            "recall": recall.astype(np.float64) if has_positives else np.full(recall.shape, np.nan),
            "thresholds": thresholds.astype(np.float64),
            "average_precision": float(average_precision_score(y, s)) if has_positives else math.nan}


@contextlib.contextmanager
def _quiet_missing_class():
    """Silences scikit-learn's warnings about a class missing from the labels:
    the functions here answer that case with NaN instead."""
    from sklearn.exceptions import UndefinedMetricWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        # precision_recall_curve warns "No positive class found" as a plain UserWarning.
        warnings.filterwarnings("ignore", message="No positive class found", category=UserWarning)
        yield
