"""The train state and the jitted steps that advance and evaluate it."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax.training import train_state

from mammojax.data.preprocess import input_shape
from mammojax.train.losses import CamGuidance, cross_entropy, guided_forward
from mammojax.train.sharding import batch_sharded, replicated


class TrainState(train_state.TrainState):
    """Flax's TrainState plus BatchNorm statistics and a dropout key.

    ``rng`` is a raw ``uint32[2]`` key (checkpointable as a plain array); the
    key for step ``n`` is ``fold_in(rng, n)``, so a resumed run draws exactly
    what an uninterrupted one would.
    """

    batch_stats: Any
    rng: jax.Array


def create_train_state(model, tx, *, rng: jax.Array, image_size, mesh) -> TrainState:
    """Initializes parameters and optimizer state directly in their replicated placement.

    ``image_size``: the input, S, "HxW" or (H, W) (:func:`mammojax.data.preprocess.input_shape`).
    """
    init_key, dropout_key = jax.random.split(rng)
    shape = input_shape(image_size, minimum=1)  # the data's minimum is checked where data is read

    def init():
        x = jnp.zeros((1, *shape, model.in_channels), jnp.float32)
        variables = model.init(init_key, x, train=False)
        return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                                 batch_stats=variables.get("batch_stats", {}),
                                 rng=jax.random.key_data(dropout_key))

    abstract = jax.eval_shape(init)
    shardings = jax.tree_util.tree_map(lambda _: replicated(mesh), abstract)
    return jax.jit(init, out_shardings=shardings)()


def train_step(state: TrainState, batch: dict, class_weights: jax.Array | None,
               label_smoothing: float = 0.0) -> tuple[TrainState, dict]:
    """One optimizer step on a (globally sharded) batch; returns the new state and metrics."""
    dropout_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def loss_fn(params):
        (logits, _), updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
            mutable=["batch_stats"], rngs={"dropout": dropout_key})
        loss = cross_entropy(logits, batch["label"], label_smoothing=label_smoothing,
                             class_weights=class_weights)
        return loss, updates["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32)))
                             for g in jax.tree_util.tree_leaves(grads)))
    return new_state, {"loss": loss, "grad_norm": grad_norm}


def guided_train_step(state: TrainState, batch: dict, class_weights: jax.Array | None,
                      label_smoothing: float = 0.0, *, guidance: CamGuidance) -> tuple[TrainState, dict]:
    """:func:`train_step` plus ``guidance.weight`` x the CAM loss of the films with a
    ``batch["lesion_mask"]`` ``(B, H, W)`` bool (explanation-guided training).

    One training-mode forward pass gives the logits of the cross-entropy and,
    through :func:`mammojax.explain.cam.compute_cam`, the heatmaps of the CAM
    loss (:func:`mammojax.train.losses.guided_forward`); the parameter gradient
    of the sum goes through the heatmap's own gradient (second order, by
    plain ``jax.grad``). ``loss`` is the sum; ``cam_loss`` its unweighted CAM term.
    """
    dropout_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        logits, cam_loss, updates = guided_forward(guidance, variables, batch["image"], batch["lesion_mask"],
                                                   rngs={"dropout": dropout_key})
        loss = cross_entropy(logits, batch["label"], label_smoothing=label_smoothing,
                             class_weights=class_weights)
        return loss + guidance.weight * cam_loss, (updates["batch_stats"], cam_loss)

    (loss, (batch_stats, cam_loss)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32)))
                             for g in jax.tree_util.tree_leaves(grads)))
    return new_state, {"loss": loss, "grad_norm": grad_norm, "cam_loss": cam_loss}


def jit_steps(state: TrainState, mesh, *, label_smoothing: float, guidance: CamGuidance | None = None):
    """Jitted ``train_step(state, batch, class_weights)``; with ``guidance``
    (:func:`mammojax.train.losses.cam_guidance`), :func:`guided_train_step`
    instead (its batches carry ``lesion_mask``). Without it the program is
    the plain step's, unchanged.

    (Scoring, validation included, is :class:`mammojax.scoring.Scorer`'s.)

    The state is donated (its buffers are reused for the new state) and stays
    replicated; batches are split over ``data``; outputs every process needs
    (metrics, logits) come back replicated.
    """
    rep, split = replicated(mesh), batch_sharded(mesh)
    state_sharding = jax.tree_util.tree_map(lambda _: rep, state)
    step = (functools.partial(train_step, label_smoothing=label_smoothing) if guidance is None
            else functools.partial(guided_train_step, label_smoothing=label_smoothing, guidance=guidance))
    train = jax.jit(step, in_shardings=(state_sharding, split, rep),
                    out_shardings=(state_sharding, rep), donate_argnums=0)
    return train
