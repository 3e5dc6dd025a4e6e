"""Evaluation: metrics, confidence intervals, thresholds, calibration, reports.

The submodules with NumPy-only dependencies are re-exported here; the report
(matplotlib) and :mod:`mammojax.evaluation.evaluate` (JAX) are imported from
their modules when needed.
"""

from mammojax.evaluation.calibration import (apply_temperature, expected_calibration_error,
                                             fit_temperature, negative_log_likelihood,
                                             reliability_bins)
from mammojax.evaluation.metrics import (classification_metrics, confusion_counts, pr_curve,
                                         roc_auc, roc_curve)
from mammojax.evaluation.thresholds import POLICIES, choose_threshold

__all__ = [
    "POLICIES", "apply_temperature", "choose_threshold", "classification_metrics",
    "confusion_counts", "expected_calibration_error", "fit_temperature",
    "negative_log_likelihood", "pr_curve", "reliability_bins", "roc_auc", "roc_curve",
]
