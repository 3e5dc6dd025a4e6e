"""Checks of the scorer computed the slow, obvious way (no mammojax.scoring code)."""

from __future__ import annotations

import numpy as np


def plain_logits(model, variables, images) -> np.ndarray:
    """One eval-mode pass per image, float64."""
    return np.asarray(model.apply(variables, np.asarray(images, np.float32), train=False)[0], np.float64)


def brute_force_window_margin(model, variables, image, *, size: int, stride: int, top_k: int,
                              tta_hflip: bool = True) -> float:
    """Every breast window, its lesion margin (mean with its mirror's), then the top-k mean."""
    from mammojax.scoring.windows import window_positions

    windows = np.stack([image[t:t + size, l:l + size] for t, l in window_positions(image, size, stride)])
    views = [windows, windows[:, :, ::-1]] if tta_hflip else [windows]
    margins = [(lambda z: z[:, 1] - z[:, 0])(plain_logits(model, variables, v)) for v in views]
    return float(np.sort(sum(margins) / len(margins))[::-1][:top_k].mean())


def softmax_probability(logits, temperature: float) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    return 1.0 / (1.0 + np.exp(z[:, 0] - z[:, 1]))
