"""The patch trainer (``train.recipe = "patches"``, configs/mias.py): lesion patches on the core loop.

What it feeds the core loop (:func:`mammojax.train.loop.fit`), and nothing
more: each epoch's patch batches, cut from the prepared dataset as they are due
(:mod:`mammojax.train.patches`: positives around lesion centres, negatives
from breast tissue, part of them mined with the network as it is when the
epoch starts), and its step count (patches per epoch // ``train.batch_size``,
times ``train.epochs``). State, optimizer (``config.optim``), sharding,
checkpoints and exact resume, logging and the tau / temperature fit are the
core's.

No epoch is selected (with ~40 validation films the "best epoch" is mostly
noise): the model is the one at the end of the fixed schedule, validated once
on the validation women's films scored the way predictions will be
(:class:`mammojax.scoring.Scorer`, patch-sized windows). Its ``best/``
carries the ``scoring`` entry, so ``eval``/``predict``/``app`` score films by
windows too, with the tau and temperature fitted on window scores.

The operating point is that of a *single* film: a prediction may be asked for
one film alone, so the other-breast term of the cross-validation
(``eval.contralateral``) is left out here; the CV reports both.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from mammojax.errors import CheckpointError, MammojaxError
from mammojax.evaluation import shortcuts
from mammojax.film_scoring import FilmScoring, film_scoring_from_config
from mammojax.scoring import Scorer
from mammojax.train.data import prepare_training_data
from mammojax.train.loop import Feed, fit, host_variables
from mammojax.train.patches import (
    PURPOSE_PATCH_SAMPLING,
    PatchSettings,
    PatchSource,
    epoch_batches,
    hardest,
    plan_epoch,
)
from mammojax.train.validation import evaluate

RECIPE = "patches"
FILMS_PER_SCORING_CALL = 64  # validation films read from the cache and scored at a time

# Besides checkpointing.IDENTITY_FIELDS: what fixes the patch schedule, so a
# workdir's checkpoints are never continued under another one.
PATCH_IDENTITY_FIELDS = (
    "train.recipe", "train.epochs", "model.init_checkpoint", "optim.name", "optim.lr", "optim.weight_decay",
    "optim.warmup_epochs", "optim.schedule", "patch.size", "patch.positives_per_lesion",
    "patch.negatives_per_positive", "patch.jitter_fraction", "patch.background_from_abnormal",
    "patch.hard_negative_fraction", "patch.hard_negative_pool", "patch.hard_negative_start",
)


def train(config, workdir: str | Path, *, data=None, identity_extra: dict | None = None) -> dict:
    """Trains the patch classifier of ``config`` in ``workdir``; returns the core's summary.

    ``data`` (a :class:`~mammojax.train.data.TrainingData`) replaces the
    config's dataset and split: cross-validation passes each fold's films.
    ``identity_extra`` (JSON values) is added to what a checkpoint in
    ``workdir`` must match to be resumed, e.g. which films a fold trains on.
    """
    # Imports orbax and JAX at the top: this module stays light until a run starts (after runtime.setup()).
    from mammojax.train.checkpointing import IDENTITY_FIELDS, run_identity

    film_scoring_from_config(config)  # a bad eval.scoring fails before any work
    identity = {**run_identity(config, IDENTITY_FIELDS + PATCH_IDENTITY_FIELDS), **(identity_extra or {})}
    return fit(config, workdir, functools.partial(_prepare, data=data), identity=identity)


def _prepare(run, *, data):
    import jax

    from mammojax.train.losses import inverse_frequency_weights  # imports JAX and optax at the top

    config = run.config
    if data is None:
        data = prepare_training_data(config, run.workdir, progress=run.is_main)
    settings = PatchSettings.from_config(config.patch)
    source = PatchSource(data.train, settings)  # the negative sites: each training film read once
    batch_size = int(config.train.batch_size)
    steps_per_epoch = source.patches_per_epoch // batch_size
    if steps_per_epoch < 1:
        raise MammojaxError(f"only {source.patches_per_epoch} patches per epoch from {data.train.num_examples} "
                            f"training films; train.batch_size is {batch_size}")
    total_steps = steps_per_epoch * int(config.train.epochs)
    seed = int(config.seed)
    miner = _HardNegatives(run.model, source, batch_size)

    def batches(state, epoch: int, start_step: int, memo: dict):
        # Mining starts with the first epoch that begins at or after hard_negative_start of the steps.
        mine = settings.hard_negative_fraction > 0 and \
            epoch * steps_per_epoch >= settings.hard_negative_start * total_steps
        plan = plan_epoch(source, np.random.default_rng([seed, PURPOSE_PATCH_SAMPLING, epoch]), mine=mine)
        if len(plan.hard_slots):
            plan = plan.with_hard(miner.choose(state, plan, epoch, start_step, memo))
        return epoch_batches(source, plan, batch_size, start_step=start_step,
                             process_index=jax.process_index(), process_count=jax.process_count())

    def validate(state) -> dict:
        return evaluate(run.model, host_variables(state), data.val, config, batch_size=FILMS_PER_SCORING_CALL)

    num_classes = int(config.model.num_classes)
    weights = np.ones(num_classes, np.float32)
    if config.optim.class_weighting:  # the planned patch classes (balanced by default)
        planned = np.r_[np.zeros(source.negatives_per_epoch, np.int64), np.ones(source.num_positives, np.int64)]
        weights = inverse_frequency_weights(planned, num_classes)
    labels = np.asarray(data.train.labels)
    description = (f"patch trainer: {len(labels)} training films ({int(labels.sum())} abnormal, "
                   f"{len(source.positives)} lesion centres), {data.val.num_examples} validation films; "
                   f"{source.patches_per_epoch} patches of {settings.size} px per epoch at "
                   f"{config.data.image_size} px, {steps_per_epoch} steps per epoch")
    return Feed(steps_per_epoch=steps_per_epoch, batches=batches, validate=validate, class_weights=weights,
                select_epoch=False,
                best_meta={"recipe": RECIPE, **shortcuts.checkpoint_entry(data.train.records, seed=seed)},
                description=description)


class _HardNegatives:
    """Chooses an epoch's mined negatives, and keeps the choice in the checkpoints' memo.

    The choice is made with the network as it is when the epoch starts; a run
    resumed mid-epoch no longer has that network, so it reads the choice back
    from the memo instead of scoring again.
    """

    def __init__(self, model, source, batch_size: int):
        self.model, self.source, self.batch_size = model, source, batch_size

    def choose(self, state, plan, epoch: int, start_step: int, memo: dict) -> list[int]:
        if start_step > 0:
            if memo.get("hard_negatives_epoch") != epoch:
                raise CheckpointError(f"the checkpoint at step {start_step} of epoch {epoch + 1} does not hold "
                                      "that epoch's mined negatives; it cannot be resumed exactly")
            return memo["hard_negatives"]
        import jax

        pool = self.source.cut(plan.pool_film, plan.pool_row, plan.pool_col)
        # The network's lesion margin of each candidate, as the scorer computes any patch's (no TTA).
        scores = Scorer(self.model, host_variables(state), FilmScoring()).patch_margins(pool)
        chosen = hardest(scores, len(plan.hard_slots))
        if jax.process_count() > 1:  # every process cuts its share of the same batches
            from jax.experimental import multihost_utils

            chosen = multihost_utils.broadcast_one_to_all(chosen)
        memo.clear()
        memo.update({"hard_negatives_epoch": epoch, "hard_negatives": [int(i) for i in chosen]})
        return memo["hard_negatives"]
