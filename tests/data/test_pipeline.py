"""Training and evaluation batches: determinism, resume, multi-host slices, exact eval."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mammojax.config import base_config
from mammojax.data.prepared import PixelOptions
from mammojax.data.preparation import prepare_dataset
from mammojax.data.pipeline import epoch_plan, eval_batches, steps_per_epoch, train_batches
from mammojax.data.records import Record
from mammojax.errors import MammojaxError

SIZE = 32
COUNT = 11  # with batch 4: two full batches, three examples dropped per epoch


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    records = []
    for i in range(COUNT):
        rng = np.random.default_rng(i)
        pixels = rng.integers(0, 200, size=(40, 40), dtype=np.uint8)
        pixels[i : i + 8, 5:15] = 255  # each image differs visibly
        Image.fromarray(pixels).save(folder / f"{i}.png")
        records.append(Record(str(folder / f"{i}.png"), label=int(i < 3), patient_id=f"p{i}"))
    prepared, _ = prepare_dataset(records, folder / "prepared", dataset="csv", class_names=("negative", "positive"),
                                  options=PixelOptions(image_shape=(SIZE, SIZE)), workers=1, progress=False)
    return prepared


def make_config(**augment):
    config = base_config()
    config.seed = 3
    config.train.batch_size = 4
    for key, value in augment.items():
        config.augment[key] = value
    return config


def no_augment_config():
    return make_config(hflip=False, rotation_degrees=0.0, crop_scale_min=1.0, gamma_range=(1.0, 1.0),
                       contrast_range=(1.0, 1.0), brightness_delta=0.0)


def collect(iterator):
    return [dict(batch) for batch in iterator]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key].tobytes() == y[key].tobytes(), key


def test_batches_have_static_shapes_and_the_tail_is_dropped(cache):
    config = make_config()
    batches = collect(train_batches(cache, config, epoch=0))
    assert steps_per_epoch(cache, config) == COUNT // 4 == len(batches)
    for batch in batches:
        assert batch["image"].shape == (4, SIZE, SIZE, 1) and batch["image"].dtype == np.float32
        assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32
        assert np.all(np.isfinite(batch["image"]))


def test_same_seed_and_epoch_give_byte_identical_batches(cache):
    config = make_config()
    assert_same_batches(collect(train_batches(cache, config, epoch=1)),
                        collect(train_batches(cache, config, epoch=1)))


def test_other_epoch_or_seed_changes_order_and_augmentation(cache):
    config = make_config()
    order0, seeds0 = epoch_plan(cache, config, 0)
    order1, seeds1 = epoch_plan(cache, config, 1)
    assert not np.array_equal(order0, order1)
    assert not np.array_equal(seeds0, seeds1)
    first = collect(train_batches(cache, config, epoch=0))
    second = collect(train_batches(cache, config, epoch=1))
    assert not np.array_equal(first[0]["image"], second[0]["image"])
    config.seed = 4
    assert not np.array_equal(epoch_plan(cache, config, 0)[0], order0)


def test_batches_follow_the_plan(cache):
    # Without augmentation a batch is the z-scored cached images in plan order.
    config = no_augment_config()
    order, _ = epoch_plan(cache, config, 2)
    assert len(set(order.tolist())) == len(order) == 8  # a permutation's prefix
    images, labels = cache.load_arrays()
    batches = collect(train_batches(cache, config, epoch=2))
    got = np.concatenate([b["image"] for b in batches])
    expected = images[order]
    expected = (expected - expected.mean(axis=(1, 2, 3), keepdims=True)) / expected.std(
        axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]), labels[order])


def test_start_step_equals_slicing_the_full_epoch(cache):
    config = make_config()
    full = collect(train_batches(cache, config, epoch=5))
    assert_same_batches(collect(train_batches(cache, config, epoch=5, start_step=1)), full[1:])
    assert collect(train_batches(cache, config, epoch=5, start_step=len(full))) == []
    with pytest.raises(ValueError):
        train_batches(cache, config, epoch=5, start_step=len(full) + 1)


def test_host_slices_concatenate_to_the_global_batch(cache):
    config = make_config()
    full = collect(train_batches(cache, config, epoch=0))
    hosts = [collect(train_batches(cache, config, epoch=0, process_index=i, process_count=2))
             for i in range(2)]
    for step, batch in enumerate(full):
        for key in ("image", "label"):
            joined = np.concatenate([hosts[0][step][key], hosts[1][step][key]])
            assert joined.tobytes() == batch[key].tobytes()
    with pytest.raises(MammojaxError):
        train_batches(cache, config, epoch=0, process_index=0, process_count=3)


def test_balanced_sampling_draws_classes_equally_and_deterministically(cache):
    config = make_config()
    config.data.balanced_sampling = True
    positives = [epoch_plan(cache, config, epoch)[0] for epoch in range(30)]
    fraction = np.mean(np.concatenate([cache.labels[order] for order in positives]))
    assert 0.4 < fraction < 0.6  # the data holds 3 of 11 positives
    np.testing.assert_array_equal(epoch_plan(cache, config, 7)[0], positives[7])
    assert_same_batches(collect(train_batches(cache, config, epoch=7)),
                        collect(train_batches(cache, config, epoch=7)))


def test_fewer_images_than_one_batch_is_an_error(cache):
    config = make_config()
    config.train.batch_size = 64
    with pytest.raises(MammojaxError, match="fewer than one batch"):
        steps_per_epoch(cache, config)


@pytest.mark.parametrize("batch_size", [1, 4, 11, 16])
def test_eval_batches_cover_every_example_once(cache, batch_size):
    images, labels = cache.load_arrays()
    batches = list(eval_batches(cache, batch_size))
    assert len(batches) == -(-COUNT // batch_size)
    seen = []
    for batch in batches:
        assert batch["image"].shape == (batch_size, SIZE, SIZE, 1)
        assert batch["mask"].dtype == bool and batch["index"].dtype == np.int32
        index = batch["index"][batch["mask"]]
        np.testing.assert_array_equal(batch["image"][batch["mask"]], images[index])
        np.testing.assert_array_equal(batch["label"][batch["mask"]], labels[index])
        assert np.all(batch["image"][~batch["mask"]] == 0)
        seen += index.tolist()
    assert seen == list(range(COUNT))
    assert int(sum(b["mask"].sum() for b in batches)) == COUNT
