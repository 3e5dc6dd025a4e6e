"""The whole-image trainer (``train.recipe = "whole_image"``, the paper's recipe).

What it feeds the core loop (:func:`mammojax.train.loop.fit`): augmented
whole films from the prepared dataset (:func:`mammojax.data.pipeline.train_batches`,
each batch a pure function of (seed, epoch, step)), one step per full batch of
training films, and a validation pass over the validation women's films after
every epoch; the best epoch by ``train.best_metric`` becomes ``best/``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from mammojax.data.pipeline import annotated_count, guided, steps_per_epoch, train_batches
from mammojax.errors import ConfigError
from mammojax.evaluation import shortcuts
from mammojax.train.data import prepare_training_data
from mammojax.train.loop import Feed, fit, host_variables
from mammojax.train.validation import evaluate


def train(config, workdir: str | Path, *, data=None, identity_extra: dict | None = None) -> dict:
    """Trains ``config`` in ``workdir``; returns :func:`mammojax.train.loop.fit`'s summary.

    ``data`` (a :class:`~mammojax.train.data.TrainingData`) replaces the
    config's dataset and split: cross-validation passes each fold's films.
    ``identity_extra`` (JSON values) is added to what a checkpoint in
    ``workdir`` must match to be resumed, e.g. which films a fold trains on.
    """
    # Imports orbax and JAX at the top: this module stays light until a run starts (after runtime.setup()).
    from mammojax.train.checkpointing import run_identity

    identity = {**run_identity(config), **(identity_extra or {})}
    return fit(config, workdir, functools.partial(_prepare, data=data), identity=identity)


def _prepare(run, *, data):
    import jax

    config = run.config
    if data is None:
        data = prepare_training_data(config, run.workdir, progress=run.is_main)
    num_classes = int(config.model.num_classes)
    weights = data.class_weights(num_classes) if config.optim.class_weighting \
        else np.ones(num_classes, np.float32)
    eval_batch = int(config.train.eval_batch_size)
    description = ""
    if guided(config):  # explanation-guided: the CAM loss needs lesion circles on some training films
        annotated = annotated_count(data.train)
        if not annotated:
            raise ConfigError(f"train.cam_loss_weight={config.train.cam_loss_weight} needs positive training "
                              f"films with lesion circles; {data.train.path} has none among its "
                              f"{data.train.num_examples} training films")
        description = (f"explanation-guided ({config.train.cam_loss} loss x {config.train.cam_loss_weight} on "
                       f"{config.explain.method} {config.explain.layer}): {annotated} of "
                       f"{data.train.num_examples} training films have lesion circles")

    def batches(state, epoch: int, start_step: int, memo: dict):
        return train_batches(data.train, config, epoch=epoch, start_step=start_step,
                             process_index=jax.process_index(), process_count=jax.process_count())

    def validate(state) -> dict:
        return evaluate(run.model, host_variables(state), data.val, config, batch_size=eval_batch)

    # The metadata-only model of the training women travels in best/ for eval's shortcut checks.
    return Feed(steps_per_epoch=steps_per_epoch(data.train, config), batches=batches, validate=validate,
                class_weights=weights, description=description,
                best_meta=shortcuts.checkpoint_entry(data.train.records, seed=int(config.seed)))
