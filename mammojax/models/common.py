"""Building blocks every model in the zoo shares.

The layer settings here are torchvision's, so converted weights reproduce
torchvision's outputs: BatchNorm with torch momentum 0.1 (Flax keeps
``1 - 0.1``) and eps 1e-5; convolutions padded symmetrically as torch pads;
He-normal (fan-out) convolution kernels as torchvision initialises them.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mammojax.errors import MammojaxError

HEAD_POOLINGS = ("avg", "max", "topk")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# Fraction of stage4 positions whose logits are averaged by the "topk" head:
# a lesion covers a small part of a mammogram, so the evidence is local.
TOPK_FRACTION = 0.1

BN_MOMENTUM = 0.9  # torch momentum 0.1
BN_EPSILON = 1e-5

conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
head_kernel_init = nn.initializers.lecun_normal()


def compute_dtype(name: str) -> Any:
    """The JAX dtype for a config string; parameters always stay float32."""
    if name not in DTYPES:
        raise MammojaxError(f"unknown model dtype {name!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[name]


def Conv(features: int, kernel: int, *, stride: int = 1, pad: int | None = None, groups: int = 1,
         dtype: Any = jnp.float32, name: str | None = None) -> nn.Conv:
    """A bias-free convolution padded like torch's ``Conv2d(padding=kernel // 2)``."""
    # Explicit symmetric padding: Flax's "SAME" pads stride-2 convs asymmetrically.
    pad = kernel // 2 if pad is None else pad
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((pad, pad), (pad, pad)), feature_group_count=groups, use_bias=False,
                   kernel_init=conv_kernel_init, dtype=dtype, param_dtype=jnp.float32, name=name)


def BatchNorm(train: bool, *, dtype: Any = jnp.float32, name: str | None = None) -> nn.BatchNorm:
    """Batch statistics in training, running averages otherwise (torch's momentum/eps)."""
    return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                        dtype=dtype, param_dtype=jnp.float32, name=name)


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """torch ``MaxPool2d(3, stride=2, padding=1)`` (padding never wins the max)."""
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def match_channels(x: jax.Array, in_channels: int) -> jax.Array:
    """A 3-channel model sees a grey image as three identical channels."""
    if x.shape[-1] == in_channels:
        return x
    if x.shape[-1] == 1:
        return jnp.repeat(x, in_channels, axis=-1)
    raise ValueError(f"input has {x.shape[-1]} channels; the model takes 1 or {in_channels}")


def topk_count(positions: int) -> int:
    return max(1, round(TOPK_FRACTION * positions))


def classify(model: nn.Module, feature_map: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Pools the last feature map and applies one Dense layer named ``head``.

    Call it inside ``model``'s compact ``__call__`` so ``head`` belongs to the
    model; it reads ``num_classes``, ``head_pooling`` and ``dtype`` from it. ``avg`` is global average pooling. ``max`` and ``topk`` apply the
    same Dense layer at every position (a 1x1 convolution with the same
    parameters), then take the maximum or the mean of the top ~10% position
    logits per class, so a small lesion is not diluted by normal tissue.
    Returns ``(float32 logits, pre_logits)``: ``pre_logits`` is the global
    average of the map (passed through ``model.perturb`` before the head reads
    it, so its gradient is available with ``avg`` pooling).
    """
    num_classes, pooling, dtype = model.num_classes, model.head_pooling, model.dtype
    if pooling not in HEAD_POOLINGS:
        raise MammojaxError(f"unknown head_pooling {pooling!r}; valid: {', '.join(HEAD_POOLINGS)}")
    dense = nn.Dense(num_classes, kernel_init=head_kernel_init, dtype=dtype,
                     param_dtype=jnp.float32, name="head")
    pooled = model.perturb("pre_logits", jnp.mean(feature_map, axis=(1, 2)))
    if pooling == "avg":
        return dense(pooled).astype(jnp.float32), pooled
    batch, height, width, _ = feature_map.shape
    position_logits = dense(feature_map).astype(jnp.float32)
    position_logits = position_logits.reshape(batch, height * width, num_classes)
    if pooling == "max":
        return jnp.max(position_logits, axis=1), pooled
    top, _ = jax.lax.top_k(jnp.swapaxes(position_logits, 1, 2), topk_count(height * width))
    return jnp.mean(top, axis=-1), pooled
