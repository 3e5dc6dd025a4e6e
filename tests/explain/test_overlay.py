"""Overlays and panels: colours, blending, geometry back to the original image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mammojax.data.preprocess import preprocess_image
from mammojax.errors import MammojaxError
from mammojax.explain import overlay


def test_colormap_lut_is_matplotlibs_table_as_uint8():
    import matplotlib

    lut = overlay.colormap_lut("jet")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    expected = np.round(np.array(matplotlib.colormaps["jet"](0.0)[:3]) * 255)
    np.testing.assert_array_equal(lut[0], expected)  # jet starts dark blue
    assert lut[0, 2] > 100 and lut[0, 0] == 0 and lut[255, 0] > 100 and lut[255, 2] == 0
    assert not np.array_equal(overlay.colormap_lut("inferno"), lut)
    with pytest.raises(MammojaxError, match="jet"):
        overlay.colormap_lut("rainbowz")


def test_blend_mixes_grey_and_colour_by_alpha():
    pixels = np.array([[0.0, 1.0], [0.5, 0.25]], np.float32)
    heatmap = np.array([[1.0, 0.0], [0.5, 0.0]], np.float32)
    lut = overlay.colormap_lut("jet")
    out = overlay.blend(pixels, heatmap, alpha=0.25)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    np.testing.assert_allclose(out[0, 0], np.round(0.25 * lut[255].astype(float)), atol=1)
    np.testing.assert_allclose(out[0, 1], np.round(0.75 * 255 + 0.25 * lut[0].astype(float)), atol=1)
    np.testing.assert_array_equal(overlay.blend(pixels, heatmap, alpha=0.0)[..., 0],
                                  np.round(pixels * 255).astype(np.uint8))
    with pytest.raises(MammojaxError, match="alpha"):
        overlay.blend(pixels, heatmap, alpha=1.5)


def test_overlay_lands_the_hot_spot_on_the_original_anatomy():
    # A wide image (pad top/bottom in the model input): a hot spot placed at a
    # known input position must be hot at the matching original position.
    original = np.random.default_rng(0).uniform(0, 1, (60, 120)).astype(np.float32)
    prepared = preprocess_image(original, image_size=32)
    row, col = prepared.geometry.to_input(20, 90)
    heatmap = np.zeros((32, 32), np.float32)
    heatmap[int(round(row)), int(round(col))] = 1.0
    image = overlay.blend(original, prepared.geometry.to_original(heatmap), alpha=1.0)
    assert image.shape == (60, 120, 3)
    red = image[..., 0].astype(int) - image[..., 2].astype(int)  # jet: hot = red, cold = blue
    hot_row, hot_col = np.unravel_index(np.argmax(red), red.shape)
    assert abs(hot_row - 20) <= 2 and abs(hot_col - 90) <= 2


def test_blend_colours_only_inside_the_mask():
    pixels = np.full((4, 4), 0.2, np.float32)
    heatmap = np.ones((4, 4), np.float32)
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    out = overlay.blend(pixels, heatmap, alpha=0.6, mask=mask)
    assert (out[~mask] == 51).all()  # untouched grey outside
    assert (out[mask][:, 0] > 51).all() and (out[mask][:, 2] < 51).all()  # jet's dark red inside


def test_on_breast_drops_the_background_peak_and_rescales():
    heatmap = np.array([[1.0, 0.2], [0.4, 0.0]], np.float32)  # peak on the background
    breast = np.array([[False, True], [True, True]])
    shown = overlay.on_breast(heatmap, breast)
    np.testing.assert_allclose(shown, [[0.0, 0.5], [1.0, 0.0]])
    assert not overlay.on_breast(heatmap, np.zeros((2, 2), bool)).any()  # nothing on the breast


def test_render_panel_and_save_png(tmp_path):
    original = np.linspace(0, 1, 40 * 30, dtype=np.float32).reshape(40, 30)
    blended = overlay.blend(original, original[::-1], alpha=0.4)
    lesion = np.zeros((40, 30), bool)
    lesion[10:20, 10:20] = True
    panel = overlay.render_panel(original, blended, 0.873, "abnormal", tau=0.41, positive_class="abnormal",
                                 title="case.png", lesion_mask=lesion)
    assert panel.dtype == np.uint8 and panel.ndim == 3 and panel.shape[2] == 3
    assert panel.shape[1] > panel.shape[0]  # two images side by side, a colour bar
    assert panel.std() > 10  # something was drawn
    # No empty third: every third of the canvas's width holds drawing, not blank paper.
    for third in np.array_split(panel, 3, axis=1):
        assert (third < 250).any(axis=2).mean() > 0.2
    green = (panel[..., 1] > 200) & (panel[..., 0] < 100) & (panel[..., 2] < 100)
    assert green.sum() > 20  # the lesion outline (lime)
    jet = overlay.colormap_lut("jet")
    assert any((np.abs(panel.astype(int) - c).sum(axis=2) < 20).sum() > 10 for c in (jet[0], jet[255]))  # colour bar
    path = overlay.save_png(panel, tmp_path / "panel.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (panel.shape[1], panel.shape[0])
        np.testing.assert_array_equal(np.asarray(im), panel)
