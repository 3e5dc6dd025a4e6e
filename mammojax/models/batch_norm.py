"""BatchNorm whose per-channel sums are matrix-vector products.

Same variables (``params/scale``, ``params/bias``, ``batch_stats/mean``,
``batch_stats/var``), the same function and the same running-average update
as ``flax.linen.BatchNorm``; only *how* the batch statistics and their
gradients are summed differs. The variance is taken about the mean (two
passes, the second reusing the centred values the output needs anyway):
the dot-product sums round a little more than XLA's reductions, and
``E[x^2] - E[x]^2`` would amplify that where a channel's mean dwarfs its spread.

Why: XLA:CPU (jaxlib 0.10.2) lowers the reductions over ``(batch, height,
width)`` of a channels-last tensor to windowed and looped reductions that ran
at 3-5 ns per element, and autodiff adds three more such reductions per
BatchNorm in the backward pass. In a ResNet-18 training step at batch 16,
224 px, they were about a quarter of the step (profile in
scripts/bench_train.py's notes). A product with a vector of ones, ``ones(N) @
x.reshape(N, C)``, goes to the BLAS-like dot kernels instead, multi-threaded
and vectorised along the contiguous channel axis. The backward pass is written
by hand (a ``custom_vjp``) so its two reductions take the same route.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _stats_dtype(dtype) -> Any:
    """At least float32 (bfloat16 activations are summed in float32; float64 stays float64)."""
    return jnp.promote_types(dtype, jnp.float32)


def channel_sums(x: jax.Array) -> jax.Array:
    """Sum over every axis but the last (at least float32), as ``ones @ x.reshape(-1, C)``."""
    flat = x.reshape(-1, x.shape[-1])
    ones = jnp.ones((flat.shape[0],), flat.dtype)
    return jnp.dot(ones, flat, preferred_element_type=_stats_dtype(flat.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def normalize_batch(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float):
    """``(y, mean, var)``: ``x`` normalised with its own per-channel batch statistics.

    ``mean`` and ``var`` (biased, float32) are returned for the running
    averages; they carry no gradient (the caller only stores them).
    """
    y, mean, var, _ = _normalize_forward(x, scale, bias, epsilon)
    return y, mean, var


def _normalize_forward(x, scale, bias, epsilon):
    count = x.size // x.shape[-1]
    wide = _stats_dtype(x.dtype)
    mean = channel_sums(x) / count
    centered = x.astype(wide) - mean
    var = channel_sums(jnp.square(centered)) / count
    inv = jax.lax.rsqrt(var + epsilon)
    y = centered * (inv * scale) + bias
    return y.astype(x.dtype), mean, var, inv


def _normalize_fwd(x, scale, bias, epsilon):
    y, mean, var, inv = _normalize_forward(x, scale, bias, epsilon)
    return (y, mean, var), (x, scale, mean, inv)


def _normalize_bwd(epsilon, residuals, cotangents):
    x, scale, mean, inv = residuals
    wide = _stats_dtype(x.dtype)
    g = cotangents[0].astype(wide)  # mean/var feed only the running averages: no gradient
    count = x.size // x.shape[-1]
    xhat = (x.astype(wide) - mean) * inv
    d_bias = channel_sums(g)
    d_scale = channel_sums(g * xhat)
    dx = (inv * scale) * (g - d_bias / count - xhat * (d_scale / count))
    return dx.astype(x.dtype), d_scale.astype(scale.dtype), d_bias.astype(scale.dtype)


normalize_batch.defvjp(_normalize_fwd, _normalize_bwd)


class BatchNorm(nn.Module):
    """Drop-in for ``nn.BatchNorm(use_running_average=..., momentum=..., epsilon=...)`` on the last axis."""

    use_running_average: bool
    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
        wide = jnp.promote_types(self.param_dtype, jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), wide))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), wide))
        x = x.astype(self.dtype)
        if self.use_running_average:
            inv = jax.lax.rsqrt(ra_var.value + self.epsilon)
            y = (x.astype(_stats_dtype(x.dtype)) - ra_mean.value) * (inv * scale) + bias
            return y.astype(self.dtype)
        y, mean, var = normalize_batch(x, scale.astype(wide), bias.astype(wide), self.epsilon)
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * jax.lax.stop_gradient(mean)
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * jax.lax.stop_gradient(var)
        return y
