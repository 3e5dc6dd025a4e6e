"""Image -> breast -> patient scores.

A screening decision is made per woman (recall or not), and a lesion is often
visible on only one of her views, so a patient's score is the *maximum* over
her images by default (``mean`` is the option for smoother, less
sensitive scores). A breast is ``(patient, laterality)``; an image of unknown
laterality is kept as its own breast rather than guessed into one. A group is
positive when any of its images is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mammojax.errors import ConfigError

AGGREGATES = ("max", "mean")
LEVELS = ("image", "breast", "patient")


@dataclass(frozen=True)
class Grouped:
    """Scores after aggregation: one entry per group, in first-seen order."""

    keys: list
    labels: np.ndarray  # int64, 1 if any member image is positive
    scores: np.ndarray  # float64, max or mean of member scores
    patients: list  # the patient of each group (the bootstrap cluster)
    sizes: np.ndarray  # images per group


def group_keys(patient_ids, lateralities, level: str) -> list:
    """One hashable key per image for ``level`` (image | breast | patient)."""
    if level not in LEVELS:
        raise ConfigError(f"unknown aggregation level {level!r}; valid: {', '.join(LEVELS)}")
    patients = [str(p) for p in patient_ids]
    if level == "image":
        return [(p, i) for i, p in enumerate(patients)]
    if level == "patient":
        return patients
    sides = list(lateralities) if lateralities is not None else [None] * len(patients)
    return [(p, side) if side in ("L", "R") else (p, f"image-{i}")
            for i, (p, side) in enumerate(zip(patients, sides))]


def aggregate(labels, scores, keys, patient_ids, how: str = "max") -> Grouped:
    """Reduces image scores to one score per key (``how`` = max | mean).

    ``labels`` may be None (scoring without ground truth): group labels are then 0.
    """
    if how not in AGGREGATES:
        raise ConfigError(f"unknown patient aggregate {how!r}; valid: {', '.join(AGGREGATES)}")
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.zeros(s.size, np.int64) if labels is None else np.asarray(labels).astype(np.int64).ravel()
    index_of: dict = {}
    order: list = []
    patients: list = []
    for i, key in enumerate(keys):
        if key not in index_of:
            index_of[key] = len(order)
            order.append(key)
            patients.append(str(patient_ids[i]))
    gid = np.fromiter((index_of[k] for k in keys), dtype=np.int64, count=len(keys))
    n = len(order)
    sizes = np.bincount(gid, minlength=n)
    group_labels = np.zeros(n, np.int64)
    np.maximum.at(group_labels, gid, y)
    if how == "max":
        group_scores = np.full(n, -np.inf)
        np.maximum.at(group_scores, gid, s)
    else:
        group_scores = np.bincount(gid, weights=s, minlength=n) / np.maximum(sizes, 1)
    return Grouped(keys=order, labels=group_labels, scores=group_scores, patients=patients,
                   sizes=sizes)


def by_level(labels, scores, patient_ids, lateralities, level: str, how: str = "max") -> Grouped:
    """Convenience: :func:`group_keys` then :func:`aggregate`."""
    keys = group_keys(patient_ids, lateralities, level)
    return aggregate(labels, scores, keys, list(map(str, patient_ids)), how)
