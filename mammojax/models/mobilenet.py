"""MobileNet-V2 (Sandler et al. 2018), width 1.0, exactly as torchvision builds it.

Modules are named after torchvision's ``features.N`` indices (``features_0``
... ``features_18``) so converted weights map by index. Features: ``stem`` is
the first conv plus the first (16-channel) block at stride 2; the stages end
where the resolution next halves (strides 4, 8, 16, 32); ``stage4`` ends with
the final 1x1 conv to 1280 channels + BN + ReLU6. torchvision's dropout
before the classifier is left out: training here passes no dropout RNG.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mammojax.models.common import BatchNorm, Conv, classify, match_channels

# torchvision's inverted residual settings: expansion t, channels c, repeats n, stride s.
INVERTED_RESIDUAL_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
# Index of the last torchvision ``features`` module in each named feature.
STAGE_ENDS = {"stem": 1, "stage1": 3, "stage2": 6, "stage3": 13, "stage4": 18}


class ConvBNReLU6(nn.Module):
    features: int
    kernel: int
    stride: int = 1
    groups: int = 1
    activation: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = Conv(self.features, self.kernel, stride=self.stride, groups=self.groups,
                 dtype=self.dtype, name="conv")(x)
        x = BatchNorm(train, dtype=self.dtype, name="bn")(x)
        return nn.relu6(x) if self.activation else x


class InvertedResidual(nn.Module):
    """Expand (1x1, unless t = 1), depthwise 3x3, linear 1x1 projection; residual if shapes match."""

    features: int
    stride: int
    expand_ratio: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        hidden = int(round(x.shape[-1] * self.expand_ratio))
        y = x
        if self.expand_ratio != 1:
            y = ConvBNReLU6(hidden, 1, dtype=self.dtype, name="expand")(y, train)
        y = ConvBNReLU6(hidden, 3, stride=self.stride, groups=hidden, dtype=self.dtype,
                        name="depthwise")(y, train)
        y = ConvBNReLU6(self.features, 1, activation=False, dtype=self.dtype, name="project")(y, train)
        if self.stride == 1 and x.shape[-1] == self.features:
            return x + y
        return y


class MobileNetV2(nn.Module):
    num_classes: int = 2
    in_channels: int = 1
    head_pooling: str = "avg"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        features = {}
        ends = {index: name for name, index in STAGE_ENDS.items()}
        x = match_channels(x, self.in_channels).astype(self.dtype)
        x = ConvBNReLU6(STEM_CHANNELS, 3, stride=2, dtype=self.dtype, name="features_0")(x, train)
        index = 1
        for expand_ratio, channels, repeats, stride in INVERTED_RESIDUAL_SETTINGS:
            for repeat in range(repeats):
                x = InvertedResidual(channels, stride if repeat == 0 else 1, expand_ratio,
                                     dtype=self.dtype, name=f"features_{index}")(x, train)
                if index in ends:
                    x = features[ends[index]] = self.perturb(ends[index], x)
                index += 1
        x = ConvBNReLU6(LAST_CHANNELS, 1, dtype=self.dtype, name=f"features_{index}")(x, train)
        x = features[ends[index]] = self.perturb(ends[index], x)
        logits, features["pre_logits"] = classify(self, x)
        return logits, features
