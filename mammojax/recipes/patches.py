"""Moved: patch sampling is :mod:`mammojax.train.patches`, window scoring :mod:`mammojax.film_scoring`.

Only this name is left here, for ``mammojax/inference.py``'s import, until the
one film scorer (issue 15, item 1) replaces it; delete the file then.
"""

from mammojax.film_scoring import score_images_by_windows  # noqa: F401
