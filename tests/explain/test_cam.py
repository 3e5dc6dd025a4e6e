"""Grad-CAM family in pure JAX: formulas, jit/vmap, the zoo, gradients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mammojax import models
from mammojax.errors import MammojaxError
from mammojax.explain import cam
from mammojax.explain.cam import compute_cam, make_cam_fn, upsample_cam
from mammojax.models.resnet import BasicBlock, ResNet

SIZE = 64  # stage4 is 2x2 at 64 px


def tiny_resnet(**kwargs):
    """A narrow one-block-per-stage ResNet: the zoo's code, a fraction of its cost."""
    return ResNet(stage_sizes=(1, 1, 1, 1), block_cls=BasicBlock, width=8, **kwargs)


def randomize_batch_stats(variables, seed=0):
    """Non-trivial running statistics, so eval-mode BatchNorm is really exercised."""
    rng = np.random.default_rng(seed)
    stats = jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.asarray(
            rng.uniform(0.5, 1.5, a.shape) if "var" in str(path[-1]) else rng.normal(0, 0.1, a.shape),
            a.dtype),
        variables["batch_stats"])
    return {**variables, "batch_stats": stats}


@pytest.fixture(scope="module")
def tiny():
    model = tiny_resnet()
    variables = randomize_batch_stats(models.init_variables(model, jax.random.key(0), 128))
    images = jax.random.normal(jax.random.key(1), (3, 128, 128, 1))
    return model, variables, images


def test_gradcam_on_an_avg_pooled_model_is_the_head_weighted_feature_map(tiny):
    # With global average pooling, d logit_c / d A_ijk = W[k, c] / (h w) at every
    # position, so Grad-CAM reduces to Zhou et al.'s CAM: relu(A @ W[:, c]).
    model, variables, images = tiny
    _, features = model.apply(variables, images, train=False)
    kernel = variables["params"]["head"]["kernel"]
    for target in (0, 1):
        heatmaps, logits = compute_cam(model, variables, images, target_class=target)
        expected = np.maximum(np.einsum("bhwk,k->bhw", features["stage4"], kernel[:, target]), 0)
        expected /= expected.max(axis=(1, 2), keepdims=True)
        assert heatmaps.shape == (3, 4, 4)
        np.testing.assert_allclose(heatmaps, expected, atol=1e-5)
        np.testing.assert_allclose(logits, model.apply(variables, images, train=False)[0], atol=1e-5)
    # HiResCAM equals Grad-CAM when the gradient is the same at every position.
    hires, _ = compute_cam(model, variables, images, method="hirescam")
    np.testing.assert_allclose(hires, compute_cam(model, variables, images)[0], atol=1e-5)


def test_gradcam_plus_plus_matches_the_papers_formula(tiny):
    model, variables, images = tiny
    _, activations, grads = cam.logits_and_gradient(model, variables, images)
    a, g = np.asarray(activations, np.float64), np.asarray(grads, np.float64)
    alpha_num = g**2
    alpha_den = 2 * g**2 + a.sum(axis=(1, 2), keepdims=True) * g**3
    alpha = np.where(alpha_den != 0, alpha_num / np.where(alpha_den != 0, alpha_den, 1), 0)
    weights = (alpha * np.maximum(g, 0)).sum(axis=(1, 2))
    expected = np.maximum(np.einsum("bhwk,bk->bhw", a, weights), 0)
    expected /= expected.max(axis=(1, 2), keepdims=True)
    heatmaps, _ = compute_cam(model, variables, images, method="gradcam++")
    np.testing.assert_allclose(heatmaps, expected, atol=1e-5)


@pytest.mark.parametrize("pooling", ["avg", "max", "topk"])
def test_gradient_matches_grad_of_the_perturbation_collection(pooling):
    # An independent route: jax.grad over the full variables with a
    # "perturbations" entry, as flax documents it.
    model = tiny_resnet(head_pooling=pooling)
    variables = models.init_variables(model, jax.random.key(2), SIZE)
    images = jax.random.normal(jax.random.key(3), (2, SIZE, SIZE, 1))
    logits, _, grads = cam.logits_and_gradient(model, variables, images, layer="stage3",
                                               target_class=jnp.array([0, 1]))
    zeros = cam.zero_perturbations(model, variables, images)

    def class_scores(perturbations):
        out, _ = model.apply({**variables, "perturbations": perturbations}, images, train=False)
        return out[0, 0] + out[1, 1]

    expected = jax.grad(class_scores)(zeros)["stage3"]
    assert grads.shape == expected.shape == (2, 4, 4, 32)
    np.testing.assert_allclose(grads, expected, atol=1e-6)
    np.testing.assert_allclose(logits, model.apply(variables, images, train=False)[0], atol=1e-5)


def test_jit_and_vmap_equal_the_plain_call(tiny):
    model, variables, images = tiny
    plain, plain_logits = compute_cam(model, variables, images, method="gradcam++")
    jitted, jitted_logits = make_cam_fn(model, method="gradcam++")(variables, images)
    np.testing.assert_allclose(jitted, plain, atol=1e-5)
    np.testing.assert_allclose(jitted_logits, plain_logits, atol=1e-5)
    # vmap over images one at a time gives the batched answer: eval mode has
    # no cross-example coupling.
    one = lambda image: compute_cam(model, variables, image[None], method="gradcam++")[0][0]
    np.testing.assert_allclose(jax.vmap(one)(images), plain, atol=1e-5)
    # vmap over a stack of batches too (leading axis of batches).
    stacked = jax.vmap(lambda batch: compute_cam(model, variables, batch)[0])(images.reshape(3, 1, 128, 128, 1))
    np.testing.assert_allclose(stacked[:, 0], compute_cam(model, variables, images)[0], atol=1e-5)


@pytest.mark.parametrize("name", list(models.MODELS))
def test_every_zoo_model_gives_a_cam_the_size_of_its_stage4(name):
    # Shapes only (jax.eval_shape): checks the whole trace for every model
    # without compiling six networks on a shared CPU.
    model = models.create_model(name)
    variables = jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0), SIZE))
    images = jax.ShapeDtypeStruct((2, SIZE, SIZE, 1), jnp.float32)
    _, features = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
    _, h, w, _ = features["stage4"].shape
    for method in cam.CAM_METHODS:
        heatmaps, logits = jax.eval_shape(
            lambda v, x: compute_cam(model, v, x, method=method), variables, images)
        assert heatmaps.shape == (2, h, w) and heatmaps.dtype == jnp.float32
        assert logits.shape == (2, 2)
    up = jax.eval_shape(lambda v, x: upsample_cam(compute_cam(model, v, x)[0], SIZE), variables, images)
    assert up.shape == (2, SIZE, SIZE)


def test_a_cam_at_a_non_square_input_is_upsampled_to_its_hxw():
    # A mammogram-shaped input (H > W): its 3x2 stage-4 map comes back as H x W.
    model = models.create_model("resnet18")
    variables = models.init_variables(model, jax.random.key(0), "96x64")
    images = jax.random.normal(jax.random.key(1), (2, 96, 64, 1))
    raw, _ = compute_cam(model, variables, images)
    assert raw.shape == (2, 3, 2)
    heatmaps, logits = make_cam_fn(model, size=(96, 64))(variables, images)
    assert heatmaps.shape == (2, 96, 64) and logits.shape == (2, 2)
    np.testing.assert_allclose(heatmaps, upsample_cam(raw, (96, 64)), atol=1e-5)
    assert np.all(np.isfinite(heatmaps)) and float(heatmaps.max()) > 0


def test_a_real_resnet18_and_mobilenet_cam_runs_finite():
    for name in ("resnet18", "mobilenet_v2"):
        model = models.create_model(name)
        variables = models.init_variables(model, jax.random.key(0), SIZE)
        images = jax.random.normal(jax.random.key(1), (2, SIZE, SIZE, 1))
        heatmaps, logits = make_cam_fn(model, size=SIZE)(variables, images)
        assert heatmaps.shape == (2, SIZE, SIZE)
        assert np.all(np.isfinite(heatmaps)) and np.all(np.isfinite(logits))
        assert 0.0 <= float(heatmaps.min()) and float(heatmaps.max()) <= 1.0 + 1e-6


def test_unknown_method_or_layer_is_a_user_error_listing_the_choices(tiny):
    model, variables, images = tiny
    with pytest.raises(MammojaxError, match="gradcam, gradcam\\+\\+, hirescam"):
        compute_cam(model, variables, images, method="scorecam")
    with pytest.raises(MammojaxError, match="stage4"):
        compute_cam(model, variables, images, layer="stage9")
    with pytest.raises(MammojaxError, match="not a spatial map"):
        compute_cam(model, variables, images, layer="pre_logits")


def test_a_zero_map_stays_zero_and_its_gradient_is_finite(tiny):
    model, variables, images = tiny
    params = dict(variables["params"])
    params["head"] = {"kernel": jnp.zeros_like(params["head"]["kernel"]),
                      "bias": params["head"]["bias"]}

    def inside_mass(p, x):
        heatmaps, _ = compute_cam(model, {**variables, "params": p}, x)
        return jnp.sum(heatmaps), heatmaps

    (total, heatmaps), grads = jax.value_and_grad(inside_mass, has_aux=True)(params, images)
    assert float(total) == 0.0 and not np.any(heatmaps)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_normalize_maps_peaks_at_one_and_keeps_zero():
    maps = jnp.stack([jnp.zeros((3, 3)), jnp.arange(9.0).reshape(3, 3), 1e-3 * jnp.eye(3)])
    out = cam.normalize_maps(maps)
    np.testing.assert_allclose(out[0], 0)
    np.testing.assert_allclose(out[1], np.arange(9.0).reshape(3, 3) / 8, atol=1e-7)
    np.testing.assert_allclose(out[2], np.eye(3), atol=1e-7)


def test_upsample_cam_is_bilinear_with_half_pixel_centres():
    maps = jnp.array([[[0.0, 1.0], [0.0, 1.0]]])
    up = upsample_cam(maps, 4)
    assert up.shape == (1, 4, 4)
    # torch F.interpolate(bilinear, align_corners=False) gives 0, .25, .75, 1.
    np.testing.assert_allclose(up[0, 0], [0.0, 0.25, 0.75, 1.0], atol=1e-6)
    assert upsample_cam(maps, (3, 5)).shape == (1, 3, 5)


GRADIENT_CHECK = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from mammojax import models
    from mammojax.explain.cam import compute_cam, upsample_cam
    from mammojax.models.resnet import BasicBlock, ResNet

    assert jax.config.jax_enable_x64
    model = ResNet(stage_sizes=(1, 1, 1, 1), block_cls=BasicBlock, width=4, dtype=jnp.float64)
    variables = models.init_variables(model, jax.random.key(0), 64)
    variables = jax.tree.map(lambda a: a.astype(jnp.float64), variables)
    images = jax.random.normal(jax.random.key(1), (2, 64, 64, 1), jnp.float64)
    mask = jnp.zeros((64, 64)).at[10:40, 20:50].set(1.0)
    rng = np.random.default_rng(0)
    eps = 1e-6
    out = []
    for method in ("gradcam", "gradcam++"):
        def mass_inside(params, x):
            heatmaps, _ = compute_cam(model, {**variables, "params": params}, x, method=method)
            return jnp.sum(upsample_cam(heatmaps, 64) * mask)
        f = jax.jit(mass_inside)
        grad_params, grad_image = jax.jit(jax.grad(mass_inside, argnums=(0, 1)))(variables["params"], images)
        finite = all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves((grad_params, grad_image)))
        for _ in range(2):
            dp = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape)), variables["params"])
            dx = jnp.asarray(rng.normal(size=images.shape))
            shift = lambda s: jax.tree.map(lambda a, d: a + s * d, variables["params"], dp)
            fd_params = (f(shift(eps), images) - f(shift(-eps), images)) / (2 * eps)
            ad_params = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grad_params), jax.tree.leaves(dp)))
            fd_image = (f(variables["params"], images + eps * dx) - f(variables["params"], images - eps * dx)) / (2 * eps)
            ad_image = jnp.vdot(grad_image, dx)
            out.append([method, finite, float(fd_params), float(ad_params), float(fd_image), float(ad_image)])
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_cam_objective_gradients_match_central_differences_in_float64():
    # float64 needs jax_enable_x64 from the start, hence a subprocess.
    env = {**os.environ, "JAX_ENABLE_X64": "1", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", GRADIENT_CHECK], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(rows) == 4
    for method, finite, fd_params, ad_params, fd_image, ad_image in rows:
        assert finite, method
        assert abs(ad_params) > 1e-3 and abs(ad_image) > 1e-4, (method, ad_params, ad_image)
        assert ad_params == pytest.approx(fd_params, rel=1e-5, abs=1e-7), method
        assert ad_image == pytest.approx(fd_image, rel=1e-5, abs=1e-7), method
