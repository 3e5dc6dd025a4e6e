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
from mammojax.models.batch_norm import BatchNorm as FastBatchNorm
from mammojax.platform import detour_enabled

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


# XLA:CPU (jaxlib 0.10.2) computes a KxK convolution whose output is 2 pixels
# wide at 1-5 GFLOP/s instead of ~130: a 3x3, 512-channel conv on a 2x2 map
# (ResNet stage4 of a 64 px input) took 200 ms at batch 16, against 5.6 ms on
# a 3x3 map. Such maps are tiny, so they are computed as one matrix product
# over explicitly gathered patches (im2col) instead: same numbers, ~40x faster.
SMALL_MAP_MAX_SIDE = 2


def _nhwc_hwio(dimension_numbers) -> bool:
    return (dimension_numbers is not None and tuple(dimension_numbers.lhs_spec) == (0, 3, 1, 2)
            and tuple(dimension_numbers.rhs_spec) == (3, 2, 0, 1) and tuple(dimension_numbers.out_spec) == (0, 3, 1, 2))


def small_map_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                   dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """``lax.conv_general_dilated`` with two XLA:CPU detours, same numbers.

    Depthwise convolutions go to :func:`depthwise_conv` (detour
    ``depthwise_taps``); outputs 1-2 pixels wide take the im2col route
    (``small_map_im2col``, see ``SMALL_MAP_MAX_SIDE``), each where
    ``mammojax.platform`` has measured it faster. Flax's ``nn.Conv`` calls it
    through its ``conv_general_dilated`` field.
    """
    kh, kw = rhs.shape[0], rhs.shape[1]
    # Both detours handle exactly this case: channels-last, explicit padding, no dilation, a real window.
    plain_window = (not kwargs and not isinstance(padding, str) and _nhwc_hwio(dimension_numbers) and kh * kw > 1
                    and all(d == 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))))
    if (plain_window and feature_group_count > 1 and feature_group_count == lhs.shape[-1] == rhs.shape[-1]
            and detour_enabled("depthwise_taps")):
        return depthwise_conv(lhs, rhs, window_strides, padding)
    if (plain_window and feature_group_count == 1
            and 1 <= min(_window_output(lhs, rhs, window_strides, padding)) <= SMALL_MAP_MAX_SIDE
            and detour_enabled("small_map_im2col")):
        columns = jnp.concatenate(list(_window_taps(lhs, rhs, window_strides, padding)),
                                  axis=-1)  # (B, out_h, out_w, kh*kw*C): HWIO order
        return jnp.dot(columns, rhs.reshape(-1, rhs.shape[-1]), precision=precision)
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                        feature_group_count=feature_group_count, precision=precision, **kwargs)


def _window_output(lhs, rhs, window_strides, padding) -> tuple[int, int]:
    """Output height and width of a ``rhs``-sized window over padded ``lhs``."""
    (top, bottom), (left, right) = padding
    return ((lhs.shape[1] + top + bottom - rhs.shape[0]) // window_strides[0] + 1,
            (lhs.shape[2] + left + right - rhs.shape[1]) // window_strides[1] + 1)


def _window_taps(lhs, rhs, window_strides, padding):
    """For each kernel offset ``(i, j)`` in row-major order, the strided (zero-padded) input each output sees there."""
    (top, bottom), (left, right) = padding
    padded = jnp.pad(lhs, ((0, 0), (top, bottom), (left, right), (0, 0)))
    (sh, sw), (out_h, out_w) = window_strides, _window_output(lhs, rhs, window_strides, padding)
    for i in range(rhs.shape[0]):
        for j in range(rhs.shape[1]):
            yield padded[:, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw, :]


def depthwise_conv(lhs, rhs, window_strides, padding):
    """A depthwise (one filter per channel) convolution as a sum of shifted, scaled copies.

    Why: XLA:CPU runs grouped convolutions with one channel per group far
    below its dense rate (MobileNet-V2 took 147 ms per 224 px image for 0.61
    GFLOP, five times ResNet-18's 3.2 GFLOP). Written as kh*kw multiply-adds
    of strided window taps, it becomes one fused elementwise loop.
    """
    kw = rhs.shape[1]
    taps = _window_taps(lhs, rhs, window_strides, padding)
    return sum(tap * rhs[index // kw, index % kw, 0] for index, tap in enumerate(taps))


def Conv(features: int, kernel: int, *, stride: int = 1, pad: int | None = None, groups: int = 1,
         dtype: Any = jnp.float32, name: str | None = None) -> nn.Conv:
    """A bias-free convolution padded like torch's ``Conv2d(padding=kernel // 2)``."""
    # Explicit symmetric padding: Flax's "SAME" pads stride-2 convs asymmetrically.
    pad = kernel // 2 if pad is None else pad
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((pad, pad), (pad, pad)), feature_group_count=groups, use_bias=False,
                   kernel_init=conv_kernel_init, dtype=dtype, param_dtype=jnp.float32, name=name,
                   conv_general_dilated=small_map_conv)


def BatchNorm(train: bool, *, dtype: Any = jnp.float32, name: str | None = None) -> nn.Module:
    """Batch statistics in training, running averages otherwise (torch's momentum/eps).

    Where ``mammojax.platform`` measured detour ``batchnorm_dot_sums`` faster,
    :class:`mammojax.models.batch_norm.BatchNorm` (flax's BatchNorm with its sums
    computed as dot products); elsewhere flax's own. Same variables and function; the
    float32 roundings differ (tests/test_platform.py compares the two in float64).
    """
    module = FastBatchNorm if detour_enabled("batchnorm_dot_sums") else nn.BatchNorm
    options = {} if module is FastBatchNorm else {"use_fast_variance": True}
    return module(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                  dtype=dtype, param_dtype=jnp.float32, name=name, **options)


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """torch ``MaxPool2d(3, stride=2, padding=1)`` (padding never wins the max).

    The forward pass is XLA's windowed max; its gradient is autodiff's, or, where
    ``mammojax.platform`` measured detour ``maxpool_phase_grad`` faster,
    :func:`max_pool_phase_grad`'s.
    """
    return max_pool_phase_grad(x) if detour_enabled("maxpool_phase_grad") else _windowed_max(x)


@jax.custom_vjp
def max_pool_phase_grad(x: jax.Array) -> jax.Array:
    """:func:`max_pool_3x3_s2` with a hand-written gradient.

    The forward pass is XLA's windowed max. Its gradient is hand-written: the
    autodiff of a windowed max (``select_and_scatter``, or the scatter through
    interior padding that a sliced formulation gives) cost XLA:CPU ~0.4 s per
    ResNet-18 training step at batch 16, 224 px. Split into its four
    even/odd row/column phases, a stride-2 window touches each phase at unit
    stride, so the gradient is nine masked, unit-shifted adds and one interleave.
    """
    return _windowed_max(x)


def _windowed_max(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def _max_pool_forward(x):
    out = _windowed_max(x)
    return out, (x, out)


def _max_pool_backward(residuals, cotangent):
    x, out = residuals
    batch, height, width, channels = x.shape
    out_h, out_w = out.shape[1], out.shape[2]
    # Pad to an even (2*out+2) square grid: padded row r = 2a + p is phase p, index a.
    padded = jnp.pad(x, ((0, 0), (1, 2 * out_h + 1 - height), (1, 2 * out_w + 1 - width), (0, 0)),
                     constant_values=-jnp.inf)
    phases = padded.reshape(batch, out_h + 1, 2, out_w + 1, 2, channels)
    grads = {}
    claimed = jnp.zeros(out.shape, bool)
    for di in range(3):
        for dj in range(3):
            p, a0, q, b0 = di % 2, di // 2, dj % 2, dj // 2
            tap = phases[:, a0:a0 + out_h, p, b0:b0 + out_w, q, :]
            # The first maximum in window order takes the whole gradient, as in torch.
            hit = (tap == out) & ~claimed
            claimed = claimed | hit
            part = jnp.pad(jnp.where(hit, cotangent, 0), ((0, 0), (a0, 1 - a0), (b0, 1 - b0), (0, 0)))
            grads[p, q] = part if (p, q) not in grads else grads[p, q] + part
    rows = [jnp.stack([grads[p, 0], grads[p, 1]], axis=3) for p in (0, 1)]
    interleaved = jnp.stack(rows, axis=2).reshape(batch, 2 * out_h + 2, 2 * out_w + 2, channels)
    return (interleaved[:, 1:height + 1, 1:width + 1, :].astype(x.dtype),)


max_pool_phase_grad.defvjp(_max_pool_forward, _max_pool_backward)


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
    Returns ``(float32 logits, pre_logits)`` (float64 logits for a float64 model, in
    gradient tests): ``pre_logits`` is the global
    average of the map (passed through ``model.perturb`` before the head reads
    it, so its gradient is available with ``avg`` pooling).
    """
    num_classes, pooling, dtype = model.num_classes, model.head_pooling, model.dtype
    if pooling not in HEAD_POOLINGS:
        raise MammojaxError(f"unknown head_pooling {pooling!r}; valid: {', '.join(HEAD_POOLINGS)}")
    dense = nn.Dense(num_classes, kernel_init=head_kernel_init, dtype=dtype,
                     param_dtype=jnp.float32, name="head")
    pooled = model.perturb("pre_logits", jnp.mean(feature_map, axis=(1, 2)))
    wide = jnp.promote_types(dtype, jnp.float32)
    if pooling == "avg":
        return dense(pooled).astype(wide), pooled
    batch, height, width, _ = feature_map.shape
    position_logits = dense(feature_map).astype(wide)
    position_logits = position_logits.reshape(batch, height * width, num_classes)
    if pooling == "max":
        return jnp.max(position_logits, axis=1), pooled
    top, _ = jax.lax.top_k(jnp.swapaxes(position_logits, 1, 2), topk_count(height * width))
    return jnp.mean(top, axis=-1), pooled
