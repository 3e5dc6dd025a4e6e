"""preprocess_image: aspect, padding, z-score, crop, orientation and geometry.

Synthetic images with known content, so every expected position is exact.
"""

from __future__ import annotations

import numpy as np
import pytest

from mammojax.data.preprocess import (
    Geometry,
    breast_bbox,
    image_size_of,
    input_breast_mask,
    input_shape,
    needs_flip,
    otsu_threshold,
    preprocess_image,
    zscore,
)
from mammojax.errors import ConfigError


def _breast(height=300, width=200, *, chest_wall="left", label=True):
    """A half-ellipse 'breast' against the chest wall, plus a small bright label."""
    rows, cols = np.mgrid[0:height, 0:width]
    centre_row = height / 2
    inside = ((rows - centre_row) / (0.4 * height)) ** 2 + (cols / (0.6 * width)) ** 2 <= 1.0
    image = np.where(inside, 0.6, 0.02).astype(np.float32)
    if label:
        image[5:12, width - 20 : width - 6] = 1.0  # scanner text, away from the breast
    if chest_wall == "right":
        image = image[:, ::-1].copy()
    return image


def test_output_shape_dtype_and_aspect_kept():
    # 100 x 50 content (every pixel above the raw-0 background): long side -> 64, short side -> 32, centred.
    film = np.random.default_rng(0).uniform(0.2, 1.0, (100, 50)).astype(np.float32)
    out = preprocess_image(film, image_size=64)
    image = out.image
    assert image.shape == (64, 64, 1) and image.dtype == np.float32
    content = image[..., 0] > image.min()
    assert content.sum() == 64 * 32
    assert content[:, 16:48].all() and not content[:, :16].any() and not content[:, 48:].any()
    assert out.geometry.resized_shape == (64, 32) and out.geometry.pad_offset == (0, 16)


def test_zscore_statistics_and_constant_image():
    out = preprocess_image(np.random.default_rng(0).random((40, 70), np.float32), image_size=32)
    (top, left), (height, width) = out.geometry.pad_offset, out.geometry.resized_shape
    content = out.image[top:top + height, left:left + width]
    # The output is rounded to float16 precision (the cache's): statistics hold to 2**-11 of a z-score.
    assert content.mean() == pytest.approx(0.0, abs=1e-3)
    assert content.std() == pytest.approx(1.0, abs=1e-3)  # population std (ddof=0), of the content only
    np.testing.assert_array_equal(out.image, out.image.astype(np.float16).astype(np.float32))

    # Constant content carries nothing, padded or not: all zeros, never a division by zero.
    for constant in (np.zeros((20, 30)), np.full((30, 30), 0.7), np.full((20, 40), 0.7)):
        flat = preprocess_image(constant, image_size=16).image
        assert np.all(flat == 0.0) and np.isfinite(flat).all()


def test_zscore_standalone():
    x = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    np.testing.assert_allclose(zscore(x), (x - 2.5) / np.std(x), atol=1e-6)
    assert np.all(zscore(np.full((3, 3), 5.0)) == 0.0)
    # With a reference, its statistics are applied to every element of x.
    np.testing.assert_allclose(zscore(np.array([0.0, 2.0]), reference=x), np.array([-2.5, -0.5]) / np.std(x),
                               atol=1e-6)


def test_downsampling_averages_area():
    # A 1-pixel checkerboard shrunk 4x must average to grey, not alias to a pattern.
    board = (np.indices((128, 128)).sum(0) % 2).astype(np.float32)
    from mammojax.data.preprocess import resize

    small = resize(board, (32, 32))
    np.testing.assert_allclose(small, 0.5, atol=1e-5)


@pytest.mark.parametrize("orient, chest_wall, crop", [
    (False, "left", False), (True, "right", False), (True, "right", True), (False, "left", True),
])
def test_to_input_matches_where_a_dot_lands(orient, chest_wall, crop):
    image = _breast(chest_wall=chest_wall, label=False)
    point = (120, 40) if chest_wall == "left" else (120, 159)
    image[point[0] - 1 : point[0] + 2, point[1] - 1 : point[1] + 2] = 5.0  # a bright 3x3 dot
    out = preprocess_image(image, image_size=64, orient=orient, crop_breast=crop)
    assert out.geometry.flipped == (orient and chest_wall == "right")
    landed = np.unravel_index(np.argmax(out.image[..., 0]), (64, 64))
    mapped = out.geometry.to_input(*point)
    assert abs(landed[0] - mapped[0]) <= 1.0 and abs(landed[1] - mapped[1]) <= 1.0


@pytest.mark.parametrize("orient, crop", [(False, False), (True, True)])
def test_to_original_of_one_hot_peaks_at_the_point(orient, crop):
    image = _breast(chest_wall="right")
    out = preprocess_image(image, image_size=64, orient=orient, crop_breast=crop)
    geometry = out.geometry
    point = (150, 170)
    row, col = (int(round(v)) for v in geometry.to_input(*point))
    one_hot = np.zeros((64, 64), np.float32)
    one_hot[row, col] = 1.0
    back = geometry.to_original(one_hot)
    assert back.shape == image.shape
    peak = np.unravel_index(np.argmax(back), back.shape)
    tolerance = 1.0 / min(geometry.scale) + 1.0  # one input pixel, in original pixels
    assert abs(peak[0] - point[0]) <= tolerance and abs(peak[1] - point[1]) <= tolerance
    # A channel axis and a coarse (e.g. 8x8 CAM) map are accepted too.
    assert geometry.to_original(one_hot[..., None]).shape == image.shape
    assert geometry.to_original(np.ones((8, 8))).shape == image.shape


def test_to_original_is_zero_outside_the_crop():
    image = _breast()
    geometry = preprocess_image(image, image_size=48, crop_breast=True).geometry
    top, left, bottom, right = geometry.crop_box
    back = geometry.to_original(np.ones((48, 48), np.float32))
    assert np.all(back[top:bottom, left:right] > 0.99)
    outside = np.ones(image.shape, bool)
    outside[top:bottom, left:right] = False
    assert outside.any() and np.all(back[outside] == 0.0)


def test_radius_to_input_and_geometry_round_trip():
    geometry = preprocess_image(np.ones((100, 100)), image_size=50).geometry
    assert geometry.radius_to_input(10) == pytest.approx(5.0)
    assert Geometry.from_dict(geometry.to_dict()) == geometry


def test_breast_crop_ignores_the_label_and_keeps_a_margin():
    image = _breast(height=400, width=300)
    top, left, bottom, right = breast_bbox(image)
    breast_rows = np.nonzero((image > 0.5).any(axis=1) & (image[:, :200] > 0.5).any(axis=1))[0]
    # The half ellipse spans rows 40..360 and cols 0..180; the label sits at cols 280..294.
    assert top <= breast_rows.min() and bottom > breast_rows.max()
    assert left == 0 and 180 <= right < 280
    assert top > 0 and bottom < 400  # cropped, not the full frame


def test_breast_crop_of_empty_or_constant_image_is_the_full_frame():
    assert breast_bbox(np.zeros((50, 70), np.float32)) == (0, 0, 50, 70)
    assert breast_bbox(np.full((50, 70), 0.3, np.float32)) == (0, 0, 50, 70)
    out = preprocess_image(np.zeros((50, 70)), image_size=32, crop_breast=True, orient=True)
    assert np.all(out.image == 0.0)


def test_orientation_puts_the_chest_wall_on_the_left():
    left_image = _breast(chest_wall="left")
    right_image = _breast(chest_wall="right")
    assert not needs_flip(left_image) and needs_flip(right_image)
    a = preprocess_image(left_image, image_size=64, orient=True).image
    b = preprocess_image(right_image, image_size=64, orient=True).image
    # Same breast, now both chest-wall-left (labels differ in position only).
    assert a[..., 0][:, :32].sum() > a[..., 0][:, 32:].sum()
    assert b[..., 0][:, :32].sum() > b[..., 0][:, 32:].sum()
    # Content decides over laterality; laterality only breaks ties.
    assert not needs_flip(left_image, "L")
    symmetric = np.ones((40, 40), np.float32)
    assert needs_flip(symmetric, "L") and not needs_flip(symmetric, "R") and not needs_flip(symmetric)
    flipped = preprocess_image(symmetric, image_size=16, orient=True, laterality="L").geometry
    assert flipped.flipped
    assert not preprocess_image(right_image, image_size=16, orient=False).geometry.flipped


def test_orientation_edge_contact_beats_tissue_mass():
    # A drooping breast: most tissue hangs to the left, but the film cuts the
    # breast along the whole right edge, so the chest wall is on the right.
    rows, cols = np.mgrid[0:300, 0:200]
    image = np.full((300, 200), 0.02, np.float32)
    image[:, 192:] = 0.6  # along the chest wall
    image[((rows - 200) ** 2 + (cols - 75) ** 2) <= 65**2] = 0.6
    image[195:205, 75:192] = 0.6  # joins the two: one connected breast
    half = image.shape[1] // 2
    assert image[:, :half].sum() > image[:, half:].sum()  # mass alone would not flip
    assert needs_flip(image)
    assert not needs_flip(image[:, ::-1])


def test_otsu_separates_two_levels():
    values = np.concatenate([np.full(500, 0.1), np.full(300, 0.7)])
    threshold = otsu_threshold(values)
    assert 0.1 < threshold < 0.7


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        preprocess_image(np.zeros((4, 4, 3)), image_size=8)
    with pytest.raises(ConfigError, match="image_size=0"):
        preprocess_image(np.zeros((4, 4)), image_size=0)
    nan_image = np.ones((10, 10), np.float32)
    nan_image[0, 0] = np.nan
    assert np.isfinite(preprocess_image(nan_image, image_size=8).image).all()


def test_breast_mask_is_the_breast_not_the_padding_a_label_or_the_background():
    from mammojax.data.preprocess import breast_mask

    pixels = np.zeros((60, 120), np.float32)  # wide: the model input is padded above and below
    rows, cols = np.mgrid[0:60, 0:120]
    breast = ((rows - 30) / 28.0) ** 2 + (cols / 70.0) ** 2 < 1.0
    pixels[breast] = 0.6
    pixels[25:35, 10:20] = 0.01  # dark fat inside the breast: still breast
    pixels[5:12, 100:112] = 1.0  # a film label, apart from the breast
    prepared = preprocess_image(pixels, image_size=48)
    mask = breast_mask(prepared.image, prepared.geometry)
    top, _ = prepared.geometry.pad_offset
    height, width = prepared.geometry.resized_shape
    assert not mask[:top].any() and not mask[top + height:].any()  # padding is never breast
    back = prepared.geometry.to_original(mask.astype(np.float32)) > 0.5
    assert (back == breast)[2:-2, 2:-2].mean() > 0.95  # the ellipse, holes filled, no label
    assert not back[5:12, 100:112].any()
    # A blank input has no breast to find: the whole content, never the padding.
    blank = preprocess_image(np.zeros((60, 120), np.float32), image_size=48)
    everything = breast_mask(blank.image, blank.geometry)
    assert everything.sum() == height * width and not everything[:top].any()


# --- non-square inputs (data.image_size = "HxW") ---------------------------------------------

FILM = (3328, 2560)  # a full-field digital mammogram's shape
INPUT = (1024, 832)  # the same aspect, rounded to a multiple of 32 for the ResNet's stages


@pytest.fixture(scope="module")
def film():
    """A textured breast on a raw-0 background (the film outside the breast is exactly 0)."""
    breast = _breast(*FILM, label=False) > 0.1
    texture = np.random.default_rng(3).uniform(0.3, 0.9, FILM).astype(np.float32)
    return np.where(breast, texture, 0.0).astype(np.float32)


@pytest.mark.parametrize("value, shape", [
    (224, (224, 224)), (np.int64(64), (64, 64)), ("256", (256, 256)), ("1024x832", (1024, 832)),
    (" 1024 X 832 ", (1024, 832)), ((1024, 832), (1024, 832)), ([96, 64], (96, 64)), ("8x8", (8, 8)),
])
def test_input_shape_reads_an_int_a_string_or_a_pair(value, shape):
    assert input_shape(value) == shape
    assert input_shape(image_size_of(shape)) == shape


@pytest.mark.parametrize("value", [0, -32, 7, "4x64", "1024x", "x832", "1024x832x3", "big", "", "1e3",
                                   True, 224.0, (224,), (224, 224, 1), None, "²"])
def test_input_shape_refuses_anything_else_naming_the_value(value):
    with pytest.raises(ConfigError, match=r"^data\.image_size=") as err:
        input_shape(value, name="data.image_size")
    assert "\n" not in str(err.value) and repr(value) in str(err.value)


def test_the_setting_of_a_square_shape_is_the_plain_int_earlier_configs_hold():
    assert image_size_of((224, 224)) == 224 and image_size_of(224) == 224
    assert image_size_of((1024, 832)) == "1024x832"


def test_a_mammogram_keeps_its_aspect_inside_an_hxw_input(film):
    out = preprocess_image(film, image_size="1024x832")
    geometry = out.geometry
    assert out.image.shape == (*INPUT, 1) and geometry.input_shape == INPUT
    height, width = geometry.resized_shape
    assert height == INPUT[0] and abs(width - height * FILM[1] / FILM[0]) <= 1.0  # aspect within a pixel
    (top, left) = geometry.pad_offset
    assert top == 0 and left == (INPUT[1] - width) // 2
    content = out.image[top:top + height, left:left + width, 0]
    assert content.mean() == pytest.approx(0.0, abs=1e-3) and content.std() == pytest.approx(1.0, abs=1e-3)
    # The padding is what the film's raw-0 background became: background, not a mean-grey frame.
    padding = np.ones(INPUT, bool)
    padding[top:top + height, left:left + width] = False
    background = content[:, -1]  # the film's edge opposite the chest wall, outside the breast: raw 0
    assert padding.any() and np.all(out.image[padding, 0] == background[0])
    assert np.all(background == background[0]) and background[0] < -0.5
    assert not input_breast_mask(out.image)[padding].any()


def test_normalisation_does_not_depend_on_the_padding(film):
    narrow = preprocess_image(film, image_size=(1024, 832))
    square = preprocess_image(film, image_size=1024)
    assert narrow.geometry.resized_shape == square.geometry.resized_shape
    assert narrow.geometry.pad_offset != square.geometry.pad_offset

    def content(out):
        (top, left), (height, width) = out.geometry.pad_offset, out.geometry.resized_shape
        return out.image[top:top + height, left:left + width]

    np.testing.assert_array_equal(content(narrow), content(square))


def test_a_lesion_point_round_trips_through_an_hxw_input(film):
    image = film[:, ::-1].copy()  # chest wall on the right: orient flips it
    point = (2100, FILM[1] - 700)
    image[point[0] - 6:point[0] + 7, point[1] - 6:point[1] + 7] = 5.0  # a bright 13x13 dot
    out = preprocess_image(image, image_size="1024x832", orient=True)
    geometry = out.geometry
    assert geometry.flipped
    plane = out.image[..., 0]
    rows, cols = np.nonzero(plane > 0.25 * plane.max())  # the dot, about 4x4 input pixels
    weights = plane[rows, cols]
    landed = (np.average(rows, weights=weights), np.average(cols, weights=weights))
    mapped = geometry.to_input(*point)
    assert abs(landed[0] - mapped[0]) <= 0.5 and abs(landed[1] - mapped[1]) <= 0.5
    one_hot = np.zeros(INPUT, np.float32)
    one_hot[int(round(mapped[0])), int(round(mapped[1]))] = 1.0
    back = geometry.to_original(one_hot)
    peak = np.unravel_index(np.argmax(back), back.shape)
    tolerance = 1.0 / min(geometry.scale) + 1.0  # one input pixel, in original pixels
    assert back.shape == FILM and abs(peak[0] - point[0]) <= tolerance and abs(peak[1] - point[1]) <= tolerance
    assert geometry.to_original(np.ones((32, 26))).shape == FILM  # a stage-4 CAM of a 1024x832 input
    assert Geometry.from_dict(geometry.to_dict()) == geometry
    # A geometry written before non-square inputs (``image_size: S``) still reads.
    old = {k: v for k, v in preprocess_image(film, image_size=64).geometry.to_dict().items() if k != "input_shape"}
    assert Geometry.from_dict({**old, "image_size": 64}).input_shape == (64, 64)
