"""DenseNet-BC (Huang et al. 2017) exactly as torchvision builds it, in Flax.

Names follow torchvision's ``features.*`` modules without the ``features``
prefix (``conv0``, ``denseblock1/denselayer1/norm1``, ``transition1/conv``,
``norm5``); the classifier is ``head``. Stage ``i`` ends after dense block
``i`` (the transition that halves it opens stage ``i + 1``), so the stages
have strides 4, 8, 16 and 32 like ResNet's; ``stage4`` includes the final
BatchNorm + ReLU.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mammojax.models.common import BatchNorm, Conv, classify, match_channels, max_pool_3x3_s2


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bottleneck) then BN-ReLU-3x3 conv adding ``growth_rate`` channels."""

    growth_rate: int
    bn_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = nn.relu(BatchNorm(train, dtype=self.dtype, name="norm1")(x))
        y = Conv(self.bn_size * self.growth_rate, 1, dtype=self.dtype, name="conv1")(y)
        y = nn.relu(BatchNorm(train, dtype=self.dtype, name="norm2")(y))
        y = Conv(self.growth_rate, 3, dtype=self.dtype, name="conv2")(y)
        return jnp.concatenate([x, y], axis=-1)


class DenseBlock(nn.Module):
    num_layers: int
    growth_rate: int
    bn_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for index in range(self.num_layers):
            x = DenseLayer(self.growth_rate, self.bn_size, dtype=self.dtype,
                           name=f"denselayer{index + 1}")(x, train)
        return x


class Transition(nn.Module):
    """BN-ReLU-1x1 conv halving the channels, then 2x2 average pooling."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.relu(BatchNorm(train, dtype=self.dtype, name="norm")(x))
        x = Conv(x.shape[-1] // 2, 1, dtype=self.dtype, name="conv")(x)
        return nn.avg_pool(x, (2, 2), strides=(2, 2))


class DenseNet(nn.Module):
    block_config: Sequence[int]
    growth_rate: int = 32
    bn_size: int = 4
    init_features: int = 64
    num_classes: int = 2
    in_channels: int = 1
    head_pooling: str = "avg"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        features = {}
        x = match_channels(x, self.in_channels).astype(self.dtype)
        x = Conv(self.init_features, 7, stride=2, dtype=self.dtype, name="conv0")(x)
        x = nn.relu(BatchNorm(train, dtype=self.dtype, name="norm0")(x))
        x = features["stem"] = self.perturb("stem", max_pool_3x3_s2(x))
        last = len(self.block_config) - 1
        for stage, num_layers in enumerate(self.block_config):
            if stage > 0:
                x = Transition(dtype=self.dtype, name=f"transition{stage}")(x, train)
            x = DenseBlock(num_layers, self.growth_rate, self.bn_size, dtype=self.dtype,
                           name=f"denseblock{stage + 1}")(x, train)
            if stage == last:
                x = nn.relu(BatchNorm(train, dtype=self.dtype, name="norm5")(x))
            x = features[f"stage{stage + 1}"] = self.perturb(f"stage{stage + 1}", x)
        logits, features["pre_logits"] = classify(self, x)
        return logits, features


DenseNet121 = functools.partial(DenseNet, block_config=(6, 12, 24, 16), growth_rate=32, bn_size=4,
                                init_features=64)
