"""A checkpoint at a non-square input ("HxW"): stored, loaded, and scoring, explaining and the page use it.

And a checkpoint whose metadata holds an int ``image_size`` (every one written
before non-square inputs) loads as the square it always meant.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

SHAPE = (64, 48)  # H x W: a mammogram's aspect at a size a shared CPU compiles in seconds
FILM = (416, 320)  # the original film, another aspect again (13:10)


def _checkpoint(tmp_path, image_size):
    import jax

    from mammojax import models
    from mammojax.checkpoint import make_meta, save_checkpoint
    from mammojax.config import base_config

    config = base_config()
    config.data.image_size = image_size
    model = models.create_model("resnet18")
    variables = models.init_variables(model, jax.random.key(0), image_size)
    return save_checkpoint(tmp_path / "ckpt", variables, make_meta(config))


def _film(path):
    """A bright half-disc breast against the left edge on a black background, as an 8-bit PNG."""
    rows, cols = np.mgrid[0:FILM[0], 0:FILM[1]]
    inside = ((rows - FILM[0] / 2) / (0.45 * FILM[0])) ** 2 + (cols / (0.7 * FILM[1])) ** 2 < 1
    texture = np.random.default_rng(0).uniform(0.4, 0.9, FILM)
    Image.fromarray((inside * texture * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def hxw(tmp_path_factory):
    from mammojax.checkpoint import load_checkpoint

    root = tmp_path_factory.mktemp("hxw")
    return load_checkpoint(_checkpoint(root, "64x48")), _film(root / "film.png")


def test_the_checkpoint_stores_hxw_and_reads_it_back(hxw):
    checkpoint, _ = hxw
    meta = json.loads((checkpoint.path / "mammojax.json").read_text())
    assert meta["data"]["image_size"] == "64x48"
    assert checkpoint.image_shape == SHAPE and checkpoint.image_size == "64x48"
    assert checkpoint.preprocess_options["image_size"] == "64x48"  # what a cache is prepared at, too


def test_a_film_is_scored_and_explained_at_hxw(hxw):
    from mammojax.explain.explain import Explainer
    from mammojax.scoring import Scorer

    checkpoint, film = hxw
    scorer = Scorer.from_checkpoint(checkpoint, batch_size=1)  # the batch the Explainer and page use: one compile
    read = scorer.read(film)
    assert read.image.shape == (*SHAPE, 1) and read.geometry.input_shape == SHAPE
    maps, logits = scorer.explain(read.image[None])
    assert maps.shape == (1, *SHAPE) and np.isfinite(maps).all()
    np.testing.assert_allclose(logits, scorer.logits(read.image[None]), atol=1e-5)  # the same pass
    [scored] = scorer.score_paths([film])
    assert scored.ok and scored.probability == pytest.approx(float(scorer.probability_of(logits)[0]), abs=1e-6)

    explanation = Explainer(checkpoint).explain_path(film)
    assert explanation.heatmap.shape == SHAPE and explanation.breast.shape == SHAPE
    assert explanation.heatmap_original.shape == FILM
    assert explanation.to_json()["input_shape"] == list(SHAPE)
    assert explanation.probability == pytest.approx(scored.probability, abs=1e-6)


def test_the_page_describes_and_warms_up_at_hxw(hxw):
    from mammojax.app import logic

    checkpoint, _ = hxw
    model = logic.load_app_model(checkpoint.path, warm_up=True)
    assert model.image_shape == SHAPE and model.describe()["input_shape"] == list(SHAPE)


def test_a_checkpoint_whose_meta_holds_an_int_image_size_loads_as_its_square(tmp_path):
    from mammojax.checkpoint import load_checkpoint
    from mammojax.scoring import Scorer

    path = _checkpoint(tmp_path, 32)
    meta = json.loads((path / "mammojax.json").read_text())
    assert meta["data"]["image_size"] == 32  # an int, exactly as checkpoints always stored it
    checkpoint = load_checkpoint(path)
    assert checkpoint.image_shape == (32, 32) and checkpoint.image_size == 32
    assert checkpoint.preprocess_options["image_size"] == 32  # what eval's cache is prepared at, as before
    assert Scorer.from_checkpoint(checkpoint).prepare(np.eye(50, 70), None).image.shape == (32, 32, 1)


def test_a_meta_with_a_bad_image_size_names_the_file(tmp_path):
    from mammojax.checkpoint import load_checkpoint
    from mammojax.errors import CheckpointError

    path = _checkpoint(tmp_path, 32)
    meta_file = path / "mammojax.json"
    meta = json.loads(meta_file.read_text())
    meta["data"]["image_size"] = "wide"
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"mammojax\.json: no usable input size .*'wide'"):
        load_checkpoint(path)
