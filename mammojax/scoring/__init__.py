"""Scoring films: the one home of "preprocessed film -> logits, probability, heatmap".

:class:`Scorer` (built from a checkpoint with :meth:`Scorer.from_checkpoint`,
or from a model and variables during training) is what ``predict``,
``explain``, ``eval``, the web page, training validation, cross-validation and
``benchmark`` call. :class:`FilmScoring` says how a film is scored; a
checkpoint stores it and :func:`film_scoring_from_meta` is its one reader
(both live in :mod:`mammojax.film_scoring`, below the checkpoint).
"""

from mammojax.evaluation.calibration import probabilities  # the one temperature-softmax, re-exported
from mammojax.film_scoring import FilmScoring, film_scoring_from_config, film_scoring_from_meta
from mammojax.scoring.scorer import (POSITIVE_CLASS, PathScore, ReadFilm, Scorer, film_cam,
                                     film_logits, patch_margins)

__all__ = ["FilmScoring", "POSITIVE_CLASS", "PathScore", "ReadFilm", "Scorer", "film_cam",
           "film_logits", "film_scoring_from_config", "film_scoring_from_meta", "patch_margins",
           "probabilities"]
