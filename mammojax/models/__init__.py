"""The model zoo: an explicit registry of Flax classifiers.

Every model is called as ``model.apply(variables, x, train=False)`` with ``x``
NHWC, and returns ``(logits, features)``: float32 logits ``(B, num_classes)``
and named features ``stem``, ``stage1``..``stage4`` (``stage4`` is the last
spatial map before pooling) and ``pre_logits``. Each feature passes through
``Module.perturb``, so Grad-CAM gets its gradient from the ``perturbations``
collection without hooks. The architectures match torchvision's layer for
layer, which :mod:`mammojax.weights` relies on.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from mammojax.data.preprocess import input_shape
from mammojax.errors import MammojaxError
from mammojax.models.common import HEAD_POOLINGS, compute_dtype
from mammojax.models.densenet import DenseNet121
from mammojax.models.mobilenet import MobileNetV2
from mammojax.models.resnet import ResNet18, ResNet34, ResNet50

MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": ResNet18,  # 1-channel stem: the paper's model
    "resnet18_rgb": functools.partial(ResNet18, in_channels=3),  # for 3-channel ImageNet weights
    "resnet34": ResNet34,
    "resnet50": ResNet50,
    "densenet121": DenseNet121,
    "mobilenet_v2": MobileNetV2,
}

# Models whose stem width is part of their identity; the rest default to 1.
FIXED_IN_CHANNELS = {"resnet18_rgb": 3}
FEATURE_NAMES = ("stem", "stage1", "stage2", "stage3", "stage4", "pre_logits")


def create_model(name: str, *, num_classes: int = 2, in_channels: int | None = None,
                 head_pooling: str = "avg", dtype: str = "float32") -> nn.Module:
    """A model from the registry.

    ``in_channels`` defaults to the model's own (1, or 3 for ``resnet18_rgb``).
    ``dtype="bfloat16"`` computes in bfloat16 with float32 parameters and
    float32 logits (mixed precision).
    """
    if name not in MODELS:
        raise MammojaxError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    if head_pooling not in HEAD_POOLINGS:
        raise MammojaxError(f"unknown head_pooling {head_pooling!r}; valid: {', '.join(HEAD_POOLINGS)}")
    if num_classes < 1:
        raise MammojaxError(f"num_classes must be at least 1, got {num_classes}")
    kwargs = {"num_classes": int(num_classes), "head_pooling": head_pooling,
              "dtype": compute_dtype(dtype)}
    fixed = FIXED_IN_CHANNELS.get(name)
    if in_channels is not None:
        if fixed is not None and in_channels != fixed:
            raise MammojaxError(f"model {name!r} always takes {fixed} input channels, not {in_channels}")
        if in_channels not in (1, 3):
            raise MammojaxError(f"in_channels must be 1 or 3, got {in_channels}")
        kwargs["in_channels"] = int(in_channels)
    return MODELS[name](**kwargs)


def init_variables(model: nn.Module, rng: jax.Array, image_size) -> dict:
    """Fresh ``{"params", "batch_stats"}`` for an ``image_size`` input (S, "HxW" or (H, W)).

    The ``perturbations`` collection that ``init`` also creates is dropped:
    Grad-CAM makes its own zeros. Wrap in ``jax.eval_shape`` for shapes only.
    The values are a deterministic function of ``rng``.
    """
    x = jnp.zeros((1, *input_shape(image_size, minimum=1), model.in_channels), jnp.float32)
    # XLA on CPU compiles one threefry generator per parameter tensor: 10-16 s
    # for ResNet-18 on a 2-core machine. The "rbg" generator, seeded from
    # ``rng``, compiles in about a quarter of that time.
    init_rng = jax.random.wrap_key_data(jax.random.bits(rng, (4,), jnp.uint32), impl="rbg")
    variables = jax.jit(functools.partial(model.init, train=False))(init_rng, x)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def count_params(tree) -> int:
    """Number of scalars in a pytree (pass ``variables["params"]`` for parameters)."""
    return int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(tree)))


def param_count(name: str, *, num_classes: int = 2, in_channels: int | None = None) -> int:
    """Parameter count of a registry model, from shapes only (no computation)."""
    model = create_model(name, num_classes=num_classes, in_channels=in_channels)
    # Parameter shapes do not depend on the image size; 32 px keeps tracing cheap.
    shapes = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), 32))
    return count_params(shapes["params"])


__all__ = ["MODELS", "FEATURE_NAMES", "FIXED_IN_CHANNELS", "HEAD_POOLINGS", "create_model",
           "init_variables", "count_params", "param_count"]
