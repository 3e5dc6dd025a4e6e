"""Localization metrics: masks, pointing game, mass inside, deletion regions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from mammojax.data.records import Lesion, Record
from mammojax.errors import MammojaxError
from mammojax.explain import localization as loc


def test_lesion_mask_from_circles_masks_and_tolerance(tmp_path):
    circle = Lesion("mass", row=10, col=20, radius=3)
    mask = loc.lesion_mask([circle], (30, 40))
    assert mask[10, 20] and mask[10, 23] and not mask[10, 24]
    assert mask.sum() == sum(1 for r in range(30) for c in range(40) if (r - 10) ** 2 + (c - 20) ** 2 <= 9)
    grown = loc.lesion_mask([circle], (30, 40), tolerance=2)
    assert grown[10, 25] and not grown[10, 26] and grown.sum() > mask.sum()
    # A mask file (half the size of the image: resized by nearest neighbour).
    drawn = np.zeros((15, 20), np.uint8)
    drawn[2:4, 5:7] = 255
    Image.fromarray(drawn).save(tmp_path / "m.png")
    from_file = loc.lesion_mask([Lesion("mass", None, None, mask_path=str(tmp_path / "m.png"))], (30, 40))
    assert from_file.sum() == 16 and from_file[4:8, 10:14].all()
    # Union, and lesions without a location are skipped.
    union = loc.lesion_mask([circle, Lesion("calcification", None, None)], (30, 40))
    np.testing.assert_array_equal(union, mask)
    assert not loc.has_location(Lesion("calcification", None, None))


def test_pointing_game_mass_inside_and_chance():
    mask = np.zeros((10, 10), bool)
    mask[2:4, 2:4] = True
    heatmap = np.zeros((10, 10), np.float32)
    heatmap[3, 3], heatmap[8, 8] = 1.0, 0.5
    assert loc.peak(heatmap) == (3, 3)
    assert loc.pointing_hit(heatmap, mask)
    assert not loc.pointing_hit(heatmap[::-1, ::-1], mask)
    assert not loc.pointing_hit(np.zeros((10, 10)), np.ones((10, 10), bool))  # empty map misses
    assert loc.mass_inside(heatmap, mask) == pytest.approx(1.0 / 1.5)
    assert math.isnan(loc.mass_inside(np.zeros((10, 10)), mask))
    assert loc.chance_level(mask) == pytest.approx(0.04)
    region = np.zeros((10, 10), bool)
    region[:5] = True  # the lesion lies in the upper half "breast"
    assert loc.chance_level(mask, region) == pytest.approx(4 / 50)


def test_top_fraction_and_random_region_have_the_same_size_and_shape():
    rng = np.random.default_rng(0)
    heatmap = rng.uniform(size=(20, 20))
    top = loc.top_fraction_mask(heatmap, 0.1)
    assert top.sum() == 40
    assert heatmap[top].min() >= heatmap[~top].max()
    moved = loc.random_region_like(top, np.random.default_rng(1))
    assert moved.sum() == 40
    again = loc.random_region_like(top, np.random.default_rng(1))
    np.testing.assert_array_equal(moved, again)  # seeded
    with pytest.raises(MammojaxError, match="fraction"):
        loc.top_fraction_mask(heatmap, 0.0)


def test_deletion_images_replace_only_the_region():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(16, 16, 1)).astype(np.float32)
    heatmap = np.zeros((16, 16), np.float32)
    heatmap[:4, :4] = 1.0
    batch = loc.deletion_images(image, heatmap, fraction=16 / 256, rng=np.random.default_rng(3), num_random=2)
    assert batch.shape == (4, 16, 16, 1)
    np.testing.assert_array_equal(batch[0], image)
    changed = batch[1, ..., 0] != image[..., 0]
    assert changed[:4, :4].all() and not changed[4:].any() and not changed[:, 4:].any()
    np.testing.assert_allclose(batch[1, :4, :4, 0], image.mean())
    for k in (2, 3):
        assert (batch[k] != image).sum() == 16
    background = loc.delete_region(image, heatmap > 0, fill="background")
    np.testing.assert_allclose(background[:4, :4, 0], image.min())
    with pytest.raises(MammojaxError, match="fill"):
        loc.delete_region(image, heatmap > 0, fill="noise")


def test_summarize_averages_and_reports_lift():
    rows = [{"hit": 1.0, "chance": 0.1, "mass_inside": 0.5, "drop_cam": 0.3, "drop_random": 0.1},
            {"hit": 0.0, "chance": 0.3, "mass_inside": float("nan"), "drop_cam": 0.1, "drop_random": 0.1}]
    summary = loc.summarize(rows)
    assert summary["images"] == 2
    assert summary["pointing_game"] == pytest.approx(0.5)
    assert summary["pointing_chance"] == pytest.approx(0.2)
    assert summary["pointing_lift"] == pytest.approx(2.5)
    assert summary["mass_inside"] == pytest.approx(0.5)  # the NaN row is left out
    assert summary["faithfulness_gap"] == pytest.approx(0.1)
    assert loc.summarize([])["pointing_game"] is None


def test_localizable_records():
    from mammojax.explain.explain import localizable

    lesion = Lesion("mass", 5, 5, 2)
    assert localizable(Record("a.png", 1, "p", lesions=(lesion,)))
    assert not localizable(Record("a.png", 0, "p", lesions=(lesion,)))
    assert localizable(Record("a.png", 0, "p", lesions=(lesion,)), positives_only=False)
    assert not localizable(Record("a.png", 1, "p", lesions=(Lesion("calcification", None, None),)))
