"""Screen image files before a dataset uses them.

A file is kept only if it decodes to a usable mammogram. Every rejected file
gets one short reason (the same wording ``read_image`` uses) so a run can
report what it left out and why, instead of crashing on file 3,817 of 10,000:

- unreadable or corrupt / truncated / empty file (from the reader),
- oversized: more pixels than ``max_pixels`` (checked before decoding),
- wrong shape: not a 2-D grayscale image, or a side shorter than ``min_size``,
- constant image: every pixel the same value, so there is no content.

Files that read fine but need a note are kept and *flagged*: FOR
PROCESSING DICOMs (raw detector data, :data:`FOR_PROCESSING_REASON`), and
films with a white background (:data:`INVERTED_REASON`), which
preprocessing with ``fix_inverted`` (the default) puts right.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable

import numpy as np

from mammojax.data.preprocess import looks_inverted
from mammojax.data.readers import DEFAULT_MAX_PIXELS, ImageMeta, LoadedImage, read_image
from mammojax.data.records import Exclusion
from mammojax.errors import ImageReadError

# Said wherever a FOR PROCESSING image is met (summary, predict rows).
FOR_PROCESSING_REASON = "FOR PROCESSING (raw detector data), scores are not meaningful"
INVERTED_REASON = "inverted (white background); put right when preprocessed with fix_inverted"


def image_flags(meta: ImageMeta) -> tuple[str, ...]:
    """Reasons a readable image should not be trusted (empty for a normal one)."""
    return (FOR_PROCESSING_REASON,) if meta.for_processing else ()


def screen_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_size: int = 32) -> LoadedImage:
    """Read ``path`` and check it is usable; return the decoded image.

    Raises:
        ImageReadError: with a short reason (see the module doc).
    """
    loaded = read_image(path, max_pixels=max_pixels)
    pixels = loaded.pixels
    if pixels.ndim != 2:
        raise ImageReadError(path, f"wrong shape: expected a 2-D grayscale image, got {pixels.shape}")
    if min(pixels.shape) < min_size:
        height, width = pixels.shape
        raise ImageReadError(path, f"wrong shape: {height} x {width} is smaller than {min_size} pixels per side")
    if not np.all(np.isfinite(pixels)):
        raise ImageReadError(path, "corrupt pixel values (NaN or infinity)")
    if float(pixels.max()) == float(pixels.min()):
        raise ImageReadError(path, "constant image (no content)")
    return loaded


def screen_files(
    paths: Iterable[str | os.PathLike],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_size: int = 32,
    progress: Callable[[int], None] | None = None,
    flagged: list | None = None,
) -> tuple[list[str], list]:
    """Split ``paths`` into usable files and :class:`~mammojax.data.records.Exclusion`.

    Never raises for one bad file: every user-caused failure becomes an
    exclusion with its reason. Images are decoded one at a time and dropped,
    so memory stays at one image.

    Args:
        progress: called with the number of files screened so far.
        flagged: usable files with an :func:`image_flags` reason are also
            appended here, as ``Exclusion(path, reason)`` (they stay usable).

    Returns:
        ``(ok_paths, exclusions)``, both in input order.
    """
    ok: list[str] = []
    excluded: list = []
    for done, path in enumerate(paths, start=1):
        try:
            loaded = screen_image(path, max_pixels=max_pixels, min_size=min_size)
        except ImageReadError as err:
            excluded.append(Exclusion(str(path), err.reason))
        except MemoryError:
            excluded.append(Exclusion(str(path), "oversized image: out of memory while decoding"))
        except Exception as err:  # a decoder error no reader anticipated: still one file
            excluded.append(Exclusion(str(path), f"unreadable or corrupt file ({type(err).__name__})"))
        else:
            ok.append(str(path))
            if flagged is not None:
                flagged.extend(Exclusion(str(path), reason) for reason in image_flags(loaded.meta))
                if looks_inverted(loaded.pixels):
                    flagged.append(Exclusion(str(path), INVERTED_REASON))
            del loaded
        if progress is not None:
            progress(done)
    return ok, excluded
