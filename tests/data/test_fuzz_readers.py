"""Fuzz ``read_image``: every input loads correctly or raises ImageReadError.

Mutated inputs start from small valid files (PNG 8/16-bit, TIFF 16-bit, JPEG,
PGM, DICOM plain / MONOCHROME1 / RLE / multi-frame) written in-process by
``scripts/fuzz_readers.py``; hypothesis picks the mutations (bit flips, byte
overwrites, truncations, insertions, deletions, header-field corruption) and
also generates files from scratch. Runs derandomized, so it is deterministic.
Every input has a time limit (an interval timer) and the process's peak RSS
must not grow by more than a bound over the whole run.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import random
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mammojax.data.readers import DEFAULT_MAX_PIXELS, read_image
from mammojax.errors import ImageReadError

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fuzz_readers.py"
spec = importlib.util.spec_from_file_location("fuzz_readers", SCRIPT)
fuzz = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fuzz)

SEEDS = fuzz.seed_files()
FORMATS = sorted(SEEDS)
PER_INPUT_SECONDS = 5.0
FUZZ_SETTINGS = settings(max_examples=120, derandomize=True, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(autouse=True, scope="module")
def _quiet_tifffile():
    logging.disable(logging.CRITICAL)  # tifffile logs one error per broken tag
    yield
    logging.disable(logging.NOTSET)


def _assert_clean(path: Path) -> str:
    outcome, detail, seconds = fuzz.classify(path, timeout=PER_INPUT_SECONDS)
    assert outcome in ("loaded", "clean_error"), f"{outcome}: {detail}"
    assert seconds < PER_INPUT_SECONDS
    return outcome


@pytest.mark.parametrize("fmt", FORMATS)
def test_seed_files_load(fmt, tmp_path):
    path = tmp_path / f"seed{fuzz.SUFFIX[fmt]}"
    path.write_bytes(SEEDS[fmt])
    loaded = read_image(path)
    assert fuzz.check_output(loaded.pixels) is None
    assert loaded.pixels.shape == (24, 20)
    assert loaded.pixels.std() > 0.05  # a real image, not a blank


@pytest.mark.parametrize("fmt", FORMATS)
def test_mutated_inputs_load_or_fail_cleanly(fmt, tmp_path):
    path = tmp_path / f"input{fuzz.SUFFIX[fmt]}"
    outcomes = []

    @FUZZ_SETTINGS
    @given(names=st.lists(st.sampled_from(sorted(fuzz.MUTATORS)), min_size=1, max_size=3),
           rng_seed=st.integers(0, 2**32 - 1))
    def check(names, rng_seed):
        path.write_bytes(fuzz.mutate(SEEDS[fmt], names, random.Random(rng_seed)))
        outcomes.append(_assert_clean(path))

    check()
    # Both branches are exercised, so neither assertion is vacuous.
    assert "loaded" in outcomes and "clean_error" in outcomes


@pytest.mark.parametrize("fmt", ["png8", "tiff16", "jpeg", "pgm", "dicom"])
def test_generated_inputs_fail_cleanly(fmt, tmp_path):
    path = tmp_path / f"input{fuzz.SUFFIX[fmt]}"

    @FUZZ_SETTINGS
    @given(rng_seed=st.integers(0, 2**32 - 1), junk=st.binary(max_size=300))
    def check(rng_seed, junk):
        path.write_bytes(fuzz.generated(fmt, random.Random(rng_seed)) + junk)
        _assert_clean(path)

    check()


def test_arbitrary_bytes_fail_cleanly(tmp_path):
    @FUZZ_SETTINGS
    @given(data=st.binary(max_size=600), suffix=st.sampled_from([".dcm", ".png", ".pgm", ".tif", ""]))
    def check(data, suffix):
        path = tmp_path / f"any{suffix}"
        path.write_bytes(data)
        _assert_clean(path)

    check()


# --- decompression bombs: the header is refused before any pixel is decoded ----------


def _png_claiming(width: int, height: int) -> bytes:
    data = SEEDS["png8"]
    body = struct.pack(">II", width, height) + data[24:29]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF)
    return data[:16] + body + crc + data[33:]


def _dicom_claiming(**fields) -> bytes:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(SEEDS["dicom"]))
    for keyword, value in fields.items():
        setattr(ds, keyword, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _tiff_claiming(width: int, height: int) -> bytes:
    data = bytearray(SEEDS["tiff16"])
    ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack("<HH", data[entry:entry + 4])
        if tag in (256, 257):
            fmt = "<I" if kind == 4 else "<H"
            value = width if tag == 256 else height
            limit = 65535 if kind == 3 else 2**32 - 1
            data[entry + 8:entry + 8 + struct.calcsize(fmt)] = struct.pack(fmt, min(value, limit))
    return bytes(data)


BOMBS = {
    "png 100000 x 100000": (".png", lambda: _png_claiming(100_000, 100_000)),
    "jpeg 65535 x 65535": (".jpg", lambda: SEEDS["jpeg"].replace(
        SEEDS["jpeg"][SEEDS["jpeg"].find(b"\xff\xc0"):][:9],
        SEEDS["jpeg"][SEEDS["jpeg"].find(b"\xff\xc0"):][:5] + b"\xff\xff\xff\xff", 1)),
    "pgm 100000 x 100000": (".pgm", lambda: b"P5\n100000 100000\n255\n" + bytes(64)),
    "tiff 65535 x 65535": (".tif", lambda: _tiff_claiming(65535, 65535)),
    "dicom 65535 x 65535": (".dcm", lambda: _dicom_claiming(Rows=65535, Columns=65535)),
    "dicom 1000000 frames": (".dcm", lambda: _dicom_claiming(NumberOfFrames=1_000_000)),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_oversized_headers_are_refused_before_decoding(name, tmp_path):
    suffix, make = BOMBS[name]
    path = tmp_path / f"bomb{suffix}"
    path.write_bytes(make())
    rss_before = fuzz.peak_rss_mb()
    with pytest.raises(ImageReadError, match="oversized image"):
        read_image(path, max_pixels=DEFAULT_MAX_PIXELS)
    # Refused from the header: decoding even 80 M pixels would cost 320+ MB.
    assert fuzz.peak_rss_mb() - rss_before < 50


def test_fuzzing_keeps_memory_bounded(tmp_path):
    """A seeded campaign over every format: peak RSS grows by less than 100 MB."""
    rss_before = fuzz.peak_rss_mb()
    for fmt in FORMATS:
        counts, findings, _ = fuzz.fuzz_format(fmt, SEEDS[fmt], 60, seed=7, workdir=tmp_path,
                                               timeout=PER_INPUT_SECONDS, slow=PER_INPUT_SECONDS)
        assert findings == []
        assert counts["loaded"] + counts["clean_error"] == 60
    assert fuzz.peak_rss_mb() - rss_before < 100
