"""Operating points per level: a temperature and a tau for images, breasts and patients.

A recall decision is made per woman, but a threshold chosen on image scores
is not the right threshold for her score (the maximum over her views is
higher than a typical view's). So each level gets its own operating point,
fitted on validation scores *of that level*:

* a level's score is the aggregate (``max`` by default, or ``mean``) of its
  images' lesion margins ``z1 - z0`` (:mod:`mammojax.evaluation.aggregate`);
* its temperature ``T`` and offset ``b`` minimise the validation NLL of
  ``sigmoid(margin / T + b)`` against the level's labels (a breast or woman is
  positive when any image is; :func:`mammojax.evaluation.calibration.fit_platt`:
  the offset absorbs the shift of a class-weighted loss and of the maximum over
  views, which a temperature alone could only flatten towards 0.5);
* its tau comes from the config's threshold policy on those probabilities.

With ``max`` and one shared temperature, a woman's probability is the maximum
of her images' probabilities (the sigmoid is monotone), as before; a level
temperature only recalibrates it. Checkpoints written before this file stored
one image-level tau and temperature; :func:`read_operating_points` reads them
as that pair for every level, and points stored before the offset with ``b = 0``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mammojax.evaluation import aggregate as agg
from mammojax.evaluation.calibration import bound_warning, fit_platt, probabilities, temperature_at_bound
from mammojax.evaluation.thresholds import choose_threshold

LEVELS = agg.LEVELS


@dataclasses.dataclass(frozen=True)
class OperatingPoint:
    """A level's calibration ``sigmoid(margin / temperature + offset)`` and its threshold ``tau`` on it."""

    tau: float
    temperature: float
    offset: float = 0.0

    def probabilities(self, margins) -> np.ndarray:
        """Calibrated probabilities of lesion margins ``z1 - z0`` at this point."""
        return margin_probabilities(margins, self.temperature, self.offset)

    def film_probabilities(self, logits) -> np.ndarray:
        """Calibrated probabilities of film logits ``(N, C)`` at this point."""
        return probabilities(logits, self.temperature, self.offset)


def level_margins(logits, labels, patient_ids, lateralities, level: str, how: str = "max") -> agg.Grouped:
    """Lesion margins of ``level``'s groups (scores = aggregated image margins)."""
    z = np.asarray(logits, np.float64)
    margins = z[:, 1] - z[:, 0] if z.shape[-1] > 1 else z[:, 0]
    labels = np.zeros(len(margins), np.int64) if labels is None else labels
    return agg.by_level(labels, margins, patient_ids, lateralities, level, how)


def margin_probabilities(margins, temperature: float, offset: float = 0.0) -> np.ndarray:
    """``sigmoid(margin / T + b)``: the temperature-softmax of :func:`mammojax.evaluation.calibration.probabilities`."""
    return probabilities(np.asarray(margins, np.float64)[..., None], temperature, offset)  # one logit: [0, m]


def group_probabilities(margins, keys, point: OperatingPoint, how: str = "max") -> agg.Grouped:
    """Groups of images (a patient's, a breast's) scored at ``point``: scores are probabilities.

    The group's margin is the aggregate of its images' lesion margins; its
    probability that margin through ``point``'s temperature. ``predict`` and the
    page use it for their patient rows, as ``eval`` does.
    """
    keys = list(keys)
    grouped = agg.aggregate(None, margins, keys, keys, how)
    return dataclasses.replace(grouped, scores=point.probabilities(grouped.scores))


def fit_operating_points(logits, labels, patient_ids, lateralities, *, how: str = "max", policy: str = "youden",
                         tau: float = 0.5, target: float = 0.9, calibrate: bool = True) -> dict[str, OperatingPoint]:
    """One :class:`OperatingPoint` per level, fitted on validation film logits ``(N, C)``."""
    points = {}
    for level in LEVELS:
        grouped = level_margins(logits, labels, patient_ids, lateralities, level, how)
        temperature, offset = fit_platt(grouped.scores, grouped.labels) if calibrate else (1.0, 0.0)
        probs = margin_probabilities(grouped.scores, temperature, offset)
        points[level] = OperatingPoint(tau=choose_threshold(grouped.labels, probs, policy, tau=tau, target=target),
                                       temperature=float(temperature), offset=float(offset))
    return points


def fit_from_config(logits, labels, patient_ids, lateralities, config) -> dict[str, OperatingPoint]:
    """:func:`fit_operating_points` with the policy of ``config.eval``."""
    e = config.eval
    return fit_operating_points(logits, labels, patient_ids, lateralities, how=e.patient_aggregate,
                                policy=e.threshold_policy, tau=float(e.tau), target=float(e.target),
                                calibrate=bool(e.calibrate))


def calibration_warnings(points: dict[str, OperatingPoint]) -> list[str]:
    """One sentence per level whose temperature fit ended at its bound (see calibration.temperature_at_bound).

    The checkpoint stores them (``calibration_warnings``), ``train`` prints them,
    and ``eval``, the CV summary and the page show them.
    """
    return [bound_warning(level, point.temperature) for level, point in points.items()
            if temperature_at_bound(point.temperature)]


def to_meta(points: dict[str, OperatingPoint]) -> dict:
    """The checkpoint's ``operating_points`` entry."""
    return {level: dataclasses.asdict(point) for level, point in points.items()}


def read_operating_points(meta: dict) -> dict[str, OperatingPoint]:
    """The one reader of a checkpoint's operating points (old checkpoints: the image pair everywhere).

    A stored level wins over the top-level ``tau``/``temperature`` (a
    cross-validation fold keeps its other-breast pair there, which single-film
    scoring cannot use).
    """
    image = OperatingPoint(tau=float(meta.get("tau", 0.5)), temperature=float(meta.get("temperature", 1.0)),
                           offset=float(meta.get("offset", 0.0)))
    stored = meta.get("operating_points") or {}
    return {level: OperatingPoint(**stored[level]) if level in stored else image for level in LEVELS}
