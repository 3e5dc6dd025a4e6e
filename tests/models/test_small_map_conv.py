"""The im2col route for 1-2 pixel convolution outputs equals XLA's convolution, values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mammojax.models import create_model
from mammojax.models.common import small_map_conv

NHWC = jax.lax.conv_dimension_numbers((1, 4, 4, 3), (3, 3, 3, 5), ("NHWC", "HWIO", "NHWC"))


@pytest.fixture(autouse=True)
def detours_on(monkeypatch):
    """The routes are tested whether or not this machine's measured row takes them (mammojax.platform)."""
    monkeypatch.setenv("MAMMOJAX_DETOURS", "all")


def assert_same_as_lax(x, w, rng, *args, **kwargs):
    """``small_map_conv(x, w, *args, **kwargs)`` equals lax's convolution, values and both gradients.

    Returns the wrapped ``ours(x, w)`` for further checks.
    """
    def ours(x, w):
        return small_map_conv(x, w, *args, **kwargs)

    def reference(x, w):
        return jax.lax.conv_general_dilated(x, w, *args, **kwargs)

    np.testing.assert_allclose(ours(x, w), reference(x, w), rtol=1e-5, atol=1e-5)
    cotangent = jnp.asarray(rng.normal(size=reference(x, w).shape), jnp.float32)
    for g, r in zip(jax.vjp(ours, x, w)[1](cotangent), jax.vjp(reference, x, w)[1](cotangent)):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)
    return ours


@pytest.mark.parametrize("size,kernel,stride,pad", [(2, 3, 1, 1), (1, 3, 1, 1), (4, 3, 2, 1), (3, 3, 2, 1),
                                                    (5, 7, 2, 3), (2, 1, 1, 0), (6, 3, 1, 1)])
def test_matches_lax_convolution_and_its_gradients(size, kernel, stride, pad):
    rng = np.random.default_rng(size * 100 + kernel * 10 + stride)
    x = jnp.asarray(rng.normal(size=(3, size, size, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kernel, kernel, 4, 6)), jnp.float32)
    assert_same_as_lax(x, w, rng, (stride, stride), ((pad, pad), (pad, pad)),
                       dimension_numbers=NHWC, lhs_dilation=(1, 1), rhs_dilation=(1, 1))


@pytest.mark.parametrize("detours,routed", [("all", 4), ("-small_map_im2col", 0)])
def test_resnet_on_a_64px_input_takes_the_im2col_route_for_stage4_where_chosen(monkeypatch, detours, routed):
    """At 64 px, stage4 is 2x2: its 3x3 convolutions are dot products in the compiled program, where chosen."""
    monkeypatch.setenv("MAMMOJAX_DETOURS", detours)
    model = create_model("resnet18", num_classes=2)
    x = jnp.zeros((2, 64, 64, 1))
    variables = jax.jit(lambda k: model.init(k, x))(jax.random.key(0))
    hlo = jax.jit(lambda v, x: model.apply(v, x)[0]).lower(variables, x).as_text()
    # 20 convolutions in a ResNet-18; the 4 3x3 ones of stage4 (2x2 output) are matrix products.
    assert hlo.count("stablehlo.convolution") == 20 - routed


@pytest.mark.parametrize("size,stride", [(7, 1), (8, 2), (9, 2), (2, 1)])
def test_depthwise_route_matches_a_grouped_lax_convolution(size, stride):
    rng = np.random.default_rng(size + stride)
    channels = 5
    x = jnp.asarray(rng.normal(size=(2, size, size, channels)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 1, channels)), jnp.float32)
    numbers = jax.lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
    ours = assert_same_as_lax(x, w, rng, (stride, stride), ((1, 1), (1, 1)),
                              dimension_numbers=numbers, feature_group_count=channels)
    assert "convolution" not in jax.jit(ours).lower(x, w).as_text()
