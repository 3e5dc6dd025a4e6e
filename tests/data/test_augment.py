"""Each augmentation op: eager == inside tf.data, and its geometric/intensity promises."""

from __future__ import annotations

import numpy as np
import pytest

from mammojax.config import base_config
from mammojax.data import augment

SIZE = 32


@pytest.fixture(scope="module")
def tf():
    from mammojax.runtime import import_tensorflow

    return import_tensorflow()


@pytest.fixture(scope="module")
def image():
    """A bright blob on a dark background, z-scored, with no symmetry."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    blob = np.exp(-((rows - 10.0) ** 2 + (cols - 20.0) ** 2) / 40.0) + 0.01 * rows
    blob = blob + 0.3 * (cols < 6)
    z = (blob - blob.mean()) / blob.std()
    return z.astype(np.float32)[..., None]


OPS = {
    "hflip": lambda x, s: augment.random_flip(x, s, axis=1),
    "vflip": lambda x, s: augment.random_flip(x, s, axis=0),
    "rotation": lambda x, s: augment.random_rotation(x, s, max_degrees=15.0),
    "crop": lambda x, s: augment.random_resized_crop(x, s, scale_min=0.6),
    "intensity": lambda x, s: augment.random_intensity(
        x, s, gamma_range=(0.7, 1.4), contrast_range=(0.8, 1.3), brightness_delta=0.2),
    "train": augment.train_augmentation(base_config().augment),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_eager_equals_dataset_map(tf, image, name):
    op = OPS[name]
    seeds = np.array([[0, 1], [7, 3], [123, 45]], np.int64)
    eager = np.stack([op(tf.constant(image), tf.constant(s)).numpy() for s in seeds])
    dataset = tf.data.Dataset.from_tensor_slices(seeds).map(lambda s: op(tf.constant(image), s))
    mapped = np.stack(list(dataset.as_numpy_iterator()))
    # Equal up to float32 rounding: in graph mode grappler may fuse or reorder
    # element-wise arithmetic (a 1-ulp difference), never the random draws.
    np.testing.assert_allclose(eager, mapped, rtol=0, atol=2e-6)
    assert eager.shape == (3, SIZE, SIZE, 1) and eager.dtype == np.float32


@pytest.mark.parametrize("name", ["rotation", "crop", "intensity", "train"])
def test_different_seeds_give_different_images(tf, image, name):
    a = OPS[name](image, tf.constant([1, 2], tf.int64)).numpy()
    b = OPS[name](image, tf.constant([1, 3], tf.int64)).numpy()
    assert not np.allclose(a, b)


def test_flip_is_exact(tf, image):
    seed = tf.constant([5, 5], tf.int64)
    np.testing.assert_array_equal(augment.random_flip(image, seed, axis=1, probability=1.0).numpy(),
                                  image[:, ::-1])
    np.testing.assert_array_equal(augment.random_flip(image, seed, axis=0, probability=1.0).numpy(),
                                  image[::-1])
    np.testing.assert_array_equal(augment.random_flip(image, seed, axis=1, probability=0.0).numpy(),
                                  image)


def test_random_flip_flips_about_half_the_time(tf, image):
    flipped = [not np.array_equal(augment.random_flip(image, tf.constant([i, 0], tf.int64)).numpy(), image)
               for i in range(40)]
    assert 10 <= sum(flipped) <= 30


def test_rotation_by_zero_is_identity(tf, image):
    np.testing.assert_array_equal(augment.rotate(image, tf.constant(0.0)).numpy(), image)
    # max_degrees=0 leaves the image untouched whatever the seed.
    out = augment.random_rotation(image, tf.constant([3, 4], tf.int64), max_degrees=0.0)
    np.testing.assert_array_equal(np.asarray(out), image)


def test_rotation_by_quarter_turn_matches_rot90(tf, image):
    quarter = augment.rotate(image, tf.constant(np.pi / 2, tf.float32)).numpy()
    # A positive angle turns the picture counter-clockwise as displayed (rows down).
    np.testing.assert_allclose(quarter, np.rot90(image, k=1), atol=1e-4)


def test_rotation_fills_with_the_image_minimum(tf, image):
    turned = augment.rotate(image, tf.constant(np.pi / 4, tf.float32)).numpy()
    assert turned[0, 0, 0] == pytest.approx(image.min())
    assert turned.min() >= image.min() - 1e-5


def test_crop_keeps_shape_and_full_box_is_identity(tf, image):
    seed = tf.constant([9, 9], tf.int64)
    cropped = augment.random_resized_crop(image, seed, scale_min=0.5).numpy()
    assert cropped.shape == image.shape
    full = augment.random_resized_crop(image, seed, scale_min=1.0, ratio_range=(1.0, 1.0)).numpy()
    np.testing.assert_allclose(full, image, atol=1e-5)


def test_crop_zooms_in(tf, image):
    # A crop of at most 60% of the area magnifies: the blob covers more pixels.
    bright = image > 1.0
    for i in range(5):
        cropped = augment.random_resized_crop(image, tf.constant([i, 1], tf.int64), scale_min=0.3).numpy()
        assert (cropped > 1.0).sum() >= bright.sum() * 0.9


def test_intensity_keeps_images_z_scored(tf, image):
    for i in range(8):
        out = OPS["intensity"](image, tf.constant([i, 11], tf.int64)).numpy()
        assert abs(out.mean()) < 1e-4
        assert out.std() == pytest.approx(1.0, abs=1e-3)


def test_neutral_intensity_is_a_plain_z_score(tf, image):
    shifted = image * 3.0 + 2.0
    out = augment.random_intensity(shifted, tf.constant([1, 1], tf.int64)).numpy()
    np.testing.assert_allclose(out, image, atol=1e-4)


def test_gamma_is_not_undone_by_the_z_score(tf, image):
    out = augment.random_intensity(image, tf.constant([2, 2], tf.int64), gamma_range=(2.0, 2.0)).numpy()
    # A non-linear map: the z-scored result is not an affine copy of the input.
    assert np.corrcoef(out.ravel(), image.ravel())[0, 1] < 0.999


def test_train_augmentation_ends_z_scored_and_respects_switches(tf, image):
    config = base_config().augment
    out = augment.train_augmentation(config)(image, tf.constant([4, 2], tf.int64)).numpy()
    assert abs(out.mean()) < 1e-4 and out.std() == pytest.approx(1.0, abs=1e-3)
    config.hflip, config.rotation_degrees, config.crop_scale_min = False, 0.0, 1.0
    config.gamma_range, config.contrast_range, config.brightness_delta = (1.0, 1.0), (1.0, 1.0), 0.0
    neutral = augment.train_augmentation(config)(image, tf.constant([4, 2], tf.int64)).numpy()
    np.testing.assert_allclose(neutral, image, atol=1e-4)


@pytest.mark.parametrize("name, op", [
    ("hflip", lambda x, s, m: augment.random_flip(x, s, axis=1, probability=1.0, mask=m)),
    ("vflip", lambda x, s, m: augment.random_flip(x, s, axis=0, mask=m)),
    ("rotation", lambda x, s, m: augment.random_rotation(x, s, max_degrees=30.0, mask=m)),
    ("crop", lambda x, s, m: augment.random_resized_crop(x, s, scale_min=0.4, mask=m)),
])
def test_a_mask_moves_exactly_as_the_image(tf, name, op):
    """Each geometric op moves a lesion mask with the same random draw as the image: an image
    that *is* the mask (background 0, the mask's fill) comes out equal to the mask, bit for bit,
    and the image comes out as it does without a mask."""
    rows, cols = np.mgrid[:48, :48]
    mask = (((rows - 14) ** 2 + (cols - 30) ** 2) < 36).astype(np.float32)[..., None]
    for i in range(4):
        seed = tf.constant([i, 7], tf.int64)
        image, moved = op(tf.constant(mask), seed, tf.constant(mask))
        np.testing.assert_array_equal(image.numpy(), moved.numpy())
        alone = op(tf.constant(mask), seed, None)
        np.testing.assert_array_equal(alone.numpy(), image.numpy())


def test_train_augmentation_with_a_mask_keeps_the_image_and_thresholds_the_mask(tf, image):
    config = base_config().augment
    config.rotation_degrees, config.crop_scale_min = 20.0, 0.5
    fn = augment.train_augmentation(config)
    mask = np.zeros(image.shape, np.float32)
    mask[10:20, 5:15] = 1.0
    for i in range(3):
        seed = tf.constant([i, 3], tf.int64)
        out, moved = fn(image, seed, mask=tf.constant(mask))
        np.testing.assert_array_equal(out.numpy(), fn(image, seed).numpy())
        assert set(np.unique(moved.numpy())) <= {0.0, 1.0}
