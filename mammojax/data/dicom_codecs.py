"""Which decoder reads each compressed DICOM transfer syntax.

pydicom decodes compressed pixel data through plugins. The ``dicom`` extra
(pyproject.toml) installs permissively licensed ones only (licences read from
each package's metadata):

====================  ===============================  ================================
package               licence                          decodes here
====================  ===============================  ================================
python-gdcm           Apache-2.0 (GDCM itself: BSD)    JPEG lossless (process 14, SV1),
                                                       JPEG baseline, JPEG-LS, JPEG 2000
pyjpegls              MIT (CharLS: BSD-3)              JPEG-LS
pylibjpeg +           MIT (OpenJPEG: BSD-2)            JPEG 2000, HTJ2K
pylibjpeg-openjpeg
pylibjpeg-rle         MIT                              RLE (pydicom's own decoder is
                                                       the fallback)
imagecodecs           BSD-3 (libjpeg-turbo: BSD/IJG)   12-bit JPEG Extended
====================  ===============================  ================================

``pylibjpeg-libjpeg`` is GPLv3 and deliberately not used. Pillow (a core
dependency) decodes 8-bit JPEG baseline and JPEG 2000 too.

Two things pydicom 3.0 does not do are done here:

* It has no permissive decoder for 12-bit JPEG Extended (Process 2 and 4,
  how many CR/DX archives store 12-bit films): Pillow cannot, and it refuses
  to hand the stream to GDCM (GDCM decodes it, but its libjpeg prints
  "Unsupported JPEG data precision 12" to the process's stderr on every
  frame). :func:`decode_frame` decodes it with imagecodecs' libjpeg-turbo,
  registered as the ``mammojax-imagecodecs`` plugin; on pydicom's
  ``JPGExtended.dcm`` it equals GDCM sample for sample and matches pydicom's
  reference values.
* It tries plugins in a fixed order (GDCM first). GDCM was the slowest on
  every JPEG 2000 and RLE file of the pydicom test corpus, so
  :data:`PREFERRED_PLUGINS` names the faster plugin per syntax and pydicom's
  order stays the fallback.

:func:`missing_decoder_reason` names the package that is missing, so a user
who installed the extra is never told to install it again.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder, pixel_array

IMAGECODECS_PLUGIN = "mammojax-imagecodecs"

# Required by pydicom's plugin API (reported when imagecodecs is missing).
DECODER_DEPENDENCIES = {uid.JPEGExtended12Bit: ("imagecodecs>=2026.3.6",)}

_J2K = (uid.JPEG2000Lossless, uid.JPEG2000)
_HTJ2K = (uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL, uid.HTJ2K)
_JPEG_LS = (uid.JPEGLSLossless, uid.JPEGLSNearLossless)
_JPEG_LOSSLESS = (uid.JPEGLossless, uid.JPEGLosslessSV1)

# Plugins to try first (when installed), then pydicom's own order. Measured on
# the pydicom + pydicom-data corpus (scripts/dicom_corpus.py): all plugins
# gave identical samples; these were the fastest (RG1_J2KR, 1955 x 1841:
# pylibjpeg 0.62 s, GDCM 0.90 s). RLE is decoded by pydicom's own NumPy
# decoder although pylibjpeg-rle is about 10x faster: on damaged data (the
# fuzzing script's mutated RLE files) pylibjpeg-rle's Rust code panics and
# prints a backtrace to stderr, which must never bypass mammojax's one-line
# errors; RLE is rare in mammography archives. So it is never tried for RLE.
NEVER_PLUGINS: dict[str, tuple[str, ...]] = {uid.RLELossless: ("pylibjpeg",)}
PREFERRED_PLUGINS: dict[str, tuple[str, ...]] = {
    **{syntax: ("pylibjpeg",) for syntax in (*_J2K, *_HTJ2K)},
    uid.RLELossless: ("pydicom",),
    **{syntax: ("pyjpegls",) for syntax in _JPEG_LS},
    uid.JPEGBaseline8Bit: ("pillow",),
}
# The OpenJPEG inside GDCM and Pillow prints its errors on a broken stream to
# the process's stderr, where nothing may bypass mammojax's one-line errors;
# pylibjpeg-openjpeg raises instead, and decodes every JPEG 2000 file of the
# corpus (GDCMJ2K_TextGBR.dcm too, which Pillow cannot). These are tried only
# when no other plugin is installed.
LAST_RESORT_PLUGINS: dict[str, tuple[str, ...]] = {syntax: ("gdcm", "pillow") for syntax in (*_J2K, *_HTJ2K)}

# Packages of the `dicom` extra that decode each syntax: alternatives, each
# a tuple of pip names that work together.
EXTRA_DECODERS: dict[str, tuple[tuple[str, ...], ...]] = {
    **{syntax: (("pylibjpeg", "pylibjpeg-openjpeg"), ("python-gdcm",)) for syntax in _J2K},
    **{syntax: (("pylibjpeg", "pylibjpeg-openjpeg"),) for syntax in _HTJ2K},
    **{syntax: (("pyjpegls",), ("python-gdcm",)) for syntax in _JPEG_LS},
    **{syntax: (("python-gdcm",),) for syntax in (*_JPEG_LOSSLESS, uid.JPEGBaseline8Bit)},
    uid.JPEGExtended12Bit: (("imagecodecs",),),
    uid.RLELossless: (("pylibjpeg", "pylibjpeg-rle"),),
}
IMPORT_NAMES = {"python-gdcm": "gdcm", "pyjpegls": "jpeg_ls", "pylibjpeg": "pylibjpeg",
                "pylibjpeg-openjpeg": "openjpeg", "pylibjpeg-rle": "rle", "imagecodecs": "imagecodecs"}
EXTRA_HINT = "pip install 'mammojax[dicom]'"
# Every "no decoder" reason contains this (scripts/dicom_corpus.py counts them).
NEEDS_DECODER = "needs a decoder"


def installed_packages() -> frozenset[str]:
    """The pip names of :data:`IMPORT_NAMES` that can be imported here."""
    return frozenset(name for name, module in IMPORT_NAMES.items()
                     if importlib.util.find_spec(module) is not None)


def missing_decoder_reason(tsyntax: uid.UID, installed: frozenset[str] | None = None) -> str:
    """One line naming what to install for ``tsyntax`` (given what is ``installed``)."""
    installed = installed_packages() if installed is None else installed
    alternatives = EXTRA_DECODERS.get(tsyntax, ())
    if not alternatives:
        return f"compressed DICOM ({tsyntax.name}) {NEEDS_DECODER} that mammojax does not know of"
    complete = [alt for alt in alternatives if all(p in installed for p in alt)]
    if complete:
        # Installed, yet pydicom does not offer it: a version below its minimum.
        present = " or ".join(" + ".join(alt) for alt in complete)
        return (f"compressed DICOM ({tsyntax.name}) {NEEDS_DECODER} newer than the installed "
                f"{present} (pip install -U 'mammojax[dicom]')")
    missing = " or ".join(" + ".join(p for p in alt if p not in installed) for alt in alternatives)
    return f"compressed DICOM ({tsyntax.name}) {NEEDS_DECODER} that is not installed: {missing} ({EXTRA_HINT})"


def undecodable_reason(ds: Dataset, tsyntax: uid.UID) -> str | None:
    """Why no installed plugin can decode ``ds``'s pixel data, or None if one can."""
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        return f"unsupported DICOM transfer syntax ({tsyntax.name})"
    # pydicom counts Pillow and GDCM as JPEG Extended decoders, but only
    # imagecodecs decodes its 12-bit streams.
    needs_imagecodecs = preferred_plugins(ds, tsyntax) == (IMAGECODECS_PLUGIN,)
    if not decoder.is_available or (needs_imagecodecs and IMAGECODECS_PLUGIN not in decoder.available_plugins):
        return missing_decoder_reason(tsyntax)
    return None


def decode(ds: Dataset, tsyntax: uid.UID, index: int | None) -> np.ndarray:
    """Stored values of frame ``index`` (``None``: all frames).

    Tries the installed plugins in :func:`plugin_order`; when all fail, raises
    the one error, or a RuntimeError quoting each (for the caller to classify,
    never to show: decoder messages can quote header values).
    """
    if not tsyntax.is_compressed:
        return pixel_array(ds, index=index)  # native data: no plugins
    errors = []
    for plugin in plugin_order(ds, tsyntax):
        try:
            return pixel_array(ds, index=index, decoding_plugin=plugin)
        except Exception as e:  # noqa: BLE001 - the next plugin may succeed
            errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    raise RuntimeError("; ".join(f"{type(e).__name__}: {e}" for e in errors) or "no decoding plugin")


def plugin_order(ds: Dataset, tsyntax: uid.UID) -> list[str]:
    """Installed plugins for ``tsyntax``: preferred ones, pydicom's order, last resorts."""
    available = [p for p in get_decoder(tsyntax).available_plugins if p not in NEVER_PLUGINS.get(tsyntax, ())]
    preferred = [p for p in preferred_plugins(ds, tsyntax) if p in available]
    rest = [p for p in available if p not in preferred and p not in LAST_RESORT_PLUGINS.get(tsyntax, ())]
    # A last resort is tried only when nothing else can decode the syntax.
    return preferred + rest if preferred or rest else list(available)


def preferred_plugins(ds: Dataset, tsyntax: uid.UID) -> tuple[str, ...]:
    if tsyntax == uid.JPEGExtended12Bit:
        bits = int(ds.get("BitsStored", 8) or 8)
        return (IMAGECODECS_PLUGIN,) if bits > 8 else ("pillow",)
    return PREFERRED_PLUGINS.get(tsyntax, ())


# --- the 12-bit JPEG Extended plugin (pydicom's decoder plugin API) ------------


def is_available(tsyntax: str) -> bool:
    return tsyntax in DECODER_DEPENDENCIES and importlib.util.find_spec("imagecodecs") is not None


def decode_frame(src: bytes, runner: Any) -> bytes:
    """One monochrome JPEG Extended frame (8 or 12 bits), decoded by libjpeg-turbo."""
    import imagecodecs

    if runner.samples_per_pixel != 1:
        # Colour streams keep pydicom's YBR handling (Pillow, GDCM).
        raise NotImplementedError(f"{IMAGECODECS_PLUGIN} decodes monochrome JPEG Extended only")
    frame = imagecodecs.jpeg8_decode(src)
    if frame.shape != (runner.rows, runner.columns):
        raise ValueError(f"JPEG frame is {frame.shape}, the header says {(runner.rows, runner.columns)}")
    dtype = np.uint8 if runner.bits_allocated == 8 else np.dtype("<u2")
    return frame.astype(dtype, copy=False).tobytes()


def register() -> None:
    """Add the 12-bit JPEG Extended plugin to pydicom (once per process)."""
    try:
        get_decoder(uid.JPEGExtended12Bit).add_plugin(IMAGECODECS_PLUGIN, (__name__, "decode_frame"))
    except ValueError:
        pass  # already registered (a reload)
