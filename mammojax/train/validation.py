"""Validation inside training: a network's films scored as its checkpoint will score them.

Every trainer's ``Feed.validate`` calls :func:`evaluate`: the validation films
go through :class:`mammojax.scoring.Scorer` with the config's film scoring
(:func:`validation_logits`), then the temperature, threshold and metrics
(:func:`operating_point_metrics`) and the per-level operating points
(:mod:`mammojax.evaluation.operating_points`) are fitted on those logits, so
``best/`` carries the calibration of exactly the scores it will produce.
"""

from __future__ import annotations

import numpy as np

from mammojax.data.pipeline import eval_batches
from mammojax.evaluation.calibration import fit_platt, probabilities
from mammojax.evaluation.metrics import classification_metrics
from mammojax.evaluation.operating_points import fit_from_config, to_meta
from mammojax.evaluation.thresholds import choose_threshold
from mammojax.film_scoring import film_scoring_from_config
from mammojax.scoring import Scorer


def evaluate(model, variables, cache, config, *, batch_size: int) -> dict:
    """Validation metrics at the operating point the config's policy picks on this set.

    Returns :func:`operating_point_metrics` of :func:`validation_logits`, plus
    ``operating_points``: a tau and a temperature per level (image, breast,
    patient) fitted on that level's validation scores
    (:mod:`mammojax.evaluation.operating_points`), for the checkpoint.
    """
    logits, labels = validation_logits(model, variables, cache, config, batch_size=batch_size)
    metrics = operating_point_metrics(logits, labels, config)
    records = list(cache.records)
    metrics["operating_points"] = to_meta(fit_from_config(
        logits, labels, [r.patient_id for r in records], [r.laterality for r in records], config))
    return metrics


def validation_logits(model, variables, cache, config, *, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(film logits (N, C), labels (N,))`` of every example of ``cache``, in cache order, each once.

    Films are scored by :class:`mammojax.scoring.Scorer` exactly as the saved
    checkpoint will score them (the config's film scoring, flip TTA
    included), so tau and the temperature are fitted on the scores they will
    be applied to. ``variables`` are host arrays (:func:`mammojax.train.loop.host_variables`):
    in a multi-process run each process scores the films on its own devices.
    Films are read from the prepared dataset a batch at a time, one batch ahead.
    """
    scorer = Scorer(model, variables, film_scoring_from_config(config), batch_size=batch_size)
    logits, labels = [], []
    for batch in eval_batches(cache, scorer.batch_size):
        logits.append(scorer.logits(batch["image"][batch["mask"]]))
        labels.append(batch["label"][batch["mask"]])
    if not logits:
        return np.zeros((0, scorer.num_classes)), np.zeros(0, np.int64)
    return np.concatenate(logits), np.concatenate(labels)


def operating_point_metrics(logits: np.ndarray, labels: np.ndarray, config) -> dict:
    """Temperature, offset, threshold and metrics from validation logits (host, NumPy).

    The image level's calibration, fitted as the stored image operating point is
    (:func:`mammojax.evaluation.calibration.fit_platt` on the margins).
    """
    margins = logits[:, 1] - logits[:, 0] if logits.shape[-1] > 1 else logits[:, 0]
    temperature, offset = fit_platt(margins, labels) if config.eval.calibrate else (1.0, 0.0)
    scores = probabilities(logits, temperature, offset)
    tau = choose_threshold(labels, scores, config.eval.threshold_policy, tau=float(config.eval.tau),
                           target=float(config.eval.target))
    metrics = classification_metrics(labels, scores, tau)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    metrics["loss"] = float(-log_probs[np.arange(labels.size), labels].mean())
    metrics["temperature"] = float(temperature)
    metrics["offset"] = float(offset)
    return metrics


__all__ = ["evaluate", "operating_point_metrics", "validation_logits"]
