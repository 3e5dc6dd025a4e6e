"""DICOM pixel pipeline and safe metadata (pydicom 3).

The display chain follows DICOM PS3.3 C.11 in order:

1. decode the stored values (first frame only: a multi-frame file, e.g. a
   tomosynthesis stack, is read as its frame 0; the pixel cap still counts
   Rows x Columns x frames, the size of what the file holds);
2. Modality LUT / rescale (``pydicom.pixels.apply_modality_lut``);
3. VOI LUT sequence, else the first window (``apply_voi_lut``: LINEAR,
   LINEAR_EXACT or SIGMOID), else nothing;
4. scale to [0, 1] by the VOI output range (or, without VOI, the modality-
   mapped range of the stored bits), then invert MONOCHROME1 so bright always
   means dense tissue;
5. set padding pixels (PixelPaddingValue .. PixelPaddingRangeLimit, compared
   on the stored values) to 0, the background.

Colour DICOMs (RGB, YBR_*, PALETTE COLOR) become luminance.

Privacy: DICOM headers carry patient identifiers. Nothing read here ever
leaves this module except the fields of :class:`ImageMeta` and
:func:`safe_dicom_summary` (laterality, view, spacing, manufacturer, ...),
and the header :func:`read_header` returns to the two consumers that need
identifiers by design: :mod:`mammojax.clinic.exams` (which keeps the Study
Instance UID in memory only, as a grouping key) and
:mod:`mammojax.clinic.dicom_out` (which copies the patient and study modules
into the DICOM objects written for a PACS, the one place they may go).
Error messages are built from fixed texts and exception *class names*, never
pydicom's message text (which can quote element values). pydicom's own
output is routed here, once, at import (:func:`route_pydicom_output`): its
log records (warnings such as "Invalid value for VR CS: '<value>'", decoder
tracebacks) become one line on the ``mammojax.data.dicom`` logger at DEBUG
level, naming the file being read and only the kind of message; its Python
warnings (the same texts) are ignored. Failures reach the user as the one-
line :class:`~mammojax.errors.ImageReadError`.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, UID

from mammojax.data import dicom_codecs
from mammojax.data.image import (
    DEFAULT_MAX_PIXELS,
    ImageMeta,
    LoadedImage,
    check_pixel_count,
    float_unit_range,
    to_grayscale,
)
from mammojax.errors import ImageReadError

LOGGER = logging.getLogger(__name__)

# A fixed phrase of a pydicom log message -> what is said instead. pydicom's
# texts can quote header values (names, IDs, dates), so only this survives.
PYDICOM_MESSAGES = (
    ("VOI LUT on a float", "VOI LUT applied to float data"),
    ("Invalid value for VR", "invalid header value"),
    ("exceeds the maximum length", "header value too long"),
    ("Expected explicit VR", "VR encoding differs from the transfer syntax"),
    ("Expected implicit VR", "VR encoding differs from the transfer syntax"),
    ("before delimiter", "sequence or item cut short"),
    ("decoding plugin has changed", "decoder changed between frames"),
    ("Unknown encoding", "unknown character set"),
    ("Specific Character Set", "character set name corrected"),
    ("is not valid for elements with a VR of DS", "invalid decimal string"),
)

_reading = threading.local()  # .path: the file this thread is reading, for log lines


def pydicom_message_class(record: logging.LogRecord) -> str:
    """The kind of a pydicom log record, never its text (which may quote header values)."""
    if record.exc_info and record.exc_info[0] is not None:
        return f"a decoder failed ({record.exc_info[0].__name__})"
    text = record.getMessage() if isinstance(record.msg, str) else ""
    for phrase, kind in PYDICOM_MESSAGES:
        if phrase in text:
            return kind
    return f"{record.levelname.lower()} (text withheld: it may quote header values)"


class _PydicomToMammojax(logging.Handler):
    """Turns each pydicom record into one safe line on mammojax's logger."""

    def emit(self, record: logging.LogRecord) -> None:
        path = getattr(_reading, "path", None) or "(no file)"
        LOGGER.debug("%s: pydicom %s: %s", path, record.levelname.lower(), pydicom_message_class(record))


def route_pydicom_output() -> None:
    """Send pydicom's log records through :class:`_PydicomToMammojax` only, and ignore its warnings.

    Idempotent; run at import and again at each read (a ``catch_warnings``
    block elsewhere may have dropped the filters since). Process-wide on
    purpose: decoding runs in worker threads, so a per-read switch
    (``warnings.catch_warnings``) would race.
    """
    logger = logging.getLogger("pydicom")
    if not any(isinstance(h, _PydicomToMammojax) for h in logger.handlers):
        logger.addHandler(_PydicomToMammojax())
    logger.propagate = False  # never to the root logger's console handler
    # warn_and_log() both logs and warns; the warning is attributed to the
    # pydicom module that raised it, or with stacklevel to its caller here.
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    warnings.filterwarnings("ignore", module=r"mammojax\.data\.dicom")


@contextmanager
def _reading_file(path: Path) -> Iterator[None]:
    """Marks ``path`` as this thread's file for pydicom's log lines."""
    route_pydicom_output()
    previous = getattr(_reading, "path", None)
    _reading.path = str(path)
    try:
        yield
    finally:
        _reading.path = previous


dicom_codecs.register()
route_pydicom_output()

# SOP classes whose images are raw detector data, not meant for display.
FOR_PROCESSING_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image, For Processing
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # Digital Mammography X-Ray Image, For Processing
    "1.2.840.10008.5.1.4.1.1.1.3.1",  # Digital Intra-Oral X-Ray Image, For Processing
}

# ViewCodeSequence (CID 4014) SNOMED CT codes -> the ViewPosition abbreviation.
VIEW_CODES = {
    "399162004": "CC",
    "399368009": "MLO",
    "399260004": "ML",
    "399352003": "LM",
    "399099002": "LMO",
    "399192003": "FB",
    "399101009": "XCCL",
    "399196006": "XCCM",
    "399188001": "SIO",
}

# Code meanings, matched after lower-casing and dropping '-', '_' and spaces.
# Longer meanings first: "mediolateraloblique" contains "mediolateral".
_VIEW_MEANINGS = (
    ("craniocaudalexaggeratedlaterally", "XCCL"),
    ("craniocaudalexaggeratedmedially", "XCCM"),
    ("mediolateraloblique", "MLO"),
    ("lateromedialoblique", "LMO"),
    ("craniocaudal", "CC"),
    ("caudocranial", "FB"),
    ("mediolateral", "ML"),
    ("lateromedial", "LM"),
)

# Read only these bytes eagerly; pixel data waits until the size check passed.
_DEFER_SIZE = "256 KB"


def read_dicom(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read a DICOM file: ``LoadedImage(pixels float32 (H, W) in [0, 1], meta)``.

    Raises:
        ImageReadError: unreadable, truncated, not an image, too large, or
            compressed with a codec whose plugin is not installed.
    """
    path = Path(path)
    with _reading_file(path):
        ds = _read_dataset(path)
        try:
            return _dataset_to_image(path, ds, max_pixels)
        except ImageReadError:
            raise
        except Exception as e:
            # pydicom parses elements lazily, so a damaged element (unknown VR,
            # a UID that is no transfer syntax...) surfaces at first use.
            raise ImageReadError(path, f"corrupt DICOM file ({type(e).__name__})") from None


def _dataset_to_image(path: Path, ds: Dataset, max_pixels: int) -> LoadedImage:
    rows, cols, frames = _image_size(path, ds)
    check_pixel_count(path, rows * cols * frames, max_pixels, f"{rows} x {cols} x {frames} frame(s)")
    stored = _decode_first_frame(path, ds, frames)
    try:
        pixels = dicom_pixels_to_unit(ds, stored)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
        raise ImageReadError(path, f"invalid DICOM pixel module ({type(e).__name__})") from None
    if pixels.ndim != 2:
        raise ImageReadError(path, f"unsupported DICOM pixel layout (shape {pixels.shape})")
    meta = dicom_meta(ds, pixels.shape)
    return LoadedImage(pixels, meta)


def _read_dataset(path: Path) -> Dataset:
    try:
        try:
            ds = pydicom.dcmread(path, defer_size=_DEFER_SIZE)
        except InvalidDicomError:
            # No 128-byte preamble / file meta: an ACR-NEMA style dataset.
            ds = pydicom.dcmread(path, defer_size=_DEFER_SIZE, force=True)
    except InvalidDicomError:
        raise ImageReadError(path, "not a DICOM file") from None
    except Exception as e:  # EOFError, struct.error, ValueError...: a damaged byte stream
        raise ImageReadError(path, f"corrupt or truncated DICOM file ({type(e).__name__})") from None
    return ds


def _image_size(path: Path, ds: Dataset) -> tuple[int, int, int]:
    try:
        if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            raise ImageReadError(path, "DICOM file has no pixel data (not an image)")
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except ImageReadError:
        raise
    except Exception as e:
        raise ImageReadError(path, f"invalid DICOM image header ({type(e).__name__})") from None
    if rows <= 0 or cols <= 0 or frames <= 0:
        raise ImageReadError(path, "invalid DICOM image header (zero size)")
    return rows, cols, frames


def transfer_syntax(ds: Dataset) -> UID:
    """The dataset's transfer syntax; for files without file meta, the one it was read with."""
    file_meta = getattr(ds, "file_meta", None)
    uid = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if uid:
        return UID(uid)
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little in (True, None) else ExplicitVRBigEndian


def _decode_first_frame(path: Path, ds: Dataset, frames: int) -> np.ndarray:
    tsyntax = transfer_syntax(ds)
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", Dataset()):
        ds.file_meta = getattr(ds, "file_meta", None) or pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = tsyntax
    if "PixelData" in ds and tsyntax.is_compressed:
        reason = dicom_codecs.undecodable_reason(ds, tsyntax)
        if reason:
            raise ImageReadError(path, reason)
    try:
        # Only the first frame of a multi-frame file is decoded.
        arr = dicom_codecs.decode(ds, tsyntax, 0 if frames > 1 else None)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as e:  # noqa: BLE001 - a Rust decoder's panic (pyo3 PanicException) is a BaseException:
        # damaged pixel data must stay one clean error for this file, never end a batch run.
        text = str(e).lower()
        if "missing" in text and ("plugin" in text or "dependenc" in text):
            raise ImageReadError(path, dicom_codecs.missing_decoder_reason(tsyntax)) from None
        if "less than expected" in text or "truncat" in text or isinstance(e, EOFError):
            raise ImageReadError(path, "truncated DICOM pixel data") from None
        raise ImageReadError(path, f"DICOM pixel data could not be decoded ({type(e).__name__})") from None
    if frames > 1 and arr.ndim >= 3 and arr.shape[0] == frames and arr.shape[1:3] == (ds.Rows, ds.Columns):
        arr = arr[0]  # a decoder that ignored the frame index
    return arr


def dicom_pixels_to_unit(ds: Dataset, stored: np.ndarray) -> np.ndarray:
    """Apply the display chain to one decoded frame: float32 (H, W) in [0, 1]."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if np.issubdtype(stored.dtype, np.floating):
        # Float/Double Float Pixel Data: no stored bit depth to scale by.
        return float_unit_range(to_grayscale(stored))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return _colour_to_unit(ds, stored, photometric)

    padding = padding_mask(ds, stored)
    values = apply_modality_lut(stored, ds).astype(np.float32, copy=False)
    del stored  # the float copy replaces it; keep peak memory at one image
    lo, hi, values = _apply_voi(ds, values)
    if hi > lo:
        pixels = (values - np.float32(lo)) * np.float32(1.0 / (hi - lo))
        np.clip(pixels, 0.0, 1.0, out=pixels)
    else:
        pixels = np.zeros_like(values)
    if photometric == "MONOCHROME1":
        # After windowing: the window is defined on the stored polarity.
        np.subtract(1.0, pixels, out=pixels)
    if padding is not None:
        pixels[padding] = 0.0
    return pixels


def _apply_voi(ds: Dataset, values: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(output min, output max, VOI-mapped values); no VOI -> the modality range."""
    has_lut = bool(ds.get("VOILUTSequence"))
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    if has_lut or has_window:
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                out = apply_voi_lut(_lut_input(ds, values) if has_lut else values, ds, index=0, prefer_lut=True)
                lo, hi = _voi_output_range(ds, has_lut)
            return lo, hi, out.astype(np.float32, copy=False)
        except (ValueError, TypeError, IndexError, KeyError, AttributeError):
            pass  # an invalid window (e.g. width < 1): fall back to the full range
    lo, hi = _modality_range(ds)
    return lo, hi, values


def _lut_domain(ds: Dataset) -> tuple[int, int]:
    """(first input value mapped, number of entries) of the first VOI LUT."""
    descriptor = ds.VOILUTSequence[0].LUTDescriptor
    return int(descriptor[1]), int(descriptor[0]) or 65536


def _lut_input(ds: Dataset, values: np.ndarray) -> np.ndarray:
    """Modality values as the VOI LUT's integer inputs.

    A LUT is indexed by integers: floor the modality output (what indexing a
    float would do) and saturate it to the LUT's domain, where the standard
    maps values outside it to the first or last entry (PS3.3 C.11.2.1.1).
    Integers also keep pydicom from warning about float input.
    """
    first, entries = _lut_domain(ds)
    return np.clip(np.floor(values), first, first + entries - 1).astype(np.int32)


def _voi_output_range(ds: Dataset, has_lut: bool) -> tuple[float, float]:
    if has_lut:
        # Push the LUT's whole input domain through it: its real output range,
        # whatever bit depth the descriptor claims.
        first, entries = _lut_domain(ds)
        probe = np.arange(first, first + entries, dtype=np.int64)
    else:
        # Window functions saturate at the output extremes for huge inputs.
        probe = np.array([-1e30, 1e30])
    out = np.asarray(apply_voi_lut(probe, ds, index=0, prefer_lut=True), dtype=np.float64)
    return float(out.min()), float(out.max())


def _modality_range(ds: Dataset) -> tuple[float, float]:
    """The stored range (BitsStored, signedness) through the Modality LUT."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        stored = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1])
    else:
        stored = np.array([0, 2**bits - 1])
    mapped = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    return float(mapped.min()), float(mapped.max())


def padding_mask(ds: Dataset, stored: np.ndarray) -> np.ndarray | None:
    """Boolean mask of padding pixels (compared on stored values), or None."""
    value = ds.get("PixelPaddingValue")
    if value is None:
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    value = int(value)
    if limit is None:
        return stored == value
    low, high = sorted((value, int(limit)))
    return (stored >= low) & (stored <= high)


def _colour_to_unit(ds: Dataset, stored: np.ndarray, photometric: str) -> np.ndarray:
    bits = int(ds.get("BitsStored", 8))
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(stored, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    else:
        # pydicom already converted YBR_* to RGB (its default as_rgb=True).
        rgb = stored
    gray = to_grayscale(rgb)
    gray *= np.float32(1.0 / (2**bits - 1))
    return np.clip(gray, 0.0, 1.0, out=gray)


# --- safe metadata -------------------------------------------------------------


def dicom_meta(ds: Dataset, shape: tuple[int, int]) -> ImageMeta:
    """The non-identifying facts of a dataset as :class:`ImageMeta`."""
    return ImageMeta(
        format="dicom",
        bits_stored=_int_or_none(ds.get("BitsStored")),
        photometric=_str_or_none(ds.get("PhotometricInterpretation")),
        laterality=dicom_laterality(ds),
        view=dicom_view(ds),
        pixel_spacing=_pixel_spacing(ds),
        for_processing=is_for_processing(ds),
        manufacturer=_str_or_none(ds.get("Manufacturer")),
        original_shape=(int(shape[0]), int(shape[1])),
    )


def safe_dicom_summary(ds: Dataset | str | os.PathLike) -> dict[str, Any]:
    """A few display-safe header fields for the web page (never patient data).

    ``ds`` may be a Dataset or a path (read without pixel data).
    """
    if not isinstance(ds, Dataset):
        path = Path(ds)
        with _reading_file(path):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            except Exception as e:
                raise ImageReadError(path, f"corrupt or truncated DICOM file ({type(e).__name__})") from None
    with _reading_file(getattr(ds, "filename", None) or "(dataset)"):
        return {
            "laterality": dicom_laterality(ds),
            "view": dicom_view(ds),
            "manufacturer": _str_or_none(ds.get("Manufacturer")),
            "modality": _str_or_none(ds.get("Modality")),
            "photometric": _str_or_none(ds.get("PhotometricInterpretation")),
            "rows": _int_or_none(ds.get("Rows")),
            "cols": _int_or_none(ds.get("Columns")),
            "bits": _int_or_none(ds.get("BitsStored")),
        }


def read_header(path: str | os.PathLike) -> Dataset:
    """The header of a DICOM file, without its pixel data (``ImageReadError`` when unreadable).

    It holds identifiers: only :mod:`mammojax.clinic` may take it, never to
    print, log or write it anywhere but a DICOM object (module docstring).
    """
    path = Path(path)
    with _reading_file(path):
        try:
            return pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception as e:
            raise ImageReadError(path, f"corrupt or truncated DICOM file ({type(e).__name__})") from None


def dicom_laterality(ds: Dataset) -> str | None:
    """'L' or 'R' from ImageLaterality, then (series) Laterality; else None."""
    for keyword in ("ImageLaterality", "Laterality"):
        value = str(ds.get(keyword, "") or "").strip().upper()
        if value in ("L", "R"):
            return value
    return None


def dicom_view(ds: Dataset) -> str | None:
    """'CC', 'MLO', ... from ViewPosition, then ViewCodeSequence; else None."""
    position = str(ds.get("ViewPosition", "") or "").strip().upper()
    if position:
        return position
    for item in ds.get("ViewCodeSequence", None) or ():
        code = str(item.get("CodeValue", "") or "").strip()
        if code in VIEW_CODES:
            return VIEW_CODES[code]
        meaning = str(item.get("CodeMeaning", "") or "").lower()
        meaning = meaning.replace("-", "").replace("_", "").replace(" ", "")
        for text, view in _VIEW_MEANINGS:
            if text in meaning:
                return view
    return None


def is_for_processing(ds: Dataset) -> bool:
    """True for raw 'FOR PROCESSING' images (intent or SOP class)."""
    intent = str(ds.get("PresentationIntentType", "") or "").strip().upper()
    sop_class = str(ds.get("SOPClassUID", "") or "").strip()
    if not sop_class and getattr(ds, "file_meta", None) is not None:
        sop_class = str(ds.file_meta.get("MediaStorageSOPClassUID", "") or "").strip()
    return intent == "FOR PROCESSING" or sop_class in FOR_PROCESSING_SOP_CLASSES


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            if value is not None and len(value) == 2:
                spacing = (float(value[0]), float(value[1]))
                if spacing[0] > 0 and spacing[1] > 0:
                    return spacing
        except (TypeError, ValueError):
            continue
    return None


def _str_or_none(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
