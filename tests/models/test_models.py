"""The model zoo: registry, shapes, parameter counts, pooling heads, dtypes, CLI."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from click.testing import CliRunner

from mammojax import models
from mammojax.errors import MammojaxError

# torchvision's parameter counts (3 input channels, 1000 classes).
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
                      "densenet121": 7_978_856, "mobilenet_v2": 3_504_872}
# (channels of stem, stage1..stage4) and the overall stride of stem, stage1..stage4.
CHANNELS = {"resnet18": (64, 64, 128, 256, 512), "resnet18_rgb": (64, 64, 128, 256, 512),
            "resnet34": (64, 64, 128, 256, 512), "resnet50": (64, 256, 512, 1024, 2048),
            "densenet121": (64, 256, 512, 1024, 1024), "mobilenet_v2": (16, 24, 32, 96, 1280)}
STRIDES = {"mobilenet_v2": (2, 4, 8, 16, 32)}


@pytest.mark.parametrize("name", list(models.MODELS))
@pytest.mark.parametrize("image_size, shape", [(64, (64, 64)), ("64x96", (64, 96))])
def test_output_and_feature_shapes(name, image_size, shape):
    model = models.create_model(name, num_classes=3)
    variables = jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0), image_size))
    assert set(variables) == {"params", "batch_stats"}
    logits, features = jax.eval_shape(lambda v, x: model.apply(v, x), variables,
                                      jax.ShapeDtypeStruct((2, *shape, 1), jnp.float32))
    assert logits.shape == (2, 3) and logits.dtype == jnp.float32
    assert tuple(features) == models.FEATURE_NAMES or set(features) == set(models.FEATURE_NAMES)
    strides = STRIDES.get(name, (4, 4, 8, 16, 32))
    for key, channels, stride in zip(models.FEATURE_NAMES, CHANNELS[name], strides):
        assert features[key].shape == (2, shape[0] // stride, shape[1] // stride, channels), key
    assert features["pre_logits"].shape == (2, CHANNELS[name][-1])


@pytest.mark.parametrize("name", list(TORCHVISION_PARAMS))
def test_param_counts_equal_torchvision(name):
    assert models.param_count(name, num_classes=1000, in_channels=3) == TORCHVISION_PARAMS[name]


def test_paper_model_count_and_rgb_variant():
    assert models.param_count("resnet18") == 11_171_266
    assert models.create_model("resnet18_rgb").in_channels == 3
    with pytest.raises(MammojaxError, match="3 input channels"):
        models.create_model("resnet18_rgb", in_channels=1)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(MammojaxError, match="resnet18.*mobilenet_v2"):
        models.create_model("vgg16")
    with pytest.raises(MammojaxError, match="avg"):
        models.create_model("resnet18", head_pooling="mean")
    with pytest.raises(MammojaxError, match="bfloat16"):
        models.create_model("resnet18", dtype="float16")


@pytest.fixture(scope="module")
def resnet18_variables():
    return models.init_variables(models.create_model("resnet18"), jax.random.key(0), 64)


def test_init_is_seeded(resnet18_variables):
    again = models.init_variables(models.create_model("resnet18"), jax.random.key(0), 64)
    np.testing.assert_array_equal(resnet18_variables["params"]["conv1"]["kernel"],
                                  again["params"]["conv1"]["kernel"])
    assert "perturbations" not in resnet18_variables
    assert models.count_params(resnet18_variables["params"]) == 11_171_266


def test_pooling_heads_share_parameters(resnet18_variables):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 64, 1)), jnp.float32)
    outputs = {}
    for pooling in models.HEAD_POOLINGS:
        model = models.create_model("resnet18", head_pooling=pooling)
        shapes = jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0), 64))
        assert jax.tree.map(jnp.shape, shapes) == jax.tree.map(jnp.shape, resnet18_variables)
        outputs[pooling] = model.apply(resnet18_variables, x)
    stage4 = np.asarray(outputs["avg"][1]["stage4"])  # (2, 2, 2, 512)
    head = resnet18_variables["params"]["head"]
    position_logits = (stage4 @ np.asarray(head["kernel"]) + np.asarray(head["bias"])).reshape(2, -1, 2)
    np.testing.assert_allclose(outputs["avg"][0], position_logits.mean(1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs["max"][0], position_logits.max(1), rtol=1e-4, atol=1e-5)
    k = models.common.topk_count(4)
    top = np.sort(position_logits, axis=1)[:, ::-1][:, :k].mean(1)
    np.testing.assert_allclose(outputs["topk"][0], top, rtol=1e-4, atol=1e-5)


def test_bfloat16_computes_in_bf16_with_float32_params_and_logits(resnet18_variables):
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 64, 64, 1)), jnp.float32)
    model = models.create_model("resnet18", dtype="bfloat16")
    logits, features = model.apply(resnet18_variables, x)
    assert logits.dtype == jnp.float32 and features["stage4"].dtype == jnp.bfloat16
    reference, _ = models.create_model("resnet18").apply(resnet18_variables, x)
    np.testing.assert_allclose(logits, reference, atol=0.05 * float(jnp.abs(reference).max()) + 1e-3)


def test_perturbations_give_feature_gradients(resnet18_variables):
    model = models.create_model("resnet18")
    x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 64, 64, 1)), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)["perturbations"]
    perturbations = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def cancer_logit(p):
        logits, _ = model.apply({**resnet18_variables, "perturbations": p}, x)
        return logits[0, 1]

    grads = jax.grad(cancer_logit)(perturbations)
    assert set(grads) == set(models.FEATURE_NAMES)
    for name in ("stage4", "pre_logits"):
        assert float(jnp.abs(grads[name]).max()) > 0, name
    # Through the average head, d logit / d stage4 is the head weight spread over positions.
    head = resnet18_variables["params"]["head"]["kernel"]
    np.testing.assert_allclose(grads["stage4"][0, 0, 0], (head[:, 1]) / 4, rtol=1e-5, atol=1e-7)


def test_cli_models_json_lists_counts():
    from mammojax.cli import cli

    result = CliRunner().invoke(cli, ["models", "--json", "--in-channels", "3", "--num-classes", "1000"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert list(rows) == list(models.MODELS)
    for name, count in TORCHVISION_PARAMS.items():
        assert rows[name]["params"] == count
    table = CliRunner().invoke(cli, ["models"])
    assert table.exit_code == 0 and "11,171,266" in table.output and "11,177,538" in table.output
