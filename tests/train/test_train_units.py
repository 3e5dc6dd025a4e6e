"""Loss, optimizer schedule and mixed precision pieces of the trainer."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from mammojax.config import base_config
from mammojax.train.losses import cross_entropy, inverse_frequency_weights
from mammojax.train.optim import learning_rate_schedule, make_optimizer


def test_inverse_frequency_weights_balance_classes():
    labels = np.array([0] * 30 + [1] * 10)
    w = inverse_frequency_weights(labels, 2)
    np.testing.assert_allclose(w, [40 / 60, 40 / 20])
    assert w[0] * 30 == pytest.approx(w[1] * 10)  # each class carries the same total weight


def test_cross_entropy_matches_hand_computation():
    logits = np.array([[2.0, -1.0], [0.5, 0.5], [-1.0, 3.0]], np.float32)
    labels = np.array([0, 1, 1])
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    per = -log_p[np.arange(3), labels]
    assert float(cross_entropy(logits, labels)) == pytest.approx(per.mean(), rel=1e-6)
    weights = np.array([2.0, 0.5], np.float32)
    w = weights[labels]
    assert float(cross_entropy(logits, labels, class_weights=weights)) == pytest.approx(
        (per * w).sum() / w.sum(), rel=1e-6)
    # Smoothing 0.2 over 2 classes: targets 0.9 / 0.1.
    targets = np.where(np.eye(2)[labels] == 1, 0.9, 0.1)
    assert float(cross_entropy(logits, labels, label_smoothing=0.2)) == pytest.approx(
        -(targets * log_p).sum(1).mean(), rel=1e-6)


def test_warmup_then_cosine_schedule():
    optim = base_config().optim
    optim.lr, optim.warmup_epochs, optim.schedule = 1e-3, 1.0, "cosine"
    schedule = learning_rate_schedule(optim, steps_per_epoch=10, epochs=5)
    lrs = np.array([float(schedule(i)) for i in range(51)])
    assert lrs[0] == pytest.approx(1e-4) and np.all(np.diff(lrs[:11]) > 0)  # linear ramp
    assert lrs[10] == pytest.approx(1e-3)
    assert np.all(np.diff(lrs[10:]) <= 1e-12) and lrs[50] == pytest.approx(0.0, abs=1e-9)
    assert float(schedule(30)) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 20 / 40)), rel=1e-5)


def test_gradient_clipping_caps_the_update():
    optim = base_config().optim
    optim.name, optim.lr, optim.grad_clip_norm, optim.weight_decay = "adamw", 1.0, 1.0, 0.0
    tx, _ = make_optimizer(optim, steps_per_epoch=1, epochs=1)
    params = {"w": np.zeros(4, np.float32)}
    # Through the clip, a huge gradient reaches Adam with norm 1.0; Adam's first step is lr*sign.
    updates, _ = tx.update({"w": np.full(4, 1e6, np.float32)}, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -1.0, rtol=1e-5)


def test_unknown_optimizer_is_a_config_error():
    from mammojax.errors import ConfigError

    optim = base_config().optim
    optim.name = "sgdd"
    with pytest.raises(ConfigError, match="unknown optim.name 'sgdd'"):
        make_optimizer(optim, steps_per_epoch=1, epochs=1)


def test_bfloat16_step_keeps_float32_params():
    from mammojax import models
    from mammojax.train import sharding
    from mammojax.train.state import create_train_state, jit_steps

    mesh = sharding.make_mesh(jax.devices()[:1])
    model = models.create_model("resnet18", dtype="bfloat16")
    tx, _ = make_optimizer(base_config().optim, steps_per_epoch=1, epochs=1)
    state = create_train_state(model, tx, rng=jax.random.key(0), image_size=32, mesh=mesh)
    train_step = jit_steps(state, mesh, label_smoothing=0.0)
    rng = np.random.default_rng(0)
    batch = {"image": rng.normal(size=(4, 32, 32, 1)).astype(np.float32),
             "label": np.array([0, 1, 0, 1], np.int32)}
    before = np.asarray(state.params["head"]["kernel"]).copy()
    state, metrics = train_step(state, sharding.global_batch(batch, mesh), np.ones(2, np.float32))
    assert np.isfinite(float(metrics["loss"]))
    dtypes = {leaf.dtype for leaf in jax.tree_util.tree_leaves((state.params, state.opt_state))
              if hasattr(leaf, "dtype") and leaf.dtype.kind == "f"}
    assert dtypes == {np.dtype("float32")}
    assert not np.array_equal(before, np.asarray(state.params["head"]["kernel"]))
    from mammojax.scoring import FilmScoring, Scorer

    scorer = Scorer(model, {"params": state.params, "batch_stats": state.batch_stats}, FilmScoring())
    assert np.isfinite(scorer.logits(batch["image"])).all()  # a bfloat16 model scores in float32
