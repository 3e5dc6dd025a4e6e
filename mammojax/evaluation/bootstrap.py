"""Bootstrap confidence intervals that resample patients, not images.

A woman's views are correlated (same breast tissue, same lesion seen twice),
so resampling images as if independent makes intervals too narrow. Here the
unit of resampling is a cluster (``groups``: the patient id of each image):
each resample draws as many patients as there are, with replacement, and takes
all their images. Resamples that lack a class (AUC undefined) are skipped and
counted, never silently folded in.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np


def resample_auc(labels, scores) -> float:
    """ROC AUC as the Mann-Whitney U statistic over average ranks; NaN with one class.

    The bootstrap's default metric. It equals ``sklearn.metrics.roc_auc_score``
    (ties count 1/2; tests/evaluation/test_metrics.py checks it on tied random data) but
    skips scikit-learn's input validation, which dominates on bootstrap-sized
    inputs. Measured (scikit-learn 1.9.1, one shared CPU core): a whole
    ``bootstrap_ci`` of 1000 patient resamples (4 images per patient) takes
    0.31 s with this metric vs 3.65 s with ``roc_auc_score`` on 250 scores, and
    1.8 s vs 7.1 s on 10,000 scores; the metric calls alone: 0.15 s vs 2.7 s
    and 1.0 s vs 5.5 s. ``eval`` bootstraps three levels, so scikit-learn here
    would add ~10 s to a small evaluation for the same numbers.
    """
    from scipy.stats import rankdata

    y = np.asarray(labels).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    rank_sum = rankdata(s)[y == 1].sum()  # tied scores share their mean rank
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def bootstrap_ci(labels, scores, groups=None, *, metric: Callable = resample_auc,
                 n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Percentile bootstrap interval of ``metric(labels, scores)``.

    ``groups`` holds one cluster id per example (None: every example is its own
    cluster). The same ``seed`` gives the same interval. Returns ``point`` (the
    metric on all data), ``low``, ``high``, ``confidence``, ``n_resamples``
    (requested), ``n_used`` and ``n_skipped`` (resamples whose metric was NaN,
    e.g. drawn without a positive patient). ``low``/``high`` are NaN when
    nothing usable remains.
    """
    y = np.asarray(labels).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    members = _cluster_members(y.size, groups)
    rng = np.random.default_rng(seed)
    values = []
    skipped = 0
    for _ in range(int(n_resamples)):
        drawn = rng.integers(0, len(members), len(members))
        index = np.concatenate([members[i] for i in drawn]) if members else np.zeros(0, np.int64)
        value = metric(y[index], s[index])
        if value is None or math.isnan(value):
            skipped += 1
        else:
            values.append(value)
    alpha = (1.0 - confidence) / 2.0
    if values:
        low, high = np.quantile(np.asarray(values), [alpha, 1.0 - alpha])
    else:
        low = high = math.nan
    return {"point": float(metric(y, s)), "low": float(low), "high": float(high),
            "confidence": float(confidence), "n_resamples": int(n_resamples),
            "n_used": len(values), "n_skipped": skipped,
            "unit": "image" if groups is None else "cluster"}


def _cluster_members(n: int, groups) -> list[np.ndarray]:
    """Indices of each cluster's examples, clusters in first-seen order."""
    if groups is None:
        return [np.array([i]) for i in range(n)]
    groups = list(groups)
    if len(groups) != n:
        raise ValueError(f"groups ({len(groups)}) and labels ({n}) differ in length")
    members: dict = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    return [np.asarray(v, dtype=np.int64) for v in members.values()]
