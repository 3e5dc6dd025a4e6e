"""Training augmentations as small TensorFlow ops with explicit stateless seeds.

Every op takes one ``(S, S, 1)`` float32 image and a ``seed`` (a shape-``[2]``
integer tensor) and uses only ``tf.random.stateless_*`` ops, so the same seed
gives the same output eagerly, inside ``tf.data.Dataset.map``, on any machine
and in any order of execution. The pipeline derives one seed per example from
``(config.seed, epoch, position in the epoch)``.

Images are z-scored on entry. Geometric ops fill uncovered pixels with the
image minimum (the background after preprocessing). Each geometric op also
takes an optional lesion ``mask`` (``(S, S, 1)`` float32, 1 inside the lesion)
and moves it exactly as the image, with the same random draw (explanation-guided
training, ``train.cam_loss_weight``: the heatmap target must stay on the lesion);
uncovered mask pixels are 0, and the image itself is computed as without a mask. Intensity changes work on
a min-max rescaled copy in [0, 1] and clip there, then z-score again: a linear
contrast/brightness change of a z-scored image would be undone exactly by the
per-image z-score, while clipping (a window) and gamma are not.

TensorFlow is imported inside each function so that importing this module is
cheap (``import tensorflow`` alone takes ~9 s on the project machines).
"""

from __future__ import annotations

import math
from typing import Callable

from mammojax.runtime import import_tensorflow

_EPS = 1e-6


def _tf():
    return import_tensorflow()


def _uniform(seed, minval=0.0, maxval=1.0):
    tf = _tf()
    return tf.random.stateless_uniform([], seed=seed, minval=minval, maxval=maxval, dtype=tf.float32)


def split_seed(seed, num: int):
    """``num`` independent seeds from one (a ``[num, 2]`` tensor)."""
    tf = _tf()
    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=num)


def standardize(image):
    """Zero mean, unit variance over the whole image (a constant image becomes 0)."""
    tf = _tf()
    mean = tf.reduce_mean(image)
    std = tf.math.reduce_std(image)
    return (image - mean) / tf.maximum(std, _EPS)


def _with_mask(image, mask, apply):
    """``apply(image)``, or ``(apply(image), apply(mask))`` when a mask comes along."""
    return apply(image) if mask is None else (apply(image), apply(mask))


def random_flip(image, seed, *, axis: int = 1, probability: float = 0.5, mask=None):
    """Mirrors the image along ``axis`` (1: left-right, 0: up-down) with ``probability``.

    With ``mask``: ``(image, mask)``, both mirrored or neither.
    """
    tf = _tf()
    flip = _uniform(seed) < probability
    return _with_mask(image, mask, lambda x: tf.where(flip, tf.reverse(x, axis=[axis]), x))


def rotate(image, angle, *, fill_value=None):
    """Rotates about the image centre by ``angle`` radians (bilinear; uncovered pixels
    get ``fill_value``, by default the image minimum: the background)."""
    tf = _tf()
    image = tf.convert_to_tensor(image, tf.float32)
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    cy, cx = (height - 1.0) / 2.0, (width - 1.0) / 2.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    # The transform maps each output pixel (x, y) to the input point it samples:
    # x_in = cos*x - sin*y + tx, y_in = sin*x + cos*y + ty, turning about (cx, cy).
    tx = cx - cos * cx + sin * cy
    ty = cy - sin * cx - cos * cy
    transform = tf.stack([cos, -sin, tx, sin, cos, ty, 0.0, 0.0])[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=tf.shape(image)[:2],
        fill_value=tf.reduce_min(image) if fill_value is None else fill_value,
        interpolation="BILINEAR", fill_mode="CONSTANT")
    return out[0]


def random_rotation(image, seed, *, max_degrees: float, mask=None):
    """Rotates by an angle uniform in ``[-max_degrees, max_degrees]`` (with ``mask``:
    ``(image, mask)``, the mask by the same angle, filled with 0)."""
    if max_degrees <= 0:
        return _with_mask(image, mask, lambda x: x)
    limit = math.radians(max_degrees)
    angle = _uniform(seed, -limit, limit)
    turned = rotate(image, angle)
    return turned if mask is None else (turned, rotate(mask, angle, fill_value=0.0))


def random_resized_crop(image, seed, *, scale_min: float, ratio_range=(3 / 4, 4 / 3), mask=None):
    """Crops a random box (area fraction in ``[scale_min, 1]``, aspect ratio in
    ``ratio_range``, log-uniform) and resizes it back to the input size (bilinear).

    With ``mask``: ``(image, mask)``, the mask cut from the same box.
    """
    tf = _tf()
    image = tf.convert_to_tensor(image, tf.float32)
    seeds = split_seed(seed, 4)
    area = _uniform(seeds[0], scale_min, 1.0)
    log_ratio = _uniform(seeds[1], math.log(ratio_range[0]), math.log(ratio_range[1]))
    ratio = tf.exp(log_ratio)
    # Box sides as fractions of the image; never larger than the image itself.
    box_h = tf.minimum(tf.sqrt(area / ratio), 1.0)
    box_w = tf.minimum(tf.sqrt(area * ratio), 1.0)
    top = _uniform(seeds[2]) * (1.0 - box_h)
    left = _uniform(seeds[3]) * (1.0 - box_w)
    boxes = tf.stack([top, left, top + box_h, left + box_w])[None]
    size = tf.shape(image)[:2]

    def crop(x):
        x = tf.convert_to_tensor(x, tf.float32)
        return tf.image.crop_and_resize(x[None], boxes, box_indices=[0], crop_size=size, method="bilinear")[0]

    return _with_mask(image, mask, crop)


def random_intensity(image, seed, *, gamma_range=(1.0, 1.0), contrast_range=(1.0, 1.0),
                     brightness_delta: float = 0.0):
    """Window (contrast, brightness, clip) and gamma on a [0, 1] copy, then z-score.

    Contrast scales about mid-grey, brightness shifts by up to
    ``brightness_delta`` of the intensity range, gamma is log-uniform in
    ``gamma_range``. With all three neutral the result is ``standardize(image)``.
    """
    tf = _tf()
    image = tf.convert_to_tensor(image, tf.float32)
    seeds = split_seed(seed, 3)
    low, high = tf.reduce_min(image), tf.reduce_max(image)
    unit = (image - low) / tf.maximum(high - low, _EPS)
    contrast = _uniform(seeds[0], contrast_range[0], contrast_range[1])
    brightness = _uniform(seeds[1], -brightness_delta, brightness_delta)
    unit = tf.clip_by_value((unit - 0.5) * contrast + 0.5 + brightness, 0.0, 1.0)
    log_gamma = _uniform(seeds[2], math.log(gamma_range[0]), math.log(gamma_range[1]))
    unit = tf.pow(unit, tf.exp(log_gamma))
    return standardize(unit)


def train_augmentation(augment_config) -> Callable:
    """``fn(image, seed) -> image``: the configured training augmentations in order
    flips -> rotation -> crop -> intensity, ending z-scored.

    Rotation comes before the crop so the zoom of the crop hides some of the
    filled corners. ``augment_config`` is ``config.augment``.
    ``fn(image, seed, mask=mask) -> (image, mask)`` moves a lesion mask with
    the image through every geometric op (intensity leaves it alone); the
    image is the same as without a mask, and the mask is thresholded back
    to 0/1 at one half (bilinear resampling blurs its edge).
    """
    hflip = bool(augment_config.hflip)
    vflip = bool(augment_config.vflip)
    degrees = float(augment_config.rotation_degrees)
    scale_min = float(augment_config.crop_scale_min)
    gamma_range = tuple(float(v) for v in augment_config.gamma_range)
    contrast_range = tuple(float(v) for v in augment_config.contrast_range)
    brightness = float(augment_config.brightness_delta)
    crop = scale_min < 1.0

    def augment(image, seed, mask=None):
        seeds = split_seed(seed, 5)
        if mask is None:
            if hflip:
                image = random_flip(image, seeds[0], axis=1)
            if vflip:
                image = random_flip(image, seeds[1], axis=0)
            if degrees > 0:
                image = random_rotation(image, seeds[2], max_degrees=degrees)
            if crop:
                image = random_resized_crop(image, seeds[3], scale_min=scale_min)
        else:
            if hflip:
                image, mask = random_flip(image, seeds[0], axis=1, mask=mask)
            if vflip:
                image, mask = random_flip(image, seeds[1], axis=0, mask=mask)
            if degrees > 0:
                image, mask = random_rotation(image, seeds[2], max_degrees=degrees, mask=mask)
            if crop:
                image, mask = random_resized_crop(image, seeds[3], scale_min=scale_min, mask=mask)
        # Always ends with a z-score: cropping and filling shift the statistics too.
        image = random_intensity(image, seeds[4], gamma_range=gamma_range,
                                 contrast_range=contrast_range, brightness_delta=brightness)
        if mask is None:
            return image
        tf = _tf()
        return image, tf.cast(mask >= 0.5, tf.float32)

    return augment
