"""The trainers, by name: ``config.train.recipe`` picks one.

A plain table (as scenic's ``train_lib/trainers.py``), filled here and
nowhere else. Every trainer is ``trainer(config, workdir) -> summary`` and
runs on the one core loop (:func:`mammojax.train.loop.fit`); what differs is
only what it feeds that loop.
"""

from __future__ import annotations

from collections.abc import Callable

from mammojax.errors import ConfigError
from mammojax.train import patch_trainer, whole_image

TRAINERS: dict[str, Callable[..., dict]] = {
    "whole_image": whole_image.train,  # augmented whole films; the best epoch is kept (the paper)
    "patches": patch_trainer.train,  # lesion-centred patches; a fixed schedule; films scored by windows
}


def get_trainer(name: str) -> Callable[..., dict]:
    """The trainer called ``name``; an unknown name is a ConfigError listing the valid ones."""
    if name not in TRAINERS:
        raise ConfigError(f"unknown train.recipe {name!r}; valid: {', '.join(sorted(TRAINERS))}")
    return TRAINERS[name]
