"""Read any supported image file into one float32 grayscale array.

``read_image(path)`` is the single entry point used by dataset loading,
caching, prediction and the web page. Whatever the file, the result is the
same: ``pixels`` float32 ``(H, W)`` in ``[0, 1]`` with bright = dense tissue,
plus an :class:`ImageMeta` holding only safe, non-identifying fields.

Values are scaled by what the source says its range is (the PNM ``maxval``,
the TIFF/PNG bit depth, the DICOM ``BitsStored`` or VOI output range), never
blindly by 65535, so a 12-bit image stored in 16 bits is not darkened 16x.
Colour inputs become grayscale by ITU-R BT.601 luminance.

The format is chosen from the file's first bytes, not its name: a PNG called
``x.dcm`` is read as a PNG. Files with no recognisable signature are tried as
DICOM without a preamble (old ACR-NEMA style files) when they look like one.

Every failure is an :class:`~mammojax.errors.ImageReadError` naming the file,
including Pillow's decompression-bomb guard: the pixel count is compared with
``max_pixels`` from the header before any pixel is decoded.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from mammojax.data.image import (DEFAULT_MAX_PIXELS, ImageMeta, LoadedImage,  # noqa: F401 (the readers' API)
                                 check_pixel_count, float_unit_range, to_grayscale)
from mammojax.errors import ImageReadError

_DICOM_SUFFIXES = {".dcm", ".dicom", ".dic", ".ima", ""}


def read_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read one image file (PNG, TIFF, JPEG, PGM/PPM or DICOM).

    Args:
        path: the file to read.
        max_pixels: refuse images with more pixels than this (checked from
            the header before decoding, so a decompression bomb costs nothing).

    Returns:
        ``LoadedImage(pixels, meta)``.

    Raises:
        ImageReadError: the file is missing, empty, truncated, corrupt, too
            large or of an unsupported format.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "dicom":
        # Imported here: pydicom is only needed when a DICOM is actually read.
        from mammojax.data.dicom import read_dicom

        return read_dicom(path, max_pixels=max_pixels)
    if fmt == "pnm":
        return _read_pnm(path, max_pixels)
    if fmt == "tiff":
        return _read_tiff(path, max_pixels)
    return _read_with_pillow(path, fmt, max_pixels)


def detect_format(path: str | os.PathLike) -> str:
    """Return the format of ``path`` from its signature bytes.

    Raises:
        ImageReadError: missing, empty or unrecognised file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory, not an image file") from None
    except OSError as e:
        raise ImageReadError(path, f"cannot open file ({e.strerror or type(e).__name__})") from None
    if not head:
        raise ImageReadError(path, "empty file")
    # DICOM first: its 128-byte preamble may itself be a TIFF header
    # (dual-personality files), which must not win.
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"2356" and head[2:3].isspace():
        return "pnm"
    if _looks_like_raw_dicom(head) or path.suffix.lower() in _DICOM_SUFFIXES:
        # No preamble: an ACR-NEMA style dataset, or a DICOM-named file we
        # let pydicom judge (it reports "not a DICOM file" if it is not).
        return "dicom"
    raise ImageReadError(path, "unsupported or unrecognised image format")


def _looks_like_raw_dicom(head: bytes) -> bool:
    # A dataset without preamble starts with a little-endian tag of group
    # 0x0002 (file meta) or 0x0008 (identifying module), element < 0x0100.
    return len(head) >= 8 and head[0:2] in (b"\x02\x00", b"\x08\x00") and head[3] == 0


def _unit_range(arr: np.ndarray, max_value: float) -> np.ndarray:
    """Scale integer-valued samples by the source's maximum, clipped to [0, 1]."""
    out = arr.astype(np.float32, copy=False) * np.float32(1.0 / max_value)
    return np.clip(out, 0.0, 1.0, out=out)


# --- Pillow: PNG, JPEG --------------------------------------------------------


def _read_with_pillow(path: Path, fmt: str, max_pixels: int) -> LoadedImage:
    from PIL import Image, UnidentifiedImageError

    label = fmt.upper()
    try:
        # Our own max_pixels check below replaces Pillow's bomb warning; its
        # hard error (above 2x its limit) still fires in open() and is mapped.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                check_pixel_count(path, width * height, max_pixels, f"{height} x {width}")
                mode = im.mode
                im.load()
                arr, bits, photometric = _pillow_to_gray(im)
    except ImageReadError:
        raise
    except Image.DecompressionBombError:
        raise ImageReadError(path, "oversized image: exceeds Pillow's decompression-bomb limit") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, f"corrupt or unreadable {label} file") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        reason = "truncated" if "truncated" in str(e).lower() else "corrupt or unreadable"
        raise ImageReadError(path, f"{reason} {label} file ({type(e).__name__})") from None
    if arr.ndim != 2:
        raise ImageReadError(path, f"unsupported {label} pixel layout (mode {mode})")
    meta = ImageMeta(format=fmt, bits_stored=bits, photometric=photometric, original_shape=arr.shape)
    return LoadedImage(arr, meta)


def _pillow_to_gray(im) -> tuple[np.ndarray, int, str]:
    """(pixels in [0, 1], source bits per sample, photometric) of a Pillow image."""
    mode = im.mode
    if mode in ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        colour = mode not in ("1", "L", "LA")
        if mode in ("P", "PA"):
            # A palette may be grayscale or colour; RGB + luminance covers both.
            im = im.convert("RGB")
        elif mode not in ("1", "L", "LA", "RGB", "RGBA", "RGBX"):
            im = im.convert("RGB")
        arr = np.asarray(im)
        if mode == "1":
            return arr.astype(np.float32), 1, "MONOCHROME2"
        return _unit_range(to_grayscale(arr), 255.0), 8, "RGB" if colour else "MONOCHROME2"
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grayscale PNG (Pillow gives "I;16", older versions "I").
        arr = np.asarray(im)
        return _unit_range(arr, 65535.0), 16, "MONOCHROME2"
    if mode == "F":
        return float_unit_range(np.asarray(im)), 32, "MONOCHROME2"
    raise ValueError(f"unsupported Pillow mode {mode}")


# --- TIFF ---------------------------------------------------------------------


def _read_tiff(path: Path, max_pixels: int) -> LoadedImage:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages:
                raise ImageReadError(path, "TIFF file has no images")
            page = tif.pages[0]  # multi-page TIFF: the first page, like DICOM's first frame
            height, width = int(page.imagelength), int(page.imagewidth)
            check_pixel_count(path, height * width, max_pixels, f"{height} x {width}")
            bits = int(page.bitspersample)
            photometric = int(page.photometric)
            separate_planes = int(page.planarconfig) == 2 and int(page.samplesperpixel) > 1
            arr = page.asarray()
    except ImageReadError:
        raise
    except (tifffile.TiffFileError, OSError, ValueError, EOFError, IndexError, KeyError) as e:
        reason = "truncated" if "truncat" in str(e).lower() else "corrupt or unreadable"
        raise ImageReadError(path, f"{reason} TIFF file ({type(e).__name__})") from None
    except NotImplementedError:
        # e.g. odd bit depths or codecs that need the optional imagecodecs package.
        raise ImageReadError(path, "unsupported TIFF encoding (NotImplementedError)") from None
    except Exception as e:  # tifffile raises TypeError & co. on inconsistent tags
        raise ImageReadError(path, f"corrupt or unreadable TIFF file ({type(e).__name__})") from None
    if separate_planes and arr.ndim == 3:
        arr = np.moveaxis(arr, 0, -1)  # (samples, H, W) -> (H, W, samples)
    arr = np.squeeze(arr)
    # TIFF photometric tags: 0 = MINISWHITE (inverted), 1 = MINISBLACK, 2 = RGB.
    if arr.ndim not in (2, 3):
        raise ImageReadError(path, f"unsupported TIFF pixel layout (shape {arr.shape})")
    if np.issubdtype(arr.dtype, np.floating):
        pixels = float_unit_range(to_grayscale(arr))
    elif np.issubdtype(arr.dtype, np.signedinteger):
        # Signed TIFF: shift to unsigned before scaling by the full range.
        offset = 2 ** (bits - 1)
        pixels = _unit_range(to_grayscale(arr.astype(np.float32) + offset), 2**bits - 1)
    else:
        pixels = _unit_range(to_grayscale(arr), 2**bits - 1)
    if arr.ndim == 2 and photometric == 0:
        pixels = 1.0 - pixels
    if pixels.ndim != 2:
        raise ImageReadError(path, f"unsupported TIFF pixel layout (shape {arr.shape})")
    names = {0: "MONOCHROME1", 1: "MONOCHROME2", 2: "RGB", 3: "PALETTE COLOR"}
    meta = ImageMeta(
        format="tiff",
        bits_stored=bits,
        photometric=names.get(photometric, str(photometric)),
        original_shape=pixels.shape,
    )
    return LoadedImage(pixels, meta)


# --- PNM (PGM/PPM, binary and ASCII) -----------------------------------------


def _read_pnm(path: Path, max_pixels: int) -> LoadedImage:
    """Parse PGM/PPM ourselves: exact ``maxval`` scaling and a size check first.

    MIAS ships P5 PGMs; P2 (ASCII), P3/P6 (colour) and 16-bit (maxval > 255,
    big-endian per the Netpbm spec) are read too.
    """
    data = path.read_bytes()
    try:
        magic, width, height, maxval, offset = _parse_pnm_header(data)
    except ValueError as e:
        raise ImageReadError(path, f"corrupt PNM header ({e})") from None
    check_pixel_count(path, width * height, max_pixels, f"{height} x {width}")
    channels = 3 if magic in (b"P3", b"P6") else 1
    count = width * height * channels
    if magic in (b"P5", b"P6"):
        dtype = np.dtype(">u2") if maxval > 255 else np.dtype("u1")
        needed = count * dtype.itemsize
        body = data[offset : offset + needed]
        if len(body) < needed:
            raise ImageReadError(path, f"truncated PNM file ({len(body)} of {needed} pixel bytes)")
        arr = np.frombuffer(body, dtype=dtype)
    else:
        tokens = data[offset:].split()
        if len(tokens) < count:
            raise ImageReadError(path, f"truncated PNM file ({len(tokens)} of {count} samples)")
        try:
            arr = np.array(tokens[:count], dtype=np.int64)
        except ValueError:
            raise ImageReadError(path, "corrupt PNM file (non-numeric sample)") from None
    arr = arr.reshape((height, width, channels) if channels == 3 else (height, width))
    pixels = _unit_range(to_grayscale(arr), float(maxval))
    meta = ImageMeta(
        format="pnm",
        bits_stored=int(maxval).bit_length(),
        photometric="RGB" if channels == 3 else "MONOCHROME2",
        original_shape=pixels.shape,
    )
    return LoadedImage(pixels, meta)


def _parse_pnm_header(data: bytes) -> tuple[bytes, int, int, int, int]:
    """(magic, width, height, maxval, offset of the pixel data)."""
    magic = data[:2]
    fields: list[int] = []
    pos = 2
    n = len(data)
    while len(fields) < 3:
        while pos < n and data[pos : pos + 1].isspace():
            pos += 1
        if pos < n and data[pos : pos + 1] == b"#":  # comment up to end of line
            while pos < n and data[pos : pos + 1] not in (b"\n", b"\r"):
                pos += 1
            continue
        start = pos
        while pos < n and data[pos : pos + 1].isdigit():
            pos += 1
        if start == pos:
            raise ValueError("missing width/height/maxval")
        fields.append(int(data[start:pos]))
    # Exactly one whitespace byte separates maxval from binary pixel data.
    if pos >= n or not data[pos : pos + 1].isspace():
        raise ValueError("no pixel data")
    width, height, maxval = fields
    if width <= 0 or height <= 0:
        raise ValueError("zero size")
    if not 0 < maxval < 65536:
        raise ValueError("maxval out of range")
    return magic, width, height, maxval, pos + 1
