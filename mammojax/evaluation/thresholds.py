"""Operating points: which probability ``tau`` turns a score into a decision.

An image is called positive when ``score >= tau``. Policies:

* ``fixed``: ``tau`` as given (0.5 by default).
* ``youden``: maximise Youden's J = sensitivity + specificity - 1.
* ``sensitivity``: the highest threshold whose sensitivity reaches ``target``
  (the most specific operating point that still finds ``target`` of cancers).
* ``specificity``: the lowest threshold whose specificity reaches ``target``
  (the most sensitive operating point with at most ``1 - target`` false calls).

The data-driven policies need both classes; without them they fall back to
``tau`` (there is nothing to optimise). They should be fitted on validation
data: a threshold chosen on the data it is then scored on is optimistic.
"""

from __future__ import annotations

import math

import numpy as np

from mammojax.errors import ConfigError
from mammojax.evaluation.metrics import roc_curve

POLICIES = ("fixed", "youden", "sensitivity", "specificity")


def choose_threshold(labels, scores, policy: str, *, tau: float = 0.5, target: float = 0.9) -> float:
    """The decision threshold for ``policy`` (see the module docstring)."""
    if policy not in POLICIES:
        raise ConfigError(f"unknown threshold policy {policy!r}; valid: {', '.join(POLICIES)}")
    if policy == "fixed":
        return float(tau)
    if policy in ("sensitivity", "specificity") and not 0.0 <= target <= 1.0:
        raise ConfigError(f"threshold target {target} must lie in [0, 1]")
    y = np.asarray(labels).astype(np.int64).ravel()
    if y.size == 0 or y.min() == y.max():
        return float(tau)
    curve = roc_curve(y, scores)
    fpr, tpr, thresholds = curve["fpr"], curve["tpr"], curve["thresholds"]
    # Rounding guard: a target of 0.9 must accept a rate computed as 0.8999999.
    eps = 1e-12
    if policy == "youden":
        index = int(np.argmax(tpr - fpr))  # first maximum = highest such threshold
    elif policy == "sensitivity":
        index = int(np.flatnonzero(tpr >= target - eps)[0])  # thresholds descend
    else:
        index = int(np.flatnonzero(1.0 - fpr >= target - eps)[-1])
    return _finite(thresholds[index], scores)


def _finite(threshold: float, scores) -> float:
    """The +inf threshold ("call nothing positive") as a finite, JSON-safe value."""
    if math.isinf(threshold):
        return float(np.nextafter(np.max(np.asarray(scores, dtype=np.float64)), np.inf))
    return float(threshold)
