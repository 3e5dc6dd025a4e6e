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


def on_breast(heatmap: np.ndarray, breast: np.ndarray) -> np.ndarray:
    """The heatmap as shown: 0 outside ``breast``, rescaled so its peak on the breast is 1.

    A map's peak on the background or the padding says nothing about the
    breast, so it is dropped before the colours are scaled; an empty map
    (nothing on the breast) stays all zero. float32, same shape.
    """
    shown = np.where(np.asarray(breast, bool), np.asarray(heatmap, np.float32), 0.0)
    peak = float(shown.max()) if shown.size else 0.0
    return (shown / peak if peak > 1e-12 else np.zeros_like(shown)).astype(np.float32)


def blend(pixels: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.4,
          colormap: str = "jet", weight_by_heat: bool = False, mask: np.ndarray | None = None) -> np.ndarray:
    """``(1 - w) * grey + w * colour`` for same-sized (H, W) image and heatmap.

    ``w = alpha`` everywhere, or with ``weight_by_heat`` ``w = alpha * heatmap``:
    cold regions then show the mammogram untouched (the web page's overlay).
    ``mask`` (bool (H, W), e.g. the breast) limits the colour to where it is
    True: elsewhere ``w = 0`` and the grey image shows unchanged.
    """
    if not 0.0 <= alpha <= 1.0:
        raise MammojaxError(f"overlay alpha must be in [0, 1], got {alpha}")
    pixels, heatmap = np.asarray(pixels), np.asarray(heatmap)
    if pixels.shape != heatmap.shape:
        raise ValueError(f"image {pixels.shape} and heatmap {heatmap.shape} differ in shape")
    weight = np.full(pixels.shape, alpha, np.float32)
    if weight_by_heat:
        weight *= np.clip(heatmap.astype(np.float32), 0.0, 1.0)
    if mask is not None:
        weight *= np.asarray(mask, bool)
    weight = weight[..., None]
    mixed = (1.0 - weight) * to_gray_rgb(pixels).astype(np.float32) \
        + weight * colorize(heatmap, colormap).astype(np.float32)
    return np.round(mixed).astype(np.uint8)


# Colours of the panel's drawings (matplotlib names).
LESION_COLOUR = "lime"


def render_panel(original: np.ndarray, overlay: np.ndarray, probability: float, decision: str, *,
                 tau: float, positive_class: str, heatmap_name: str = "Grad-CAM", title: str | None = None,
                 lesion_mask: np.ndarray | None = None, colormap: str = "jet", height_inches: float = 4.0,
                 dpi: int = 100) -> np.ndarray:
    """The report panel as uint8 RGB: the original and the overlay side by side, a colour bar, a header.

    The header says the probability of ``positive_class`` next to the
    threshold tau and the decision; the colour bar reads the heatmap's
    colours (relative within the image, 0 to its peak, not probabilities);
    ``lesion_mask`` (bool, the original's grid), when known, is outlined on
    both images. Matplotlib Agg, no pyplot.
    """
    from matplotlib import cm, colors
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    original = np.asarray(original)
    height, width = original.shape[:2]
    aspect = width / max(1, height)
    header = 0.75  # inches of text above the images
    bar = 0.55  # inches for the colour bar and its ticks
    image_height = height_inches
    figure_width = 2 * image_height * aspect + bar + 0.2
    figure = Figure(figsize=(max(figure_width, 5.6), image_height + header), dpi=dpi)
    canvas = FigureCanvasAgg(figure)
    total_width, total_height = figure.get_size_inches()
    margin = (total_width - figure_width) / 2 + 0.05
    bottom, top = 0.02, image_height / total_height
    relation = "≥" if probability >= tau else "<"
    lines = ([title] if title else []) + [
        f"P({positive_class}) = {probability:.3f} {relation} τ = {tau:.3f}  →  decision: {decision}"]
    figure.text(0.5, 1 - 0.08 / total_height, "\n".join(lines), ha="center", va="top", fontsize=10)
    outlined = lesion_mask is not None and bool(np.any(lesion_mask))
    panes = ((original, "original" + (" (green: annotated lesion)" if outlined else "")),
             (overlay, f"{heatmap_name}, over the breast"))
    for column, (image, label) in enumerate(panes):
        left = (margin + column * image_height * aspect) / total_width
        axes = figure.add_axes((left, bottom, image_height * aspect / total_width, top - bottom))
        axes.imshow(image if image.ndim == 3 else to_gray_rgb(image), interpolation="bilinear")
        if outlined:
            axes.contour(np.asarray(lesion_mask, np.float32), levels=[0.5], colors=LESION_COLOUR, linewidths=1.2)
        axes.set_title(label, fontsize=9)
        axes.set_axis_off()
    bar_left = (margin + 2 * image_height * aspect + 0.08) / total_width
    bar_axes = figure.add_axes((bar_left, bottom + 0.1 * (top - bottom), 0.12 / total_width, 0.8 * (top - bottom)))
    scale = cm.ScalarMappable(norm=colors.Normalize(0.0, 1.0), cmap=colormap)
    colorbar = figure.colorbar(scale, cax=bar_axes, ticks=[0.0, 0.5, 1.0])
    colorbar.ax.tick_params(labelsize=8)
    colorbar.set_label("heat (relative)", fontsize=8)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Writes a uint8 RGB (or grey) array as PNG."""
    from PIL import Image

    path = Path(path)
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path, format="PNG")
    return path
