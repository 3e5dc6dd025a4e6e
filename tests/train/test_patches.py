"""Patch sampling (mammojax.train.patches): what each epoch cuts, and that it is a pure function of its seed."""

from __future__ import annotations

import numpy as np
import pytest

from mammojax.train.patches import (
    PatchSettings,
    PatchSource,
    background_pixels,
    crop,
    epoch_batches,
    hardest,
    plan_epoch,
)


def _epoch(source, seed=0, mine=False):
    plan = plan_epoch(source, np.random.default_rng(seed), mine=mine)
    return plan, plan.batch(source, np.arange(len(plan))) if not len(plan.hard_slots) else None


def test_positives_hold_the_lesion_and_negatives_are_breast_without_it(phantom_cache):
    settings = PatchSettings(size=16, positives_per_lesion=3, negatives_per_positive=2.0, jitter_fraction=0.1)
    source = PatchSource(phantom_cache, settings)
    _, batch = _epoch(source)
    patches, labels = batch["image"], batch["label"]
    assert patches.shape == (9, 16, 16, 1) and source.patches_per_epoch == 9
    assert (labels == 1).sum() == 3
    # Every positive patch holds the lesion; no negative does (normal film, or the abnormal film's background).
    assert all(patches[i].max() == 5.0 for i in np.flatnonzero(labels == 1))
    assert all(patches[i].max() < 5.0 for i in np.flatnonzero(labels == 0))
    # Negatives are centred on breast pixels, so they are mostly breast.
    assert all((patches[i] == 0.0).mean() >= 0.5 for i in np.flatnonzero(labels == 0))
    again = _epoch(source)[1]
    np.testing.assert_array_equal(patches, again["image"])
    other = _epoch(source, seed=1)[1]
    assert not np.array_equal(patches, other["image"])


def test_negatives_from_abnormal_films_never_hold_the_lesion(phantom_cache):
    settings = PatchSettings(size=16, positives_per_lesion=4, negatives_per_positive=4.0, jitter_fraction=0.1,
                             background_from_abnormal=True)
    plan, batch = _epoch(PatchSource(phantom_cache, settings), seed=1)
    negatives = batch["image"][batch["label"] == 0]
    assert len(negatives) == 16 and negatives.max() < 5.0
    assert set(plan.film[plan.label == 0].tolist()) == {0, 1}  # both films gave negatives


def test_background_of_abnormal_films_keeps_away_from_the_lesion(phantom_cache):
    image = phantom_cache.read([0])[0]
    pixels = background_pixels(image, phantom_cache.lesions_input[0], size=16)
    assert len(pixels) > 0
    # Every centre is farther than radius + half a patch from the lesion (Chebyshev distance).
    assert np.all(np.max(np.abs(pixels - [40, 20]), axis=1) > 4 + 8)
    # A lesion without a centre (MIAS *NOTE 3*) makes the whole film unusable as background.
    no_centre = ({"kind": "calc", "row": None, "col": None, "radius": None},)
    assert len(background_pixels(image, no_centre, 16)) == 0


def test_crop_stays_inside_the_image():
    image = np.arange(100, dtype=np.float32).reshape(10, 10, 1)
    assert crop(image, 0, 0, 4).shape == (4, 4, 1)
    np.testing.assert_array_equal(crop(image, 9.7, 9.7, 4), image[6:, 6:])


def test_hard_negatives_are_the_highest_scoring_of_a_larger_pool(make_cache):
    images = np.full((2, 64, 64, 1), -1.0, np.float32)
    rows, cols = np.mgrid[:64, :64]
    images[:, :, :48, 0] = cols[:, :48] / 48.0  # breast brighter towards its right
    images[0, (rows - 40) ** 2 + (cols - 20) ** 2 < 16, 0] = 5.0
    lesions = [({"kind": "mass", "row": 40.0, "col": 20.0, "radius": 4.0, "severity": None},), ()]
    cache = make_cache(images, [1, 0], lesions)
    settings = PatchSettings(size=16, positives_per_lesion=8, negatives_per_positive=1.0, jitter_fraction=0.1,
                             background_from_abnormal=False, hard_negative_fraction=1.0, hard_negative_pool=4)
    source = PatchSource(cache, settings)
    mined = plan_epoch(source, np.random.default_rng(2), mine=True)
    assert len(mined.hard_slots) == 8 and len(mined.pool_film) == 32
    with pytest.raises(ValueError, match="not filled"):
        mined.batch(source, np.arange(len(mined)))
    pool = source.cut(mined.pool_film, mined.pool_row, mined.pool_col)
    scores = pool.mean(axis=(1, 2, 3))  # "looks like a lesion" = bright
    chosen = hardest(scores, 8)
    assert list(scores[chosen]) == sorted(scores, reverse=True)[:8]
    hard = mined.with_hard(chosen).batch(source, mined.hard_slots)["image"]
    np.testing.assert_allclose(np.sort(hard.mean(axis=(1, 2, 3))), np.sort(scores[chosen]), rtol=1e-6)
    _, easy = _epoch(source, seed=2, mine=False)
    assert hard.mean() > easy["image"][easy["label"] == 0].mean() + 0.05
    # The mined epoch draws its positives and the rest of its plan exactly as an unmined one would.
    plain = plan_epoch(source, np.random.default_rng(2), mine=False)
    np.testing.assert_array_equal(np.sort(mined.row[mined.label == 1]), np.sort(plain.row[plain.label == 1]))


def test_processes_share_each_global_batch_in_contiguous_slices(phantom_cache):
    settings = PatchSettings(size=16, positives_per_lesion=4, negatives_per_positive=1.0)
    source = PatchSource(phantom_cache, settings)
    plan = plan_epoch(source, np.random.default_rng(5), mine=False)
    whole = list(epoch_batches(source, plan, 4))
    halves = [list(epoch_batches(source, plan, 4, process_index=p, process_count=2)) for p in (0, 1)]
    assert len(whole) == 2
    for step, batch in enumerate(whole):
        np.testing.assert_array_equal(batch["image"], np.concatenate([halves[0][step]["image"],
                                                                      halves[1][step]["image"]]))
    resumed = list(epoch_batches(source, plan, 4, start_step=1))
    np.testing.assert_array_equal(resumed[0]["label"], whole[1]["label"])


def test_sampling_reads_films_from_the_cache_never_the_whole_set(phantom_cache, monkeypatch):
    from mammojax.data.prepared import PreparedDataset

    monkeypatch.setattr(PreparedDataset, "load_arrays", lambda self: pytest.fail("the whole training set was loaded"))
    source = PatchSource(phantom_cache, PatchSettings(size=16))
    list(epoch_batches(source, plan_epoch(source, np.random.default_rng(0), mine=False), 2))


def test_a_cache_subset_reads_its_own_films(phantom_cache):
    both = phantom_cache.read([0, 1])
    second = phantom_cache.subset([1])
    assert second.num_examples == 1 and list(second.labels) == [0] and second.lesions_input == ((),)
    np.testing.assert_array_equal(second.read([0])[0], both[1])
    swapped = phantom_cache.subset([1, 0]).subset([1])  # a subset of a subset maps through both
    np.testing.assert_array_equal(swapped.read([0])[0], both[0])
    np.testing.assert_array_equal(swapped.load_arrays()[0][0], both[0])
    with pytest.raises(IndexError):
        second.read([1])


def test_patch_larger_than_the_film_is_a_clear_error(phantom_cache):
    from mammojax.errors import MammojaxError

    with pytest.raises(MammojaxError, match="patch.size=96 is larger than the 64 px films"):
        PatchSource(phantom_cache, PatchSettings(size=96))
