"""Checking a run's config before any data is read or file written.

:func:`validate_config` checks names against the registries that will use
them (models, optimizers, schedules, trainers, datasets and their tasks,
threshold policies, ...), numbers against their ranges and paths for
existence, so a misspelt model name fails in seconds, before the data are
decoded, and leaves no workdir behind. ``mammojax train``, ``mammojax cv``
and the quickstart call it. It lives above the trainers because it reads
their registry; :mod:`mammojax.config` (defaults, loading, overrides) stays
below everything that reads a config.
"""

from __future__ import annotations

import difflib
import math

import ml_collections

from mammojax import runtime
from mammojax.checkpoint import read_meta
from mammojax.data.preprocess import input_shape
from mammojax.data.records import check_dataset_request, datasets_with_lesion_circles, has_lesion_circles
from mammojax.errors import ConfigError, MammojaxError
from mammojax.evaluation.aggregate import AGGREGATES
from mammojax.evaluation.thresholds import POLICIES
from mammojax.film_scoring import KINDS
from mammojax.train.trainers import TRAINERS

_MISSING = object()


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks a run's names and numbers before any data is read or file written.

    Names are checked against the registries that will use them (models,
    optimizers, schedules, datasets and their tasks, threshold policies, ...),
    numbers against their ranges, paths for existence; a misspelt model name
    fails here in seconds instead of after the data are decoded, and leaves
    no workdir behind. All problems go into one ``ConfigError`` line. Fields
    an older config lacks are not checked. Imports the model registry (so
    JAX): the XLA flags are set first.
    """
    runtime.setup(compilation_cache=False)  # XLA flags must be in place before JAX loads
    # These registries' modules import JAX (flax, optax, orbax) at the top: only after runtime.setup().
    from mammojax import models
    from mammojax.explain.cam import CAM_METHODS
    from mammojax.models.common import DTYPES, HEAD_POOLINGS
    from mammojax.train.checkpointing import BEST_MODES
    from mammojax.train.losses import CAM_LOSSES
    from mammojax.train.optim import OPTIMIZERS, SCHEDULES

    problems: list[str] = []

    def value(key: str):
        section, _, leaf = key.rpartition(".")
        node = config
        for part in filter(None, section.split(".")):
            node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
        return node.get(leaf, _MISSING) if isinstance(node, ml_collections.ConfigDict) else _MISSING

    def choice(key: str, valid) -> None:
        got = value(key)
        if got is _MISSING or got in valid:
            return
        close = difflib.get_close_matches(str(got), [str(v) for v in valid], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        problems.append(f"{key}={got!r} is unknown ({hint}valid: {', '.join(map(str, valid))})")

    def number(key: str, low: float, high: float = math.inf, *, low_open: bool = False,
               high_open: bool = False) -> None:
        got = value(key)
        if got is _MISSING:
            return
        below = got <= low if low_open else got < low
        above = got >= high if high_open else got > high
        if isinstance(got, bool) or not isinstance(got, (int, float)) or below or above:
            if high == math.inf:
                wanted = f"{'>' if low_open else '>='} {low:g}"
            else:
                wanted = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            problems.append(f"{key}={got!r} must be {wanted}")

    choice("model.name", list(models.MODELS))
    choice("model.head_pooling", HEAD_POOLINGS)
    choice("model.dtype", list(DTYPES))
    choice("optim.name", OPTIMIZERS)
    choice("optim.schedule", SCHEDULES)
    choice("train.best_mode", BEST_MODES)
    choice("train.recipe", list(TRAINERS))
    choice("eval.scoring", KINDS)
    choice("eval.threshold_policy", POLICIES)
    choice("eval.patient_aggregate", AGGREGATES)
    choice("explain.method", list(CAM_METHODS))
    choice("explain.layer", models.FEATURE_NAMES)
    for key in ("data.max_pixels", "data.synthetic_count", "train.batch_size",
                "train.eval_batch_size", "train.epochs", "train.log_every_steps"):
        number(key, 0, low_open=True)
    for key in ("optim.weight_decay", "optim.warmup_epochs", "optim.grad_clip_norm",
                "train.checkpoint_every_steps", "train.checkpoint_every_minutes", "eval.bootstrap",
                "data.num_folds"):
        number(key, 0)
    if value("data.image_size") is not _MISSING:
        try:
            input_shape(value("data.image_size"), name="data.image_size")
        except MammojaxError as err:
            problems.append(str(err))
    number("optim.lr", 0, low_open=True)
    number("optim.label_smoothing", 0, 1, high_open=True)
    number("data.val_fraction", 0, 1, high_open=True)
    number("data.test_fraction", 0, 1, high_open=True)
    number("eval.tau", 0, 1)
    number("eval.target", 0, 1, low_open=True, high_open=True)
    fractions = value("data.val_fraction"), value("data.test_fraction")
    if _MISSING not in fractions and all(isinstance(f, (int, float)) for f in fractions) \
            and sum(fractions) >= 1:
        problems.append("data.val_fraction + data.test_fraction must be below 1 (no training data left)")
    folds, fold = value("data.num_folds"), value("data.fold")
    if isinstance(folds, int) and folds == 1:
        problems.append("data.num_folds=1 is not cross-validation (use 0 or at least 2)")
    if isinstance(folds, int) and folds >= 2 and isinstance(fold, int) and not 0 <= fold < folds:
        problems.append(f"data.fold={fold} is outside [0, {folds})")
    choice("train.cam_loss", list(CAM_LOSSES))
    number("train.cam_loss_weight", 0)
    weight = value("train.cam_loss_weight")
    if isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight > 0:
        guided = f"train.cam_loss_weight={weight:g} (explanation-guided training)"
        if value("train.recipe") not in (_MISSING, "whole_image"):
            problems.append(f"{guided} needs train.recipe='whole_image', not {value('train.recipe')!r}")
        if value("explain.layer") == "pre_logits":
            problems.append(f"{guided} needs a spatial explain.layer (stem, stage1..stage4), not 'pre_logits'")
        dataset = value("data.dataset")
        if not value("data.prepared") and dataset is not _MISSING:
            try:
                circles = has_lesion_circles(dataset)
            except MammojaxError:
                circles = True  # an unknown dataset is reported below
            if not circles:
                problems.append(f"{guided} needs lesion circles; dataset {dataset!r} has none "
                                f"(datasets with them: {', '.join(datasets_with_lesion_circles())})")
    if value("train.recipe") == "patches" and "patch" not in config:
        problems.append("train.recipe='patches' needs a 'patch' section (see configs/mias.py)")
    if value("data.dataset") is not _MISSING:
        try:
            check_dataset_request(config.data.dataset, value("data.data_dir") or "",
                                  task=value("data.task") or "default")
        except MammojaxError as err:
            problems.append(str(err))
    init = value("model.init_checkpoint")
    if init and init is not _MISSING:
        try:
            trained = read_meta(init)["model"]["name"]
        except MammojaxError as err:
            problems.append(f"model.init_checkpoint: {err}")
        else:
            if trained != value("model.name"):
                problems.append(f"model.init_checkpoint {init} holds model {trained!r}, "
                                f"not model.name={value('model.name')!r}")
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))
