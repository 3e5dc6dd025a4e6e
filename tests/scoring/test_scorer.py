"""The scorer: batching, flip TTA, temperature, window scoring, heatmaps, ensembles, devices."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from scoring_support import brute_force_window_margin, plain_logits, softmax_probability

SIZE = 32


@pytest.fixture(scope="module")
def network():
    import jax

    from mammojax import models

    model = models.create_model("resnet18", head_pooling="avg")
    first, second = (models.init_variables(model, jax.random.key(k), SIZE) for k in (1, 2))
    return model, first, second


def films(count: int, seed: int = 0) -> np.ndarray:
    """Breast-like phantoms (bright half-disc on a dark background), z-scored like model inputs."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    out = []
    for _ in range(count):
        inside = ((rows - SIZE / 2) / (SIZE / 2)) ** 2 + (cols / (0.8 * SIZE)) ** 2 < 1
        image = inside * (1.0 + 0.3 * rng.standard_normal((SIZE, SIZE)))
        out.append((image - image.mean()) / image.std())
    return np.asarray(out, np.float32)[..., None]


def scorer_of(model, variables, **scoring):
    from mammojax.scoring import FilmScoring, Scorer

    options = {k: scoring.pop(k) for k in ("batch_size", "temperature") if k in scoring}
    return Scorer(model, variables, FilmScoring(**scoring), **options)


def test_padded_batches_give_every_film_its_own_score_with_one_program(network):
    from mammojax.scoring.scorer import _jitted, film_logits

    model, variables, _ = network
    images = films(6)
    scorer = scorer_of(model, variables, batch_size=4)
    program = _jitted(film_logits, model, scorer.mesh, tta_hflip=False)  # shared by equal scorers
    compiled_before = program._cache_size()
    logits = scorer.logits(images)  # one full batch and one padded partial batch
    np.testing.assert_allclose(logits, plain_logits(model, variables, images), atol=2e-5)
    alone = np.concatenate([scorer.logits(images[i:i + 1]) for i in range(6)])
    np.testing.assert_allclose(logits, alone, atol=1e-6)
    assert program._cache_size() - compiled_before <= 1  # padding: one program for 6, 4 and 1 films
    assert scorer.logits(images[:0]).shape == (0, 2)


def test_probability_is_the_temperature_softmax_of_the_film_logits(network):
    model, variables, _ = network
    images = films(5)
    scorer = scorer_of(model, variables, temperature=3.0)
    logits = scorer.logits(images)
    assert np.ptp(logits[:, 1] - logits[:, 0]) > 1e-3  # films differ, so the check means something
    np.testing.assert_allclose(scorer.probabilities(images), softmax_probability(logits, 3.0), atol=1e-12)


def test_flip_tta_averages_the_logits_of_the_film_and_its_mirror(network):
    model, variables, _ = network
    images = films(3)
    mirrored = images[:, :, ::-1]
    expected = (plain_logits(model, variables, images) + plain_logits(model, variables, mirrored)) / 2
    tta = scorer_of(model, variables, tta_hflip=True)
    np.testing.assert_allclose(tta.logits(images), expected, atol=2e-5)
    # A film and its mirror are the same breast: same score under TTA.
    np.testing.assert_allclose(tta.logits(mirrored), tta.logits(images), atol=2e-5)


@pytest.mark.parametrize("tta", [False, True])
def test_heatmaps_come_from_the_pass_that_gives_the_probability(network, tta):
    model, variables, _ = network
    images = films(3, seed=1)
    scorer = scorer_of(model, variables, tta_hflip=tta, cam_layer="stage3", temperature=2.0)
    maps, logits = scorer.explain(images)
    assert maps.shape == (3, SIZE, SIZE) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0 and maps.max() > 0.5
    np.testing.assert_allclose(logits, scorer.logits(images), atol=1e-6)
    if tta:  # the map of the mirror is the mirror of the map
        mirror_maps, _ = scorer.explain(images[:, :, ::-1])
        np.testing.assert_allclose(mirror_maps, maps[:, :, ::-1], atol=1e-5)


def test_window_scoring_is_the_top_k_mean_of_window_margins(network):
    from mammojax.scoring.windows import window_positions

    model, variables, _ = network
    images = films(3, seed=2)
    scorer = scorer_of(model, variables, kind="windows", tta_hflip=True, window_size=16, window_stride=8,
                       window_top_k=2)
    logits = scorer.logits(images)
    assert np.all(logits[:, 0] == 0)
    for image, (_, score) in zip(images, logits):
        expected = brute_force_window_margin(model, variables, image, size=16, stride=8, top_k=2)
        assert score == pytest.approx(expected, abs=2e-5)
    # The margin map: brightest where the best window lies, zero where no window scores above 0.
    maps, map_logits = scorer.explain(images)
    np.testing.assert_array_equal(map_logits, logits)
    image = images[0]
    positions = window_positions(image, 16, 8)
    margins = scorer.patch_margins(np.stack([image[t:t + 16, l:l + 16] for t, l in positions]))
    top, left = positions[int(np.argmax(margins))]
    if margins.max() > 0:
        assert maps[0][top:top + 16, left:left + 16].max() == pytest.approx(1.0)
    else:
        assert maps[0].max() == 0.0


def test_an_ensemble_averages_its_members(network):
    model, first, second = network
    images = films(4, seed=3)
    one, two = (scorer_of(model, v).logits(images) for v in (first, second))
    assert np.abs(one - two).max() > 1e-3
    np.testing.assert_allclose(scorer_of(model, [first, second]).logits(images), (one + two) / 2, atol=1e-9)
    windows = dict(kind="windows", window_size=16, window_stride=8, window_top_k=1)
    patches = images[:, :16, :16]
    m1, m2 = (scorer_of(model, v, **windows).patch_margins(patches) for v in (first, second))
    np.testing.assert_allclose(scorer_of(model, [first, second], **windows).patch_margins(patches), (m1 + m2) / 2,
                               atol=1e-9)


def test_the_checkpoint_stores_how_films_are_scored_and_one_function_reads_it():
    from mammojax.config import base_config
    from mammojax.errors import CheckpointError, ConfigError
    from mammojax.scoring import FilmScoring, film_scoring_from_config, film_scoring_from_meta

    config = base_config()
    config.eval.tta_hflip = True
    config.explain.layer = "stage3"
    scoring = film_scoring_from_config(config)
    assert scoring == FilmScoring(kind="whole", tta_hflip=True, cam_layer="stage3")
    assert film_scoring_from_meta({"scoring": scoring.to_meta()}) == scoring
    # Checkpoints from before the entry held everything: read as they were scored then.
    old = {"config": {"eval": {"tta_hflip": True}, "explain": {"layer": "stage3", "method": "hirescam"}}}
    assert film_scoring_from_meta(old) == FilmScoring(tta_hflip=True, cam_method="hirescam", cam_layer="stage3")
    old_windows = {**old, "scoring": {"kind": "windows", "size": 64, "stride": 16, "top_k": 3}}
    assert film_scoring_from_meta(old_windows).window_size == 64 and film_scoring_from_meta(old_windows).tta_hflip
    with pytest.raises(CheckpointError, match="unknown film scoring 'lattice'"):
        film_scoring_from_meta({"scoring": {"kind": "lattice"}})
    with pytest.raises(CheckpointError, match="lacks size/stride/top_k"):
        film_scoring_from_meta({"scoring": {"kind": "windows"}})
    config.eval.scoring = "tiles"
    with pytest.raises(ConfigError, match="eval.scoring must be one of whole, windows"):
        film_scoring_from_config(config)


EIGHT_DEVICES = textwrap.dedent("""
    import numpy as np, jax
    from mammojax import models
    from mammojax.scoring import FilmScoring, Scorer
    assert jax.device_count() == 8
    model = models.create_model("resnet18")
    variables = models.init_variables(model, jax.random.key(0), 32)
    images = np.random.default_rng(0).normal(size=(11, 32, 32, 1)).astype(np.float32)
    wide = Scorer(model, variables, FilmScoring(tta_hflip=True), batch_size=8)
    narrow = Scorer(model, variables, FilmScoring(tta_hflip=True), batch_size=8, devices=jax.devices()[:1])
    placed = wide.put(images[:8])
    shards = sorted(placed.addressable_shards, key=lambda s: s.index[0].start)
    assert len({s.device for s in shards}) == 8 and all(s.data.shape[0] == 1 for s in shards)
    np.testing.assert_array_equal(np.concatenate([np.asarray(s.data) for s in shards]), images[:8])
    np.testing.assert_allclose(wide.logits(images), narrow.logits(images), atol=1e-5)
    maps, logits = wide.explain(images)
    np.testing.assert_allclose(logits, wide.logits(images), atol=1e-6)
    print("ok", wide.batch_size)
""")


@pytest.mark.slow
def test_films_are_split_over_every_device_and_scored_as_on_one():
    from train_support import subprocess_env

    env = subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", EIGHT_DEVICES], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok 8" in result.stdout
