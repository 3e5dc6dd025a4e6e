"""Windows of a film for window scoring, and the map of their margins.

A patch classifier is run on exactly what it was trained on: ``size`` px
windows of the preprocessed film, not on the whole film (whose positions would
see context and no zero padding, a different input than any training patch).
"""

from __future__ import annotations

import numpy as np

from mammojax.data.preprocess import input_breast_mask


def window_positions(image: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Top-left ``(row, col)`` of the ``size`` windows on a ``stride`` grid whose centre is breast.

    The last row and column of windows are moved flush with the border so the
    whole film is covered; a film with no breast pixel keeps every window.
    """
    height, width = image.shape[:2]
    tops = np.unique(np.r_[np.arange(0, max(1, height - size + 1), stride), max(0, height - size)])
    lefts = np.unique(np.r_[np.arange(0, max(1, width - size + 1), stride), max(0, width - size)])
    breast = input_breast_mask(image)  # the breast patch training centres its negatives on
    grid = np.array([(t, l) for t in tops for l in lefts])
    keep = breast[np.minimum(grid[:, 0] + size // 2, height - 1), np.minimum(grid[:, 1] + size // 2, width - 1)]
    return grid[keep] if keep.any() else grid


def top_k_mean(margins: np.ndarray, k: int) -> float:
    """The film's lesion margin: the mean of its ``k`` highest window margins."""
    return float(np.sort(np.asarray(margins, np.float64))[::-1][:k].mean())


def margin_map(shape: tuple[int, int], positions: np.ndarray, margins: np.ndarray, size: int) -> np.ndarray:
    """``(H, W)`` float32 in [0, 1]: where the windows that raise the film's score lie.

    Each pixel takes the highest lesion margin of the windows covering it;
    negative margins (windows the classifier calls lesion-free) count as 0 and
    the map is scaled so its peak is 1, as a Grad-CAM map is (an all-negative
    film gives an all-zero map). The film's score is the mean of the top
    windows' margins, so the map's brightest squares are those windows.
    """
    heat = np.full(shape, -np.inf, np.float64)
    for (top, left), margin in zip(np.asarray(positions), np.asarray(margins, np.float64)):
        block = heat[top:top + size, left:left + size]
        np.maximum(block, margin, out=block)
    heat = np.maximum(heat, 0.0)  # uncovered pixels (-inf) and negative margins -> 0
    peak = heat.max() if heat.size else 0.0
    return (heat / peak if peak > 1e-12 else np.zeros(shape)).astype(np.float32)
