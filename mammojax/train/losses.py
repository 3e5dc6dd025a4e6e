"""Classification loss: cross-entropy with label smoothing and class weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax


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
    """Mean cross-entropy over the batch, computed in float32.

    With ``class_weights`` each example is weighted by its true class's weight
    and the sum is divided by the total weight (PyTorch's weighted-mean
    convention), so the loss scale does not depend on the batch's class mix.
    """
    num_classes = logits.shape[-1]
    logits = logits.astype(jnp.float32)  # bf16 logits would lose precision in log-softmax
    targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    per_example = optax.softmax_cross_entropy(logits, targets)
    if class_weights is None:
        return per_example.mean()
    w = jnp.asarray(class_weights, jnp.float32)[labels]
    return (per_example * w).sum() / w.sum()
