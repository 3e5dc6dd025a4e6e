"""Training losses: cross-entropy with label smoothing and class weights, and the
explanation-guided losses on a heatmap (:data:`CAM_LOSSES`, ``train.cam_loss_weight``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mammojax.explain.cam import EMPTY_MAP_PEAK, compute_cam, upsample_cam


def inverse_frequency_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class weights ``N / (K * n_c)``: every class contributes equally.

    A class absent from ``labels`` gets weight 1 (it cannot contribute anyway),
    so the weights stay finite.
    """
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes).astype(np.float64)
    total = counts.sum()
    weights = np.where(counts > 0, total / (num_classes * np.maximum(counts, 1)), 1.0)
    return weights.astype(np.float32)


def cross_entropy(logits: jax.Array, labels: jax.Array, *, label_smoothing: float = 0.0,
                  class_weights: jax.Array | None = None) -> jax.Array:
    """Mean cross-entropy over the batch, computed in (at least) float32.

    With ``class_weights`` each example is weighted by its true class's weight
    and the sum is divided by the total weight (PyTorch's weighted-mean
    convention), so the loss scale does not depend on the batch's class mix.
    """
    num_classes = logits.shape[-1]
    wide = jnp.promote_types(logits.dtype, jnp.float32)  # float64 (gradient tests) stays float64
    logits = logits.astype(wide)  # bf16 logits would lose precision in log-softmax
    targets = jax.nn.one_hot(labels, num_classes, dtype=wide)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    per_example = optax.softmax_cross_entropy(logits, targets)
    if class_weights is None:
        return per_example.mean()
    w = jnp.asarray(class_weights, wide)[labels]
    return (per_example * w).sum() / w.sum()


# Explanation-guided training (train.cam_loss_weight > 0): a loss on the heatmap itself.
# Each names a per-film penalty of the evidence outside the film's lesion circles.
CAM_LOSSES = {
    # Rao et al., ICCV 2023 ("energy-based pointing game" loss): 1 - the share of the
    # explain.method heatmap's mass on the explain.layer map that falls inside the lesion.
    "energy": "heatmap mass outside the lesion (Rao et al. 2023)",
    # Ross et al., IJCAI 2017 ("right for the right reasons"): the squared input gradient
    # of the summed log-probabilities, summed over the pixels outside the lesion.
    "rrr": "squared input gradients outside the lesion (Ross et al. 2017)",
}


@dataclasses.dataclass(frozen=True, eq=False)
class CamGuidance:
    """What the guided train step adds to the cross-entropy: ``weight`` x the mean
    ``loss`` (a key of :data:`CAM_LOSSES`) over the films with a lesion mask.

    The heatmap is ``compute_cam(model, ..., method, layer, target_class)`` on
    the step's own training-mode forward pass (one pass for both losses).
    """

    model: Any
    weight: float
    loss: str = "energy"
    method: str = "gradcam"
    layer: str = "stage4"
    target_class: int = 1


def cam_guidance(config, model) -> CamGuidance | None:
    """The run's :class:`CamGuidance` from ``config.train.cam_loss*`` and ``config.explain``
    (the heatmap the checkpoint shows); None for weight 0: the plain step."""
    weight = float(config.train.cam_loss_weight)
    if weight == 0:
        return None
    return CamGuidance(model=model, weight=weight, loss=str(config.train.cam_loss),
                       method=str(config.explain.method), layer=str(config.explain.layer))


def energy_loss(heatmaps: jax.Array, masks: jax.Array) -> jax.Array:
    """Per film ``(B,)``: 1 - (heatmap mass inside the mask) / (total mass).

    ``heatmaps`` ``(B, H, W)`` non-negative (Grad-CAM, at the masks' size),
    ``masks`` ``(B, H, W)`` bool. The ratio does not depend on the map's
    scale, so raw maps are used (no peak normalisation, which has no useful
    gradient). An empty map scores 1 (nothing inside) with zero gradient;
    the double ``where`` keeps its derivative finite.
    """
    total = jnp.sum(heatmaps, axis=(1, 2))
    inside = jnp.sum(heatmaps * masks.astype(heatmaps.dtype), axis=(1, 2))
    nonempty = total > EMPTY_MAP_PEAK
    return jnp.where(nonempty, 1.0 - inside / jnp.where(nonempty, total, 1.0), 1.0)


def rrr_penalty(input_grads: jax.Array, masks: jax.Array) -> jax.Array:
    """Per film ``(B,)``: the sum of squared input gradients over the pixels outside the mask.

    ``input_grads`` ``(B, H, W)`` (one channel), ``masks`` ``(B, H, W)`` bool.
    """
    outside = (~masks).astype(input_grads.dtype)
    return jnp.sum(jnp.square(input_grads) * outside, axis=(1, 2))


def masked_mean(values: jax.Array, valid: jax.Array) -> jax.Array:
    """Mean of ``values`` over the ``valid`` films; 0 (and no gradient) when there are none."""
    weights = valid.astype(values.dtype)
    return jnp.sum(jnp.where(valid, values, 0.0)) / jnp.maximum(jnp.sum(weights), 1.0)


def guided_forward(guidance: CamGuidance, variables: dict, images: jax.Array, masks: jax.Array, *,
                   rngs=None) -> tuple[jax.Array, jax.Array, dict]:
    """One training-mode forward pass: ``(logits, CAM loss, updated batch_stats collections)``.

    The CAM loss is the mean over the films whose ``masks`` ``(B, H, W)``
    are not empty (:func:`masked_mean`): a film without an annotation adds
    nothing to it or to its gradient, and the mean is over the annotated
    films only, wherever the batch's devices hold them.
    """
    model = guidance.model
    if guidance.loss == "energy":
        (heatmaps, logits), updates = compute_cam(
            model, variables, images, method=guidance.method, layer=guidance.layer,
            target_class=guidance.target_class, normalize=False, train=True, rngs=rngs,
            mutable=["batch_stats"])
        per_film = energy_loss(upsample_cam(heatmaps, masks.shape[1:3]), masks)
    elif guidance.loss == "rrr":
        def forward(x):
            (logits, _), updates = model.apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])
            return logits, updates

        logits, pullback, updates = jax.vjp(forward, images, has_aux=True)
        wide = jnp.promote_types(logits.dtype, jnp.float32)
        summed_log_probs = lambda z: jnp.sum(jax.nn.log_softmax(z.astype(wide)))  # noqa: E731
        (input_grads,) = pullback(jax.grad(summed_log_probs)(logits).astype(logits.dtype))
        per_film = rrr_penalty(input_grads[..., 0].astype(wide), masks)
    else:
        raise ValueError(f"unknown CAM loss {guidance.loss!r}; valid: {', '.join(CAM_LOSSES)}")
    return logits, masked_mean(per_film, jnp.any(masks, axis=(1, 2))), updates
