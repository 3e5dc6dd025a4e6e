"""Fuzz ``mammojax.data.readers.read_image`` with mutated and generated files.

Every input must either load (float32, 2-D, finite, in [0, 1]) or raise
``ImageReadError``; any other exception, a wrong output, an input slower than
``--slow`` seconds, or one that needs ``--timeout`` seconds (interrupted by a
timer) is a finding. Inputs start from small valid files written here (PNG 8
and 16 bit, TIFF 16 bit, JPEG, PGM, DICOM 16-bit / 8-bit MONOCHROME1 / RLE /
multi-frame) and get random byte flips, truncations, insertions, deletions and
header-field corruption (huge widths and heights, DICOM Rows / Columns /
BitsAllocated / NumberOfFrames ...). A few inputs per format are generated
from scratch: the format's signature followed by random bytes.

    python scripts/fuzz_readers.py --per-format 5000
    python scripts/fuzz_readers.py --per-format 200 --seed 3 --formats png8,dicom

Prints, per format: loaded / clean error / other exception / bad output / slow
/ timeout, the wall time, and the peak-RSS growth of the process. The exit
status is 1 when anything other than "loaded" or "clean error" happened.
``tests/data/test_fuzz_readers.py`` imports the seed and mutation helpers from here.
"""

from __future__ import annotations

import argparse
import io
import random
import resource
import signal
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO))

from mammojax.data.readers import read_image  # noqa: E402
from mammojax.errors import ImageReadError  # noqa: E402

# Fuzzed images decode under a small pixel cap so a mutated header that claims
# a few million pixels costs milliseconds; the default cap is tested separately.
FUZZ_MAX_PIXELS = 1_000_000
SUFFIX = {"png8": ".png", "png16": ".png", "tiff16": ".tif", "jpeg": ".jpg", "pgm": ".pgm",
          "dicom": ".dcm", "dicom_mono1": ".dcm", "dicom_rle": ".dcm", "dicom_frames": ".dcm"}
# Values a header field is set to: edge cases first, then random ones.
HUGE_SIDES = (0, 1, 2, 7, 255, 256, 4095, 65535, 100_000, 2**31 - 1, 2**32 - 1)


class InputTimeout(BaseException):
    """Raised by the interval timer; a BaseException so no reader can swallow it."""


# --- valid seed files ----------------------------------------------------------------


def _phantom(height: int, width: int, maximum: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    ramp = (rows + cols) / float(height + width)
    arr = ramp * maximum * 0.8 + rng.uniform(0, maximum * 0.2, (height, width))
    return np.clip(arr, 0, maximum)


def _pillow_bytes(arr: np.ndarray, fmt: str, **kwargs) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kwargs)  # uint8 -> "L", uint16 -> "I;16"
    return buf.getvalue()


def _dicom_bytes(arr: np.ndarray, *, bits: int, photometric: str = "MONOCHROME2", frames: int = 1,
                 rle: bool = False) -> bytes:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography, For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["fuzz", str(bits), photometric, str(frames)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.ImageLaterality = "L"
    ds.ViewPosition = "CC"
    ds.Rows, ds.Columns = arr.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16 if bits > 8 else 8
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if bits > 8:
        ds.WindowCenter, ds.WindowWidth = 2048, 4000
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    if frames > 1:
        ds.NumberOfFrames = frames
        arr = np.stack([arr] * frames)
    dtype = np.uint16 if bits > 8 else np.uint8
    ds.PixelData = arr.astype(dtype).tobytes()
    if rle:
        ds.compress(RLELossless, arr.astype(dtype))
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def seed_files() -> dict[str, bytes]:
    """Small valid files, one per format variant (deterministic)."""
    import tifffile

    h, w = 24, 20
    pgm_pixels = _phantom(h, w, 255).astype(np.uint8)
    tiff_buf = io.BytesIO()
    tifffile.imwrite(tiff_buf, _phantom(h, w, 65535).astype(np.uint16), photometric="minisblack")
    return {
        "png8": _pillow_bytes(_phantom(h, w, 255).astype(np.uint8), "PNG"),
        "png16": _pillow_bytes(_phantom(h, w, 65535).astype(np.uint16), "PNG"),
        "tiff16": tiff_buf.getvalue(),
        "jpeg": _pillow_bytes(_phantom(h, w, 255).astype(np.uint8), "JPEG", quality=90),
        "pgm": f"P5\n{w} {h}\n255\n".encode() + pgm_pixels.tobytes(),
        "dicom": _dicom_bytes(_phantom(h, w, 4095), bits=12),
        "dicom_mono1": _dicom_bytes(_phantom(h, w, 255), bits=8, photometric="MONOCHROME1"),
        "dicom_rle": _dicom_bytes(_phantom(h, w, 4095), bits=12, rle=True),
        "dicom_frames": _dicom_bytes(_phantom(h, w, 4095), bits=12, frames=3),
    }


# --- mutations -----------------------------------------------------------------------


def _set_png_ihdr(data: bytes, rng: random.Random) -> bytes:
    # IHDR: 8-byte signature, length, b"IHDR", width, height, depth, colour, ..., CRC.
    if len(data) < 33 or data[12:16] != b"IHDR":
        return data
    body = bytearray(data[16:29])
    field = rng.randrange(4)
    if field == 0:
        body[0:4] = struct.pack(">I", rng.choice(HUGE_SIDES))
    elif field == 1:
        body[4:8] = struct.pack(">I", rng.choice(HUGE_SIDES))
    elif field == 2:
        body[8] = rng.choice((0, 1, 2, 4, 8, 16, 32, 255))
    else:
        body[9] = rng.choice((0, 2, 3, 4, 6, 7, 255))
    # Keep the CRC valid so the corrupt value, not the checksum, is what is tested.
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(body)) & 0xFFFFFFFF)
    return data[:16] + bytes(body) + crc + data[33:]


def _set_tiff_tag(data: bytes, rng: random.Random) -> bytes:
    if data[:4] != b"II*\x00" or len(data) < 8:
        return data
    ifd = struct.unpack("<I", data[4:8])[0]
    if ifd + 2 > len(data):
        return data
    count = struct.unpack("<H", data[ifd:ifd + 2])[0]
    wanted = (256, 257, 258, 259, 262, 273, 277, 278, 279, 284)
    entries = [ifd + 2 + 12 * i for i in range(count) if ifd + 14 + 12 * i <= len(data)]
    entries = [e for e in entries if struct.unpack("<H", data[e:e + 2])[0] in wanted]
    if not entries:
        return data
    entry = rng.choice(entries)
    out = bytearray(data)
    value = rng.choice(HUGE_SIDES + (rng.getrandbits(32),))
    if rng.random() < 0.2:
        out[entry + 4:entry + 8] = struct.pack("<I", rng.choice((0, 2, 1000, 2**31)))  # the value count
    else:
        out[entry + 8:entry + 12] = struct.pack("<I", value)
    return bytes(out)


def _set_jpeg_sof(data: bytes, rng: random.Random) -> bytes:
    pos = data.find(b"\xff\xc0")
    if pos < 0 or pos + 10 > len(data):
        return data
    out = bytearray(data)
    field = rng.randrange(4)
    if field == 0:
        out[pos + 4] = rng.choice((0, 1, 8, 12, 16, 255))  # precision
    elif field == 1:
        out[pos + 5:pos + 7] = struct.pack(">H", rng.choice((0, 1, 4096, 65535)))  # height
    elif field == 2:
        out[pos + 7:pos + 9] = struct.pack(">H", rng.choice((0, 1, 4096, 65535)))  # width
    else:
        out[pos + 9] = rng.choice((0, 2, 3, 4, 255))  # components
    return bytes(out)


def _set_pnm_header(data: bytes, rng: random.Random) -> bytes:
    parts = data.split(b"\n", 3)
    if len(parts) < 4:
        return data
    numbers = lambda: str(rng.choice(HUGE_SIDES + (-1, 10**12, rng.randrange(1, 64)))).encode()  # noqa: E731
    field = rng.randrange(3)
    if field == 0:
        parts[1] = numbers() + b" " + parts[1].split(b" ")[-1]
    elif field == 1:
        parts[1] = parts[1].split(b" ")[0] + b" " + numbers()
    else:
        parts[2] = str(rng.choice((0, 1, 255, 256, 65535, 65536, 10**9))).encode()
    return b"\n".join(parts)


DICOM_FIELDS = {
    "Rows": HUGE_SIDES[:8], "Columns": HUGE_SIDES[:8],
    "BitsAllocated": (0, 1, 7, 8, 12, 16, 32, 64, 65535), "BitsStored": (0, 1, 8, 12, 16, 17, 33, 65535),
    "HighBit": (0, 15, 16, 255), "PixelRepresentation": (0, 1, 2, 65535),
    "SamplesPerPixel": (0, 1, 2, 3, 4, 65535), "NumberOfFrames": (0, 1, 2, 3, 100, 100_000, 2**31 - 1, -1),
    "PhotometricInterpretation": ("MONOCHROME1", "RGB", "PALETTE COLOR", "YBR_FULL", "XYZ", ""),
    "WindowWidth": (0, -1, 1, 1e38, 4000), "WindowCenter": (0, -1e38, 1e38),
    "RescaleSlope": (0, -1, 1e30, 1e-30), "PixelPaddingValue": (0, 65535),
    "PlanarConfiguration": (0, 1, 7),
}


def _set_dicom_field(data: bytes, rng: random.Random) -> bytes:
    import warnings

    import pydicom

    keyword = rng.choice(sorted(DICOM_FIELDS))
    value = rng.choice(DICOM_FIELDS[keyword])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            setattr(ds, keyword, value)
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=False)
        return buf.getvalue()
    except Exception:
        return data  # pydicom refused to write the value: the input stays as it was


def _flip_bits(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return data
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _set_bytes(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return data
    out = bytearray(data)
    pos = rng.randrange(len(out))
    value = rng.choice((b"\x00", b"\xff", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x80"))
    out[pos:pos + len(value)] = value
    return bytes(out[:len(data)]) if len(out) > len(data) else bytes(out)


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[:rng.randrange(len(data))] if data else data


def _insert(data: bytes, rng: random.Random) -> bytes:
    pos = rng.randrange(len(data) + 1)
    return data[:pos] + rng.randbytes(rng.randint(1, 64)) + data[pos:]


def _delete(data: bytes, rng: random.Random) -> bytes:
    if len(data) < 2:
        return data
    start = rng.randrange(len(data))
    return data[:start] + data[start + rng.randint(1, 64):]


def _header_field(data: bytes, rng: random.Random) -> bytes:
    if data.startswith(b"\x89PNG"):
        return _set_png_ihdr(data, rng)
    if data.startswith(b"II*"):
        return _set_tiff_tag(data, rng)
    if data.startswith(b"\xff\xd8"):
        return _set_jpeg_sof(data, rng)
    if data.startswith(b"P5"):
        return _set_pnm_header(data, rng)
    if data[128:132] == b"DICM":
        return _set_dicom_field(data, rng)
    return data


MUTATORS = {"flip": _flip_bits, "set": _set_bytes, "truncate": _truncate, "insert": _insert,
            "delete": _delete, "header": _header_field}


def mutate(data: bytes, names: list[str], rng: random.Random) -> bytes:
    """Apply the named mutations in order."""
    for name in names:
        data = MUTATORS[name](data, rng)
    return data


def generated(fmt: str, rng: random.Random) -> bytes:
    """A file built from scratch: the format's signature, then random bytes."""
    junk = rng.randbytes(rng.randint(0, 512))
    if fmt.startswith("png"):
        return b"\x89PNG\r\n\x1a\n" + junk
    if fmt.startswith("tiff"):
        return b"II*\x00" + junk
    if fmt == "jpeg":
        return b"\xff\xd8\xff" + junk
    if fmt == "pgm":
        return f"P5 {rng.randint(0, 70)} {rng.randint(0, 70)} {rng.choice((255, 65535))}\n".encode() + junk
    return bytes(128) + b"DICM" + junk


# --- checking one input ----------------------------------------------------------------


def check_output(pixels) -> str | None:
    """None when ``pixels`` honours the read_image contract, else what is wrong."""
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.float32:
        return f"dtype {getattr(pixels, 'dtype', type(pixels))}"
    if pixels.ndim != 2 or pixels.size == 0:
        return f"shape {pixels.shape}"
    if not np.all(np.isfinite(pixels)):
        return "non-finite values"
    if float(pixels.min()) < 0.0 or float(pixels.max()) > 1.0:
        return f"range [{pixels.min()}, {pixels.max()}]"
    return None


def _on_timer(signum, frame):
    raise InputTimeout()


def classify(path: Path, *, timeout: float, max_pixels: int = FUZZ_MAX_PIXELS) -> tuple[str, str, float]:
    """(outcome, detail, seconds) of reading ``path`` once.

    outcome: "loaded", "clean_error", "other_exception", "bad_output" or "timeout".
    """
    previous = signal.signal(signal.SIGALRM, _on_timer)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    start = time.perf_counter()
    try:
        loaded = read_image(path, max_pixels=max_pixels)
        problem = check_output(loaded.pixels)
        outcome, detail = ("bad_output", problem) if problem else ("loaded", "")
    except InputTimeout:
        outcome, detail = "timeout", f"> {timeout} s"
    except ImageReadError as e:
        outcome, detail = "clean_error", e.reason
    except Exception as e:  # a finding: report it, keep fuzzing
        outcome, detail = "other_exception", "".join(traceback.format_exception_only(type(e), e)).strip()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return outcome, detail, time.perf_counter() - start


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


# --- the campaign ------------------------------------------------------------------------


def fuzz_format(fmt: str, seed_bytes: bytes, count: int, *, seed: int, workdir: Path, timeout: float,
                slow: float) -> tuple[Counter, list[str], float]:
    """Fuzz one format ``count`` times; (outcome counts, findings, wall seconds)."""
    rng = random.Random(f"{seed}:{fmt}")
    counts: Counter = Counter()
    findings: list[str] = []
    path = workdir / f"input{SUFFIX[fmt]}"
    names = sorted(MUTATORS)
    start = time.perf_counter()
    for i in range(count):
        if i % 20 == 19:
            data = generated(fmt, rng)
        else:
            data = mutate(seed_bytes, [rng.choice(names) for _ in range(rng.randint(1, 3))], rng)
        path.write_bytes(data)
        outcome, detail, seconds = classify(path, timeout=timeout)
        counts[outcome] += 1
        if seconds > slow:
            counts["slow"] += 1
        if outcome not in ("loaded", "clean_error") or seconds > slow:
            saved = workdir / f"finding-{fmt}-{i}{SUFFIX[fmt]}"
            saved.write_bytes(data)
            findings.append(f"{fmt} #{i} {outcome} {seconds:.2f}s {detail} -> {saved}")
        elif outcome == "clean_error":
            counts["reason: " + detail.split(" (")[0].split(":")[0][:40]] += 1
    return counts, findings, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-format", type=int, default=1000, help="inputs per format")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formats", default=",".join(SUFFIX), help="comma-separated subset")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds before an input counts as a hang")
    parser.add_argument("--slow", type=float, default=1.0, help="seconds above which an input counts as slow")
    parser.add_argument("--reasons", action="store_true", help="also print the clean-error reasons")
    parser.add_argument("--keep", help="directory for inputs that produced findings (default: a temp dir)")
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.CRITICAL)  # tifffile logs one error per broken tag
    seeds = seed_files()
    formats = [f for f in args.formats.split(",") if f]
    for fmt in formats:  # every seed must load, or the campaign would test nothing
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"seed{SUFFIX[fmt]}"
            path.write_bytes(seeds[fmt])
            outcome, detail, _ = classify(path, timeout=args.timeout)
            if outcome != "loaded":
                print(f"seed file for {fmt} does not load: {outcome} {detail}")
                return 2
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mammojax-fuzz-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rss_start = peak_rss_mb()
    total_start = time.perf_counter()
    header = (f"{'format':<13}{'inputs':>7}{'loaded':>8}{'clean':>8}{'other':>7}{'bad':>5}{'slow':>6}"
              f"{'hang':>6}{'wall s':>8}")
    print(header)
    all_findings: list[str] = []
    for fmt in formats:
        counts, findings, wall = fuzz_format(fmt, seeds[fmt], args.per_format, seed=args.seed, workdir=workdir,
                                             timeout=args.timeout, slow=args.slow)
        all_findings += findings
        print(f"{fmt:<13}{args.per_format:>7}{counts['loaded']:>8}{counts['clean_error']:>8}"
              f"{counts['other_exception']:>7}{counts['bad_output']:>5}{counts['slow']:>6}{counts['timeout']:>6}"
              f"{wall:>8.1f}", flush=True)
        if args.reasons:
            for key, n in sorted((k, v) for k, v in counts.items() if k.startswith("reason: ")):
                print(f"    {n:>6}  {key[8:]}")
    print(f"total wall time {time.perf_counter() - total_start:.1f} s; peak RSS {peak_rss_mb():.0f} MB "
          f"(+{peak_rss_mb() - rss_start:.0f} MB during fuzzing)")
    for line in all_findings[:50]:
        print("FINDING", line)
    if len(all_findings) > 50:
        print(f"... and {len(all_findings) - 50} more findings")
    return 1 if all_findings else 0


if __name__ == "__main__":
    sys.exit(main())
