"""One default heatmap per checkpoint, stored in it, drawn by every door (issue 19 item 6).

A quickstart checkpoint stores its config's ``explain.layer`` (stage3: at
96 px stage4 is a blocky 3x3 map); ``mammojax explain`` without ``--layer``,
the quickstart's Explainer and the web page must all draw that layer.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from app_support import png_bytes
from click.testing import CliRunner
from PIL import Image


@pytest.fixture(scope="module")
def quickstart_checkpoint(tmp_path_factory):
    """A random-init checkpoint saved with the quickstart config (its scores mean nothing)."""
    import jax

    from mammojax import models
    from mammojax.checkpoint import make_meta, save_checkpoint
    from mammojax.config import quickstart_config

    config = quickstart_config()
    model = models.create_model(config.model.name)
    variables = models.init_variables(model, jax.random.key(1), config.data.image_size)
    return save_checkpoint(tmp_path_factory.mktemp("qs") / "best", variables, make_meta(config, tau=0.5))


def test_explain_without_layer_draws_the_checkpoints_stage3(quickstart_checkpoint, tmp_path):
    from mammojax.app.logic import load_app_model
    from mammojax.checkpoint import load_checkpoint
    from mammojax.explain.cam import compute_cam, upsample_cam
    from mammojax.explain.explain import Explainer
    from mammojax.scoring import Scorer

    film = tmp_path / "film.png"
    film.write_bytes(png_bytes(120, 96, seed=3))
    out = tmp_path / "out"
    result = CliRunner().invoke(_cli(), ["explain", "--checkpoint", str(quickstart_checkpoint), str(film),
                                         "--out", str(out)])
    assert result.exit_code == 0, result.output
    line = json.loads((out / "explanations.jsonl").read_text())
    assert (line["method"], line["layer"]) == ("gradcam", "stage3")

    # The saved map is stage3's Grad-CAM of the same input, not stage4's.
    checkpoint = load_checkpoint(quickstart_checkpoint)
    image = Scorer.from_checkpoint(checkpoint).read(film).image[None]
    size = checkpoint.image_shape
    stage3, _ = compute_cam(checkpoint.model, checkpoint.variables, image, layer="stage3")
    stage4, _ = compute_cam(checkpoint.model, checkpoint.variables, image, layer="stage4")
    saved = np.load(out / "film_cam.npy")
    np.testing.assert_allclose(saved, np.asarray(upsample_cam(stage3, size))[0], atol=1e-5)
    assert np.abs(saved - np.asarray(upsample_cam(stage4, size))[0]).max() > 1e-2

    # The quickstart's explainer and the page read the same default.
    assert Explainer(checkpoint).layer == "stage3"
    assert load_app_model(quickstart_checkpoint, warm_up=False).cam_layer == "stage3"
    assert Image.open(out / "film_overlay.png").size == (96, 120)


def _cli():
    from mammojax.cli import cli

    return cli
