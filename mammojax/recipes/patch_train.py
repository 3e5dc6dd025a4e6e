"""``mammojax train`` for configs with ``train.recipe = "patches"`` (configs/mias.py).

The same recipe that ``scripts/mias_cv.sh`` measures, run once on every image
given: the patch classifier learns from the training women's lesion patches
(:func:`mammojax.recipes.patches.train_patch_classifier`), the validation
women's films are scored the way predictions will be (patch-sized windows,
:func:`~mammojax.recipes.patches.score_images_by_windows`), and the
temperature and tau fitted on those scores go into ``WORKDIR/best`` with a
``scoring`` entry that tells :class:`mammojax.scoring.Scorer` to score
films by windows too. ``mammojax eval``/``predict``/``app`` then need no edits.

The operating point is that of a *single* film: a prediction may be asked for
one film alone, so the other-breast term of the cross-validation
(``eval.contralateral``) is left out here; the CV reports both.

No resume: the patch stage takes minutes (about 6 on all 242 mini-MIAS films
on 2 cores), and a workdir that already holds ``best/`` is refused untouched.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from mammojax.errors import MammojaxError

RECIPE = "patches"


def window_scoring_meta(config) -> dict | None:
    """The checkpoint's ``scoring`` entry for window scoring (None for ``eval.scoring = "whole"``).

    Read back by :func:`mammojax.scoring.film_scoring_from_meta`; an unknown
    ``eval.scoring`` fails here, before training starts.
    """
    from mammojax.scoring import film_scoring_from_config

    scoring = film_scoring_from_config(config)
    return scoring.to_meta() if scoring.windows else None


def score_films(model, variables, images: np.ndarray, config, tta: bool) -> np.ndarray:
    """Film logits ``(N, 2)`` of ``images``, scored by :class:`mammojax.scoring.Scorer` as ``config`` says.

    ``variables`` may be a list of networks (an ensemble, whose margins are averaged).
    """
    from mammojax.scoring import Scorer, film_scoring_from_config

    scoring = film_scoring_from_config(config).replace(tta_hflip=bool(tta))
    return Scorer(model, variables, scoring, batch_size=32).logits(images)


def initial_weights(config) -> dict | None:
    """The variables of ``model.init_checkpoint`` (e.g. from ``convert-weights``), or None for random init."""
    if not config.model.init_checkpoint:
        return None
    from mammojax.checkpoint import load_checkpoint

    return load_checkpoint(config.model.init_checkpoint, expect_model=config.model.name).variables


def train_patch_recipe(config, workdir: str | Path, *, log: Callable[[str], None] = print) -> dict:
    """Trains the patch recipe in ``workdir``; returns the summary ``mammojax train`` prints.

    The summary has the keys of :func:`mammojax.train.loop.train_and_evaluate`'s
    (``best_epoch`` is the last epoch: no epoch is selected).
    """
    import jax

    from mammojax.checkpoint import make_meta, save_checkpoint
    from mammojax.models import create_model
    from mammojax.recipes.patches import PatchSettings, train_patch_classifier
    from mammojax.train.curves import CURVES_FILE, plot_training_curves
    from mammojax.train.data import prepare_training_data
    from mammojax.train.loop import BEST_DIR, CONFIG_FILE, operating_point_metrics

    if jax.process_count() > 1:
        raise MammojaxError("the patch recipe (train.recipe='patches') runs in one process; "
                            "start it without --coordinator/--num-processes")
    scoring = window_scoring_meta(config)  # before training: a bad eval.scoring fails at once
    workdir = Path(workdir).absolute()
    best_dir = workdir / BEST_DIR
    if best_dir.exists():
        raise MammojaxError(f"{best_dir}: already holds a trained model; choose another --workdir "
                            "(the patch recipe does not resume, and nothing is overwritten)")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str))

    started = time.time()
    data = prepare_training_data(config, workdir)
    images, labels = data.train.load_arrays()
    settings = PatchSettings.from_config(config.patch)
    model = create_model(config.model.name, num_classes=int(config.model.num_classes),
                         head_pooling=config.model.head_pooling, dtype=config.model.dtype)
    log(f"patch recipe: {len(labels)} training films ({int(labels.sum())} abnormal), "
        f"{data.val.num_examples} validation films; {settings.size} px patches at {config.data.image_size} px")
    history: list[dict] = []
    variables = train_patch_classifier(model, images, labels, list(data.train.lesions_input), settings,
                                       seed=int(config.seed), log=log, history=history,
                                       initial_variables=initial_weights(config))

    val_images, val_labels = data.val.load_arrays()
    log(f"scoring {len(val_labels)} validation films ({config.eval.scoring})")
    val_logits = score_films(model, variables, val_images, config, bool(config.eval.tta_hflip))
    val = operating_point_metrics(val_logits, np.asarray(val_labels), config)
    history[-1].update({f"val_{k}": v for k, v in val.items() if isinstance(v, float)})
    extra = {"epoch": len(history), "recipe": RECIPE,
             "val_metrics": {k: (v if np.isfinite(v) else None) for k, v in val.items() if isinstance(v, float)}}
    if scoring is not None:  # tau was fitted on window scores: predictions must be too
        extra["scoring"] = scoring
    save_checkpoint(best_dir, variables,
                    make_meta(config, tau=val["tau"], temperature=val["temperature"], extra=extra))
    plot_training_curves(history, workdir / CURVES_FILE)
    log(f"patch recipe done in {(time.time() - started) / 60:.1f} min")
    return {"recipe": RECIPE, "best_epoch": len(history), "best_value": val.get(config.train.best_metric),
            "best_metrics": val, "steps": None, "history": history, "best_checkpoint": str(best_dir)}


__all__ = ["train_patch_recipe", "initial_weights", "window_scoring_meta", "score_films", "RECIPE"]
