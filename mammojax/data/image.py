"""A decoded image, as every reader returns it, and the pixel rules the readers share.

:class:`LoadedImage` is ``pixels`` float32 ``(H, W)`` in ``[0, 1]`` (bright =
dense tissue) plus an :class:`ImageMeta` of safe, non-identifying fields.
:mod:`mammojax.data.readers` (PNG, TIFF, JPEG, PNM) and
:mod:`mammojax.data.dicom` both build it with these helpers, so neither needs
the other: ``readers`` calls ``dicom`` for DICOM files, and ``dicom`` imports
only this module.
"""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple

import numpy as np

from mammojax.errors import ImageReadError

DEFAULT_MAX_PIXELS = 80_000_000

# ITU-R BT.601 luma weights, the same ones Pillow's convert("L") uses.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class ImageMeta:
    """Safe facts about an image: nothing here can identify a patient.

    Attributes:
        format: "png", "tiff", "jpeg", "pnm" or "dicom".
        bits_stored: significant bits per sample of the source (8, 12, 16...).
        photometric: "MONOCHROME1", "MONOCHROME2", "RGB", ... as in the source
            (pixels are always returned as bright = dense, whatever this says).
        laterality: "L", "R" or None when unknown.
        view: "CC", "MLO", "ML", ... or None when unknown.
        pixel_spacing: (row, column) spacing in mm, or None.
        for_processing: True for raw "FOR PROCESSING" DICOM images.
        manufacturer: the device manufacturer, or None.
        original_shape: (H, W) of the returned pixel array.
    """

    format: str
    bits_stored: int | None = None
    photometric: str | None = None
    laterality: str | None = None
    view: str | None = None
    pixel_spacing: tuple[float, float] | None = None
    for_processing: bool = False
    manufacturer: str | None = None
    original_shape: tuple[int, int] = (0, 0)


class LoadedImage(NamedTuple):
    """Decoded pixels (float32 (H, W) in [0, 1], bright = dense) and metadata."""

    pixels: np.ndarray
    meta: ImageMeta


def check_pixel_count(path: str | os.PathLike, count: int, max_pixels: int, what: str) -> None:
    """Raise ImageReadError when ``count`` decoded pixels exceed ``max_pixels``."""
    if count > max_pixels:
        raise ImageReadError(path, f"oversized image: {what} = {count:,} pixels exceeds max_pixels={max_pixels:,}")


def to_grayscale(arr: np.ndarray) -> np.ndarray:
    """Float32 luminance of an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array.

    Alpha is dropped; a 2-channel array is gray + alpha.
    """
    arr = np.asarray(arr)
    if arr.ndim == 2:
        return arr.astype(np.float32, copy=False)
    if arr.ndim != 3:
        raise ValueError(f"expected a 2-D or 3-D array, got shape {arr.shape}")
    channels = arr.shape[-1]
    if channels in (1, 2):
        return arr[..., 0].astype(np.float32)
    if channels in (3, 4):
        # Channel by channel keeps memory at one float32 plane per step.
        gray = arr[..., 0].astype(np.float32) * _LUMA_WEIGHTS[0]
        gray += arr[..., 1].astype(np.float32) * _LUMA_WEIGHTS[1]
        gray += arr[..., 2].astype(np.float32) * _LUMA_WEIGHTS[2]
        return gray
    raise ValueError(f"unsupported number of channels: {channels}")


def float_unit_range(arr: np.ndarray) -> np.ndarray:
    """Floating-point sources: keep [0, 1] data as is, else min-max scale."""
    arr = arr.astype(np.float32, copy=False)
    arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0.0 and hi <= 1.0:
        return arr
    if hi == lo:
        return np.zeros_like(arr)
    return (arr - np.float32(lo)) * np.float32(1.0 / (hi - lo))
