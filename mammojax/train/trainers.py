"""The trainers, by name: ``config.train.recipe`` picks one, and :func:`train_and_evaluate` runs it.

A plain table (as scenic's ``train_lib/trainers.py``), filled here and
nowhere else. Every trainer is ``trainer(config, workdir) -> summary`` and
runs on the one core loop (:func:`mammojax.train.loop.fit`); what differs is
only what it feeds that loop. The table sits above the trainers and the loop:
they import nothing from here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mammojax import runtime
from mammojax.errors import ConfigError
from mammojax.train import patch_trainer, whole_image
from mammojax.train.data import adopt_prepared_options

TRAINERS: dict[str, Callable[..., dict]] = {
    "whole_image": whole_image.train,  # augmented whole films; the best epoch is kept (the paper)
    "patches": patch_trainer.train,  # lesion-centred patches; a fixed schedule; films scored by windows
}


def get_trainer(name: str) -> Callable[..., dict]:
    """The trainer called ``name``; an unknown name is a ConfigError listing the valid ones."""
    if name not in TRAINERS:
        raise ConfigError(f"unknown train.recipe {name!r}; valid: {', '.join(sorted(TRAINERS))}")
    return TRAINERS[name]


def train_and_evaluate(config, workdir: str | Path) -> dict:
    """Trains ``config`` in ``workdir`` with the trainer ``train.recipe`` names.

    Returns :func:`mammojax.train.loop.fit`'s summary.
    """
    runtime.setup()
    adopt_prepared_options(config)  # before the run's identity and model are fixed

    return get_trainer(config.train.recipe)(config, workdir)


__all__ = ["TRAINERS", "get_trainer", "train_and_evaluate"]
