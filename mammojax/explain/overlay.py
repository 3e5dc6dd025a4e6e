"""Heatmap overlays and report panels as uint8 RGB arrays (and PNG files).

Everything returns ``(H, W, 3) uint8`` so the CLI writes it with Pillow and the
web page shows it directly. Matplotlib is used only for its colormap tables
and its Agg renderer, never pyplot (no global figure state, no GUI backend).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from mammojax.errors import MammojaxError

COLORMAPS = ("jet", "inferno", "viridis", "turbo")


@functools.lru_cache(maxsize=8)
def colormap_lut(name: str = "jet") -> np.ndarray:
    """A ``(256, 3) uint8`` lookup table for a matplotlib colormap."""
    if name not in COLORMAPS:
        raise MammojaxError(f"unknown colormap {name!r}; valid: {', '.join(COLORMAPS)}")
    import matplotlib

    table = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
    lut = np.round(table * 255.0).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def to_gray_rgb(pixels: np.ndarray) -> np.ndarray:
    """A grey image (H, W) with values in [0, 1] as uint8 RGB."""
    gray = np.round(np.clip(np.asarray(pixels, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def colorize(heatmap: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """A [0, 1] heatmap (H, W) as uint8 RGB through the colormap."""
    index = np.round(np.clip(np.asarray(heatmap, np.float32), 0.0, 1.0) * 255.0).astype(np.intp)
    return colormap_lut(colormap)[index]


def blend(pixels: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.4,
          colormap: str = "jet", weight_by_heat: bool = False) -> np.ndarray:
    """``(1 - w) * grey + w * colour`` for same-sized (H, W) image and heatmap.

    ``w = alpha`` everywhere, or with ``weight_by_heat`` ``w = alpha * heatmap``:
    cold regions then show the mammogram untouched (the web page's overlay).
    """
    if not 0.0 <= alpha <= 1.0:
        raise MammojaxError(f"overlay alpha must be in [0, 1], got {alpha}")
    pixels, heatmap = np.asarray(pixels), np.asarray(heatmap)
    if pixels.shape != heatmap.shape:
        raise ValueError(f"image {pixels.shape} and heatmap {heatmap.shape} differ in shape")
    weight = alpha * np.clip(heatmap.astype(np.float32), 0.0, 1.0)[..., None] if weight_by_heat else alpha
    mixed = (1.0 - weight) * to_gray_rgb(pixels).astype(np.float32) \
        + weight * colorize(heatmap, colormap).astype(np.float32)
    return np.round(mixed).astype(np.uint8)


def overlay_on_original(original: np.ndarray, heatmap: np.ndarray, geometry, *, alpha: float = 0.4,
                        colormap: str = "jet") -> np.ndarray:
    """A model-input heatmap (S, S) (or any square map) blended on the ORIGINAL image.

    ``geometry.to_original`` undoes the padding, resize, flip and crop, so the
    colours land on the anatomy the model saw; outside the crop the map is 0.
    """
    return blend(original, geometry.to_original(heatmap), alpha=alpha, colormap=colormap)


def render_panel(original: np.ndarray, overlay: np.ndarray, probability: float, decision: str, *,
                 title: str | None = None, positive_class: str = "positive", height_inches: float = 4.0,
                 dpi: int = 100) -> np.ndarray:
    """original | overlay | text, as one uint8 RGB image (matplotlib Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    original = np.asarray(original)
    aspect = original.shape[1] / max(1, original.shape[0])
    figure = Figure(figsize=(height_inches * (2 * aspect + 0.9), height_inches), dpi=dpi)
    canvas = FigureCanvasAgg(figure)
    grid = figure.add_gridspec(1, 3, width_ratios=[aspect, aspect, 0.9], wspace=0.05,
                               left=0.02, right=0.98, top=0.9, bottom=0.02)
    for column, (image, label) in enumerate(((original, "original"), (overlay, "Grad-CAM"))):
        axes = figure.add_subplot(grid[0, column])
        axes.imshow(image if image.ndim == 3 else to_gray_rgb(image), interpolation="bilinear")
        axes.set_title(label, fontsize=10)
        axes.set_axis_off()
    text = figure.add_subplot(grid[0, 2])
    text.set_axis_off()
    lines = ([title] if title else []) + [f"P({positive_class}) = {probability:.3f}", f"decision: {decision}"]
    text.text(0.05, 0.5, "\n".join(lines), fontsize=11, va="center", ha="left", wrap=True,
              transform=text.transAxes)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Writes a uint8 RGB (or grey) array as PNG."""
    from PIL import Image

    path = Path(path)
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path, format="PNG")
    return path
