"""Explanation-guided training (``train.cam_loss_weight``): the losses, their gradients,
the plain step kept as it was, 8 devices = 1 device, and the config's checks."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mammojax.config import base_config, quickstart_config
from mammojax.errors import ConfigError
from mammojax.models.resnet import BasicBlock, ResNet
from mammojax.train import losses, sharding
from mammojax.train.losses import CamGuidance, energy_loss, guided_forward, masked_mean
from mammojax.train.state import create_train_state, jit_steps, train_step

from train_support import reordered_sum_rtol, run_sharding_check, stem_positions

SIZE = 32


def tiny_resnet(dtype=jnp.float32):
    return ResNet(stage_sizes=(1, 1, 1, 1), block_cls=BasicBlock, width=4, dtype=dtype)


def probe_batch(size=SIZE, count=4):
    rng = np.random.default_rng(0)
    mask = np.zeros((count, size, size), bool)
    mask[0, 4:14, 6:16] = True
    mask[2, 18:28, 2:12] = True
    return {"image": rng.normal(size=(count, size, size, 1)).astype(np.float32),
            "label": np.array([1, 0, 1, 0][:count], np.int32), "lesion_mask": mask}


def test_energy_loss_is_one_minus_the_mass_share_inside():
    maps = jnp.asarray([[[1.0, 3.0], [0.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    masks = jnp.asarray([[[True, False], [False, True]], [[True, True], [False, False]]])
    np.testing.assert_allclose(energy_loss(maps, masks), [1 - 5 / 8, 1.0])  # an empty map: nothing inside
    grad = jax.grad(lambda m: energy_loss(m, masks).sum())(maps)
    assert np.isfinite(np.asarray(grad)).all()
    np.testing.assert_array_equal(grad[1], 0.0)


def test_masked_mean_counts_only_the_annotated_films():
    values = jnp.asarray([0.2, 7.0, 0.6, jnp.nan])  # an un-annotated film's value never leaks in, not even NaN
    valid = jnp.asarray([True, False, True, False])
    assert float(masked_mean(values, valid)) == pytest.approx(0.4)
    assert float(masked_mean(values, jnp.zeros(4, bool))) == 0.0
    grad = jax.grad(lambda v: masked_mean(v, valid))(values)
    np.testing.assert_array_equal(grad, [0.5, 0.0, 0.5, 0.0])


@pytest.fixture(scope="module")
def tiny_state():
    model = tiny_resnet()
    mesh = sharding.make_mesh(jax.devices()[:1])
    state = create_train_state(model, optax.sgd(0.1), rng=jax.random.key(0), image_size=SIZE, mesh=mesh)
    return model, mesh, state


@pytest.mark.parametrize("loss", list(losses.CAM_LOSSES))
def test_the_cam_loss_is_the_mean_over_annotated_films(tiny_state, loss):
    model, _, state = tiny_state
    guidance = CamGuidance(model=model, weight=1.0, loss=loss, layer="stage3")
    batch = probe_batch()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    forward = jax.jit(functools.partial(guided_forward, guidance))
    _, cam_loss, _ = forward(variables, batch["image"], batch["lesion_mask"])
    # Per film, by each film's own mask: films 1 and 3 (no mask) must not count.
    per_film = []
    for i in (0, 2):
        only = np.zeros_like(batch["lesion_mask"])
        only[i] = batch["lesion_mask"][i]
        per_film.append(float(forward(variables, batch["image"], only)[1]))
    assert float(cam_loss) == pytest.approx(np.mean(per_film), rel=1e-6)
    assert float(cam_loss) > 0


def test_without_any_mask_the_guided_step_is_the_plain_step(tiny_state):
    """Un-annotated films add no CAM loss and no gradient: all masks empty = the plain step."""
    model, mesh, state = tiny_state
    batch = probe_batch()
    batch["lesion_mask"][:] = False
    guided = jit_steps(state, mesh, label_smoothing=0.0,
                       guidance=CamGuidance(model=model, weight=5.0, layer="stage3"))
    plain = jit_steps(state, mesh, label_smoothing=0.0)
    copy = lambda: jax.tree.map(jnp.copy, state)  # noqa: E731 - the steps donate their state
    g_state, g_metrics = guided(copy(), sharding.global_batch(batch, mesh), None)
    p_state, p_metrics = plain(copy(), sharding.global_batch({k: batch[k] for k in ("image", "label")}, mesh), None)
    assert float(g_metrics["cam_loss"]) == 0.0
    assert float(g_metrics["loss"]) == pytest.approx(float(p_metrics["loss"]), rel=1e-6)
    assert float(g_metrics["grad_norm"]) == pytest.approx(float(p_metrics["grad_norm"]), rel=1e-5)
    for a, b in zip(jax.tree.leaves(g_state.params), jax.tree.leaves(p_state.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_weight_zero_is_todays_plain_step_program(tiny_state):
    """``train.cam_loss_weight = 0`` (the default) builds no guidance, so the loop jits the very
    ``train_step`` it always did: the same lowered program, text for text."""
    model, mesh, state = tiny_state
    config = base_config()
    assert config.train.cam_loss_weight == 0.0
    assert losses.cam_guidance(config, model) is None
    built = jit_steps(state, mesh, label_smoothing=0.0, guidance=losses.cam_guidance(config, model))
    rep, split = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    shardings = jax.tree_util.tree_map(lambda _: rep, state)
    today = jax.jit(functools.partial(train_step, label_smoothing=0.0), in_shardings=(shardings, split, rep),
                    out_shardings=(shardings, rep), donate_argnums=0)
    batch = {k: v for k, v in probe_batch().items() if k != "lesion_mask"}
    shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
    assert built.lower(state, shapes, None).as_text() == today.lower(state, shapes, None).as_text()


GRADIENT_CHECK = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from mammojax import models
    from mammojax.models.resnet import BasicBlock, ResNet
    from mammojax.train.losses import CamGuidance, cross_entropy, guided_forward

    assert jax.config.jax_enable_x64
    model = ResNet(stage_sizes=(1, 1, 1, 1), block_cls=BasicBlock, width=4, dtype=jnp.float64)
    variables = jax.tree.map(lambda a: a.astype(jnp.float64), models.init_variables(model, jax.random.key(0), 32))
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(4, 32, 32, 1)))
    labels = jnp.asarray([1, 0, 1, 0])
    masks = np.zeros((4, 32, 32), bool)
    masks[0, 4:14, 6:16] = True
    masks[2, 18:28, 2:12] = True
    masks = jnp.asarray(masks)
    eps = 1e-6
    out = []
    for loss_name, layer in (("energy", "stage3"), ("energy", "stage4"), ("rrr", "stage4")):
        guidance = CamGuidance(model=model, weight=0.7, loss=loss_name, layer=layer)
        def objective(params):
            v = {"params": params, "batch_stats": variables["batch_stats"]}
            logits, cam_loss, _ = guided_forward(guidance, v, images, masks)
            return cross_entropy(logits, labels) + guidance.weight * cam_loss
        f = jax.jit(objective)
        grads = jax.jit(jax.grad(objective))(variables["params"])
        finite = all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
        for _ in range(2):
            # Training-mode BatchNorm rounds its scale and bias to its float32 param_dtype, so
            # finite differences see them quantised: the directions move every other parameter.
            d = jax.tree_util.tree_map_with_path(
                lambda path, a: jnp.asarray(rng.normal(size=a.shape) * ("bn" not in jax.tree_util.keystr(path))),
                variables["params"])
            shift = lambda s: jax.tree.map(lambda a, e: a + s * e, variables["params"], d)
            fd = (f(shift(eps)) - f(shift(-eps))) / (2 * eps)
            ad = sum(jnp.vdot(g, e) for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(d)))
            out.append([loss_name, layer, finite, float(fd), float(ad)])
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_guided_loss_gradients_match_central_differences_in_float64():
    """The CAM loss's parameter gradient (second order, through the heatmap's own gradient and the
    hand-written BatchNorm backward) against central differences, in float64 (a subprocess: x64 must
    be on from the start). Central differences at eps = 1e-6 in float64 are good to ~1e-8 relative."""
    env = {**os.environ, "JAX_ENABLE_X64": "1", "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    result = subprocess.run([sys.executable, "-c", GRADIENT_CHECK], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(rows) == 6
    for loss_name, layer, finite, fd, ad in rows:
        assert finite, (loss_name, layer)
        assert abs(ad) > 1e-3, (loss_name, layer, ad)
        assert ad == pytest.approx(fd, rel=1e-6, abs=1e-8), (loss_name, layer)


@pytest.mark.slow
def test_a_guided_step_on_eight_devices_matches_one_device(tmp_path):
    """The masked mean over annotated films (which sit on a few devices only) and the second-order
    gradient, split over 8 devices, agree with one device to float32 sums in another order."""
    seen = run_sharding_check("guided", tmp_path / "guided.npz")
    assert int(seen["devices"]) == 8
    batch, size = int(seen["batch"]), int(seen["image_size"])
    rtol = reordered_sum_rtol(stem_positions(batch, size))
    for key in ("loss", "cam_loss", "grad_norm"):
        np.testing.assert_allclose(seen[f"eight/{key}"], seen[f"one/{key}"], rtol=rtol, err_msg=key)
    assert float(seen["one/cam_loss"]) > 0
    params = [k for k in seen if k.startswith("one/params/")]
    assert params
    # SGD moves each parameter by lr x its gradient: the gradient's relative rounding bound, scaled.
    lr, grad_norm = float(seen["lr"]), float(seen["one/grad_norm"])
    diff = max(float(np.abs(seen[k] - seen["eight" + k[3:]]).max()) for k in params)
    assert diff <= lr * grad_norm * rtol + 1e-6, diff


def _config(**fields):
    config = quickstart_config()
    for key, value in fields.items():
        section, leaf = key.split(".")
        config[section][leaf] = value
    return config


@pytest.mark.parametrize("fields, message", [
    ({"train.cam_loss_weight": -0.5}, "train.cam_loss_weight=-0.5 must be >= 0"),
    ({"train.cam_loss_weight": 1.0, "train.cam_loss": "enrgy"}, "train.cam_loss='enrgy' is unknown (did you mean 'energy'?"),
    ({"train.cam_loss_weight": 1.0, "train.recipe": "patches"}, "needs train.recipe='whole_image', not 'patches'"),
    ({"train.cam_loss_weight": 1.0, "explain.layer": "pre_logits"}, "needs a spatial explain.layer"),
])
def test_config_check_names_a_bad_guidance_setting(fields, message):
    from mammojax.train.config_check import validate_config

    with pytest.raises(ConfigError) as err:
        validate_config(_config(**fields))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_guidance_on_a_dataset_without_lesion_outlines_is_a_one_line_config_error(tmp_path):
    from mammojax.train.config_check import validate_config

    validate_config(_config(**{"train.cam_loss_weight": 1.0}))  # the phantoms have lesion circles
    config = _config(**{"train.cam_loss_weight": 1.0, "data.dataset": "rsna", "data.data_dir": str(tmp_path)})
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    text = str(err.value)
    assert "train.cam_loss_weight=1 (explanation-guided training) needs lesion circles; dataset 'rsna' has none" \
        in text and "synthetic" in text and "\n" not in text
    validate_config(_config(**{"data.dataset": "rsna", "data.data_dir": str(tmp_path)}))  # weight 0: fine


def test_a_training_split_without_any_lesion_circle_is_refused_before_training(make_cache):
    from mammojax.train.data import TrainingData
    from mammojax.train.loop import Run
    from mammojax.train.whole_image import _prepare

    images = np.zeros((4, 32, 32, 1), np.float32)
    # A positive film whose lesion has a centre but no radius, and negatives: no target anywhere.
    lesions = [({"kind": "mass", "row": 5.0, "col": 5.0, "radius": None, "severity": None},), (), (), ()]
    cache = make_cache(images, [1, 0, 1, 0], lesions)
    config = _config(**{"train.cam_loss_weight": 1.0})
    run = Run(config=config, workdir=None, mesh=None, model=None, is_main=True)
    with pytest.raises(ConfigError, match="needs positive training films with lesion circles; .* has none among its 4"):
        _prepare(run, data=TrainingData(train=cache, val=cache))


def _guided_config(**fields):
    config = _config(**{"train.cam_loss_weight": 1.0, "train.batch_size": 2, **fields})
    config.augment.hflip, config.augment.rotation_degrees, config.augment.crop_scale_min = True, 25.0, 0.6
    return config


def test_the_lesion_mask_moves_with_the_augmented_film(phantom_cache):
    """Film 0 has a bright disc (radius 4 at (40, 20)); after flips, rotations and crops the
    batch's mask must still sit on the disc, epoch after epoch; film 1 (normal) has none."""
    from mammojax.data.pipeline import train_batches

    config = _guided_config()
    hits = []
    for epoch in range(6):
        (batch,) = list(train_batches(phantom_cache, config, epoch=epoch))
        assert set(batch) == {"image", "label", "lesion_mask"} and batch["lesion_mask"].dtype == bool
        for image, label, mask in zip(batch["image"][..., 0], batch["label"], batch["lesion_mask"]):
            if label == 0:
                assert not mask.any()
                continue
            bright = image > (image.max() + np.median(image)) / 2  # the disc, wherever augmentation put it
            assert mask.any() and bright.any()
            hits.append((mask & bright).sum() / (mask | bright).sum())
    assert len(hits) == 6 and min(hits) > 0.6, hits  # bilinear edges differ by a pixel ring at most


def test_guided_batches_hold_the_same_images_as_plain_ones(phantom_cache):
    """Carrying the mask changes nothing in the images: weight 0 trains on exactly today's batches."""
    from mammojax.data.pipeline import train_batches

    guided, plain = _guided_config(), _guided_config(**{"train.cam_loss_weight": 0.0})
    for epoch in range(3):
        (g,), (p,) = list(train_batches(phantom_cache, guided, epoch=epoch)), \
            list(train_batches(phantom_cache, plain, epoch=epoch))
        assert set(p) == {"image", "label"}
        np.testing.assert_array_equal(g["image"], p["image"])
        np.testing.assert_array_equal(g["label"], p["label"])


def test_lesion_targets_only_for_positive_films_with_complete_circles():
    from mammojax.data.pipeline import lesion_target

    circle = {"kind": "mass", "row": 10.0, "col": 12.0, "radius": 3.0, "severity": None}
    mask = lesion_target([circle], 1, (32, 32))
    assert mask.sum() == 29 and mask[10, 12]  # the 29 pixel centres within 3 px
    assert not lesion_target([circle], 0, (32, 32)).any()  # a benign lesion of a label-0 film: no target
    assert not lesion_target([circle, {**circle, "radius": None}], 1, (32, 32)).any()  # incomplete outline
    assert not lesion_target([{**circle, "row": float("nan")}], 1, (32, 32)).any()
    assert not lesion_target([], 1, (32, 32)).any()
