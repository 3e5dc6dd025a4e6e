"""The contract: one film, one checkpoint, one probability, whichever door it comes in by.

For a whole-film and a window-scored checkpoint, with flip TTA on and off,
``mammojax predict``, ``mammojax explain``, ``mammojax eval``, the web page's
logic and validation inside training give every film the same probability.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest


SIZE = 32
TEMPERATURE = 2.5
AGREE = 1e-6  # outputs are written with 6 decimals: agreement to their last digit


def make_checkpoint(directory: Path, *, kind: str, tta: bool):
    """A random-init network saved with the film scoring under test; returns (path, config)."""
    import jax
    import ml_collections

    from mammojax import models
    from mammojax.checkpoint import make_meta, save_checkpoint
    from mammojax.config import base_config

    config = base_config()
    config.data.image_size = SIZE
    config.data.dataset = "csv"
    config.eval.tta_hflip = tta
    config.eval.scoring = kind
    config.eval.bootstrap = 20
    config.explain.layer = "stage3"
    if "patch" not in config:
        config.patch = ml_collections.ConfigDict()
    config.patch.size, config.patch.window_stride, config.patch.window_top_k = 16, 8, 2
    model = models.create_model("resnet18")
    variables = models.init_variables(model, jax.random.key(3), SIZE)
    meta = make_meta(config, tau=0.5, temperature=TEMPERATURE)
    return save_checkpoint(directory, variables, meta), config


@pytest.mark.parametrize("kind,tta", [("whole", False), ("whole", True), ("windows", False), ("windows", True)])
def test_every_entry_point_gives_a_film_the_same_probability(phantom_films, run_cli, tmp_path, monkeypatch, kind,
                                                             tta):
    films = phantom_films
    from mammojax.app import logic
    from mammojax.checkpoint import load_checkpoint
    from mammojax.data.prepared import PixelOptions
    from mammojax.data.preparation import prepare_dataset
    from mammojax.data.records import load_dataset
    from mammojax.scoring import probabilities
    from mammojax.train.validation import validation_logits

    monkeypatch.setenv("MAMMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    checkpoint, config = make_checkpoint(tmp_path / "best", kind=kind, tta=tta)
    names = sorted(p.name for p in films.glob("*.png"))

    predicted = {}
    for line in run_cli(["predict", "--checkpoint", checkpoint, "--json", films]).stdout.splitlines():
        row = json.loads(line)
        if row["kind"] == "image":
            predicted[Path(row["path"]).name] = row["probability"]

    out = tmp_path / "explain"
    run_cli(["explain", "--checkpoint", checkpoint, "--out", out, *(films / n for n in names)])
    explained = {Path(r["path"]).name: r["probability"]
                 for r in map(json.loads, (out / "explanations.jsonl").read_text().splitlines())}

    run_cli(["eval", "--checkpoint", checkpoint, "--dataset", "csv", "--data-dir", films / "manifest.csv",
          "--split", "all", "--out", tmp_path / "eval"])
    with open(tmp_path / "eval" / "scores.csv") as handle:
        evaluated = {Path(r["path"]).name: float(r["probability"]) for r in csv.DictReader(handle)}

    page_model = logic.load_app_model(checkpoint)
    paged = {n: logic.analyse_upload(page_model, n, (films / n).read_bytes()).probability for n in names}

    loaded = load_checkpoint(checkpoint)
    records = load_dataset("csv", films / "manifest.csv").records
    cache, _ = prepare_dataset(records, tmp_path / "prepared", dataset="csv", class_names=("negative", "positive"),
                               options=PixelOptions(image_shape=(SIZE, SIZE), max_pixels=10**8), progress=False)
    logits, _ = validation_logits(loaded.model, loaded.variables, cache, config, batch_size=4)
    validated = dict(zip((Path(r.path).name for r in cache.records), probabilities(logits, TEMPERATURE)))

    reference = np.array([paged[n] for n in names])
    assert np.ptp(reference) > 1e-4, "films must score differently for the contract to mean something"
    for source in (predicted, explained, evaluated, validated):
        np.testing.assert_allclose([source[n] for n in names], reference, atol=AGREE, rtol=0)
