"""mammojax's dot-product BatchNorm equals flax's BatchNorm: outputs, running statistics, gradients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mammojax.models.batch_norm import BatchNorm


def _pair(train):
    kwargs = dict(use_running_average=not train, momentum=0.9, epsilon=1e-5)
    return BatchNorm(**kwargs), nn.BatchNorm(**kwargs)


def _variables(rng, channels):
    return {"params": {"scale": jnp.asarray(rng.normal(1, 0.3, channels), jnp.float32),
                       "bias": jnp.asarray(rng.normal(0, 0.3, channels), jnp.float32)},
            "batch_stats": {"mean": jnp.asarray(rng.normal(0, 1, channels), jnp.float32),
                            "var": jnp.asarray(rng.uniform(0.5, 2, channels), jnp.float32)}}


def test_same_variables_as_flax():
    ours, theirs = _pair(train=True)
    x = jnp.ones((2, 3, 3, 5))
    a = ours.init(jax.random.key(0), x)
    b = theirs.init(jax.random.key(0), x)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("train", [True, False])
def test_outputs_running_stats_and_gradients_match_flax(train):
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(2.0, 3.0, size=(4, 6, 5, 8)), jnp.float32)
    cotangent = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    variables = _variables(rng, 8)
    ours, theirs = _pair(train)

    def loss(module, params, x):
        y, updates = module.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                                  mutable=["batch_stats"])
        return jnp.sum(jnp.tanh(y) * cotangent), (y, updates["batch_stats"])

    results = []
    for module in (ours, theirs):
        (value, (y, stats)), grads = jax.value_and_grad(
            lambda p, x: loss(module, p, x), argnums=(0, 1), has_aux=True)(variables["params"], x)
        results.append((y, stats, grads))
    (y1, s1, g1), (y2, s2, g2) = results
    np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves((s1, g1)), jax.tree_util.tree_leaves((s2, g2))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    if train:  # the running averages moved towards the batch statistics
        assert not np.allclose(s1["mean"], variables["batch_stats"]["mean"])


FINITE_DIFFERENCES = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    from mammojax.models.batch_norm import BatchNorm

    assert jax.config.jax_enable_x64
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(3, 4, 4, 2)))
    cotangent = jnp.asarray(rng.normal(size=x.shape))
    module = BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5,
                       dtype=jnp.float64, param_dtype=jnp.float64)
    stats = {"mean": jnp.zeros(2), "var": jnp.ones(2)}

    def f(params, x):
        y, _ = module.apply({"params": params, "batch_stats": stats}, x, mutable=["batch_stats"])
        return jnp.sum(jnp.sin(y) * cotangent)

    params = {"scale": jnp.asarray([1.5, 0.7]), "bias": jnp.asarray([0.1, -0.2])}
    grad_params, grad_x = jax.grad(f, argnums=(0, 1))(params, x)
    dx = jnp.asarray(rng.normal(size=x.shape))
    dp = {k: jnp.asarray(rng.normal(size=2)) for k in params}
    shift = lambda s: {k: params[k] + s * dp[k] for k in params}
    eps = 1e-6
    out = [float(jnp.vdot(grad_x, dx)), float((f(params, x + eps * dx) - f(params, x - eps * dx)) / (2 * eps)),
           float(sum(jnp.vdot(grad_params[k], dp[k]) for k in params)),
           float((f(shift(eps), x) - f(shift(-eps), x)) / (2 * eps))]
    print(json.dumps(out))
""")


def test_gradients_match_central_differences_in_float64():
    # float64 needs jax_enable_x64 from the start, hence a subprocess.
    env = {**os.environ, "JAX_ENABLE_X64": "1", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", FINITE_DIFFERENCES], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    ad_x, fd_x, ad_p, fd_p = json.loads(result.stdout.strip().splitlines()[-1])
    assert abs(ad_x) > 1e-3 and abs(ad_p) > 1e-3
    assert ad_x == pytest.approx(fd_x, rel=1e-6)
    assert ad_p == pytest.approx(fd_p, rel=1e-6)


def test_statistics_are_global_over_a_batch_split_on_eight_devices(tmp_path):
    """One jitted train step on 8 forced host devices: the running statistics are those
    of the whole batch (as on one device), not of one device's slice."""
    from sharding_worker import DEVICES, MOMENTUM
    from train_support import run_sharding_check

    seen = run_sharding_check("batch_norm", tmp_path / "batch_norm.npz")
    assert int(seen["devices"]) == DEVICES == 8
    x = seen["image"].astype(np.float64)
    momentum = MOMENTUM  # the running statistics start at mean 0, var 1

    def running(images):
        return (1 - momentum) * images.mean((0, 1, 2)), momentum + (1 - momentum) * images.var((0, 1, 2))

    whole_mean, whole_var = running(x)
    # The batch is built so that any one device's statistics are far from the whole batch's.
    for part in np.split(x, DEVICES):
        part_mean, part_var = running(part)
        assert np.abs(part_mean - whole_mean).min() > 0.3 and np.abs(part_var - whole_var).min() > 1.0
    stats = "batch_stats/BatchNorm_0"
    np.testing.assert_allclose(seen[f"eight/{stats}/mean"], whole_mean, rtol=1e-5)
    np.testing.assert_allclose(seen[f"eight/{stats}/var"], whole_var, rtol=1e-4)
    # And the whole step (statistics, gradients, parameters) equals the one-device step.
    keys = [k.removeprefix("one/") for k in seen if k.startswith("one/")]
    assert len(keys) == 6 and all(f"eight/{k}" in seen for k in keys)
    for key in keys:
        np.testing.assert_allclose(seen[f"eight/{key}"], seen[f"one/{key}"], rtol=1e-5, atol=1e-6, err_msg=key)
