"""ResNet (He et al. 2016) exactly as torchvision builds it, in Flax.

One generic :class:`ResNet`; each depth is a ``partial``. Parameter names
follow torchvision (``conv1``, ``bn1``, ``layer2_0/downsample_conv``, ...) so
:mod:`mammojax.weights` maps a state dict by renaming. The stem takes
``in_channels`` inputs: 1 for mammograms (the paper's model), 3 for
ImageNet-style weights, in which case a grey input is replicated.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mammojax.models.common import BatchNorm, Conv, classify, match_channels, max_pool_3x3_s2


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34); stride on the first."""

    features: int
    stride: int = 1
    dtype: Any = jnp.float32
    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        residual = x
        y = Conv(self.features, 3, stride=self.stride, dtype=self.dtype, name="conv1")(x)
        y = nn.relu(BatchNorm(train, dtype=self.dtype, name="bn1")(y))
        y = Conv(self.features, 3, dtype=self.dtype, name="conv2")(y)
        y = BatchNorm(train, dtype=self.dtype, name="bn2")(y)
        return nn.relu(y + _shortcut(self, residual, self.features, train))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (with the stride, as torchvision's v1.5), 1x1 expand by 4."""

    features: int
    stride: int = 1
    dtype: Any = jnp.float32
    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        residual = x
        y = Conv(self.features, 1, dtype=self.dtype, name="conv1")(x)
        y = nn.relu(BatchNorm(train, dtype=self.dtype, name="bn1")(y))
        y = Conv(self.features, 3, stride=self.stride, dtype=self.dtype, name="conv2")(y)
        y = nn.relu(BatchNorm(train, dtype=self.dtype, name="bn2")(y))
        y = Conv(self.features * self.expansion, 1, dtype=self.dtype, name="conv3")(y)
        y = BatchNorm(train, dtype=self.dtype, name="bn3")(y)
        return nn.relu(y + _shortcut(self, residual, self.features * self.expansion, train))


def _shortcut(block: nn.Module, x: jax.Array, out_features: int, train: bool) -> jax.Array:
    """Identity, or a strided 1x1 conv + BN when the shape changes (torchvision's rule)."""
    if block.stride == 1 and x.shape[-1] == out_features:
        return x
    x = Conv(out_features, 1, stride=block.stride, dtype=block.dtype, name="downsample_conv")(x)
    return BatchNorm(train, dtype=block.dtype, name="downsample_bn")(x)


class ResNet(nn.Module):
    """Stem (7x7/2 conv, BN, ReLU, 3x3/2 max pool), four stages, pooled Dense head."""

    stage_sizes: Sequence[int]
    block_cls: type[nn.Module]
    num_classes: int = 2
    in_channels: int = 1
    head_pooling: str = "avg"
    dtype: Any = jnp.float32
    width: int = 64

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        features = {}
        x = match_channels(x, self.in_channels).astype(self.dtype)
        x = Conv(self.width, 7, stride=2, dtype=self.dtype, name="conv1")(x)
        x = nn.relu(BatchNorm(train, dtype=self.dtype, name="bn1")(x))
        x = max_pool_3x3_s2(x)
        x = features["stem"] = self.perturb("stem", x)
        for stage, num_blocks in enumerate(self.stage_sizes):
            for index in range(num_blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                x = self.block_cls(self.width * 2**stage, stride=stride, dtype=self.dtype,
                                   name=f"layer{stage + 1}_{index}")(x, train)
            x = features[f"stage{stage + 1}"] = self.perturb(f"stage{stage + 1}", x)
        logits, features["pre_logits"] = classify(self, x)
        return logits, features


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
