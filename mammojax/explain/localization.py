"""Does the heatmap point at the lesion, and does the model rely on it?

All functions are NumPy over one image and its lesions:

* **pointing game** (Zhang et al. 2016): a hit when the CAM's peak falls inside
  a lesion (optionally within ``tolerance`` pixels of it);
* **mass inside**: the share of the CAM's total mass inside the lesions;
* **chance level**: the lesion area over the breast (or image) area, i.e. the
  hit rate of a peak placed uniformly at random in the breast, and the mass
  inside the lesion of a uniform map over the breast. The breast is the one
  heatmaps are shown on (:func:`mammojax.data.preprocess.breast_mask`);
* **deletion faithfulness**: the drop in cancer probability when the top-k %
  CAM pixels of the model input are replaced by the image mean, against the
  drop for a region of the same size and shape at a random place (the CAM's
  region rolled by a seeded random offset).

Localization is measured in original-image pixels (where annotations live);
deletion in model-input pixels (where the model looks).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from mammojax.data.preprocess import disc_mask
from mammojax.data.readers import read_image
from mammojax.errors import MammojaxError

# Purpose id for np.random.default_rng([seed, purpose, index]) (docs/ARCHITECTURE.md).
PURPOSE_DELETION = 601


def has_location(lesion) -> bool:
    """True when a lesion can be drawn: a mask, or a centre (with or without radius)."""
    return lesion.mask_path is not None or (lesion.row is not None and lesion.col is not None)


def lesion_mask(lesions: Sequence, shape: tuple[int, int], *, tolerance: float = 0.0,
                read_mask: Callable[[str], np.ndarray] | None = None) -> np.ndarray:
    """Union of the lesions' extents as a bool ``(H, W)`` mask, grown by ``tolerance`` px.

    A lesion with ``mask_path`` uses that mask (resized by nearest neighbour if
    its shape differs); otherwise a disc of ``radius`` around ``(row, col)``
    (a single pixel without a radius). Lesions without any location are
    skipped; an all-False mask means nothing could be placed.
    """
    mask = np.zeros(shape, dtype=bool)
    for lesion in lesions:
        if lesion.mask_path is not None:
            drawn = _resize_nearest((read_mask or _read_mask)(lesion.mask_path) > 0.5, shape)
            mask |= drawn
        elif lesion.row is not None and lesion.col is not None:
            mask |= disc_mask(shape, lesion.row, lesion.col, lesion.radius or 0.0)
    if tolerance > 0 and mask.any():
        from scipy import ndimage

        mask = ndimage.distance_transform_edt(~mask) <= tolerance
    return mask


def _read_mask(path: str) -> np.ndarray:
    return read_image(path).pixels


def _resize_nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == tuple(shape):
        return mask
    rows = (np.arange(shape[0]) * mask.shape[0] / shape[0]).astype(int)
    cols = (np.arange(shape[1]) * mask.shape[1] / shape[1]).astype(int)
    return mask[rows][:, cols]


def peak(heatmap: np.ndarray) -> tuple[int, int]:
    """(row, col) of the map's maximum (the first one on ties)."""
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(row), int(col)


def pointing_hit(heatmap: np.ndarray, mask: np.ndarray) -> bool:
    """The pointing game for one image: is the peak inside the (grown) lesion mask?

    An empty heatmap points nowhere and misses.
    """
    if not np.any(heatmap > 0):
        return False
    return bool(mask[peak(heatmap)])


def mass_inside(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the heatmap's mass inside the mask, in [0, 1]; NaN for an empty map."""
    total = float(np.sum(heatmap, dtype=np.float64))
    if total <= 0:
        return float("nan")
    return float(np.sum(heatmap[mask], dtype=np.float64)) / total


def chance_level(mask: np.ndarray, region: np.ndarray | None = None) -> float:
    """Hit rate of a peak placed uniformly at random in ``region`` (default: the image)."""
    if region is None:
        return float(mask.mean())
    area = int(region.sum())
    return float((mask & region).sum()) / area if area else 0.0


def top_fraction_mask(heatmap: np.ndarray, fraction: float) -> np.ndarray:
    """The ``fraction`` of pixels with the highest heatmap values (exactly that many)."""
    if not 0.0 < fraction < 1.0:
        raise MammojaxError(f"deletion fraction must be in (0, 1), got {fraction}")
    count = max(1, int(round(fraction * heatmap.size)))
    order = np.argsort(heatmap, axis=None, kind="stable")[::-1][:count]
    mask = np.zeros(heatmap.size, dtype=bool)
    mask[order] = True
    return mask.reshape(heatmap.shape)


def random_region_like(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same region moved to a random place: ``mask`` rolled by a random offset.

    Rolling keeps the region's size and shape (a contiguous blob stays a blob),
    so the comparison with the CAM region is about place, not about area.
    """
    shift = (int(rng.integers(mask.shape[0])), int(rng.integers(mask.shape[1])))
    return np.roll(mask, shift, axis=(0, 1))


def delete_region(image: np.ndarray, region: np.ndarray, *, fill: str = "mean") -> np.ndarray:
    """``image`` (S, S, 1) with ``region`` (S, S) replaced by the image mean or background."""
    if fill == "mean":
        value = float(image.mean())
    elif fill == "background":
        value = float(image.min())  # z-scored input: the padding/background is the minimum
    else:
        raise MammojaxError(f"unknown deletion fill {fill!r}; valid: mean, background")
    out = np.array(image, dtype=np.float32, copy=True)
    out[region] = value
    return out


def deletion_images(image: np.ndarray, heatmap: np.ndarray, *, fraction: float, rng: np.random.Generator,
                    num_random: int = 1, fill: str = "mean") -> np.ndarray:
    """``(2 + num_random, S, S, 1)``: the image, CAM region deleted, random regions deleted."""
    region = top_fraction_mask(heatmap, fraction)
    batch = [np.asarray(image, np.float32), delete_region(image, region, fill=fill)]
    batch += [delete_region(image, random_region_like(region, rng), fill=fill) for _ in range(num_random)]
    return np.stack(batch)


def summarize(rows: Sequence[dict]) -> dict:
    """Mean metrics over per-image rows (NaN-aware), each beside its no-knowledge level.

    ``pointing_lift`` = hit rate / chance, ``mass_lift`` = mass inside the
    lesion / the lesion's share of the area (a uniform map's mass there):
    1.0 means no better than a heatmap that knows nothing.
    """

    def mean(key):
        values = np.array([r[key] for r in rows if r.get(key) is not None], dtype=np.float64)
        values = values[np.isfinite(values)]
        return float(values.mean()) if values.size else None

    hit_rate, chance = mean("hit"), mean("chance")
    mass, share = mean("mass_inside"), mean("lesion_share")
    drop_cam, drop_random = mean("drop_cam"), mean("drop_random")
    return {
        "images": len(rows),
        "pointing_game": hit_rate,
        "pointing_chance": chance,
        "pointing_lift": hit_rate / chance if hit_rate is not None and chance else None,
        "mass_inside": mass,
        "lesion_area_share": share,
        "mass_lift": mass / share if mass is not None and share else None,
        "drop_cam": drop_cam,
        "drop_random": drop_random,
        "faithfulness_gap": (drop_cam - drop_random
                             if drop_cam is not None and drop_random is not None else None),
    }
