"""read_image on every non-DICOM format, the real MIAS set, and screening.

Files are written by the tests (Pillow, tifffile, hand-written PGM); MIAS is
read from /work/shared (research use only: extracted to a temporary
directory, never copied into the repository).
"""

from __future__ import annotations

import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mammojax.data.preprocess import preprocess_image
from mammojax.data.readers import detect_format, read_image, to_grayscale
from mammojax.data.screening import screen_files, screen_image
from mammojax.errors import ImageReadError

from paths import MIAS_ARCHIVE  # noqa: E402


def _ramp(height=48, width=64, max_value=255, dtype=np.uint8):
    """A horizontal ramp from 0 to max_value: every column a known value."""
    row = np.round(np.linspace(0, max_value, width)).astype(dtype)
    return np.tile(row, (height, 1))


def _write_pgm(path, arr, maxval, *, ascii_=False, comment=True):
    height, width = arr.shape
    comment_line = "# written by a test\n" if comment else ""
    header = f"{'P2' if ascii_ else 'P5'}\n{comment_line}{width} {height}\n{maxval}\n"
    if ascii_:
        body = "\n".join(" ".join(str(int(v)) for v in row) for row in arr).encode() + b"\n"
    else:
        body = arr.astype(">u2" if maxval > 255 else "u1").tobytes()
    path.write_bytes(header.encode() + body)


# --- formats ---------------------------------------------------------------------


def test_png_8bit_scaled_by_255(tmp_path):
    arr = _ramp()
    Image.fromarray(arr).save(tmp_path / "a.png")
    loaded = read_image(tmp_path / "a.png")
    assert loaded.pixels.dtype == np.float32 and loaded.pixels.shape == (48, 64)
    np.testing.assert_allclose(loaded.pixels, arr / 255.0, atol=1e-6)
    assert loaded.meta.format == "png" and loaded.meta.bits_stored == 8
    assert loaded.meta.original_shape == (48, 64)


def test_png_16bit_scaled_by_its_depth(tmp_path):
    arr = _ramp(max_value=65535, dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "a.png")
    loaded = read_image(tmp_path / "a.png")
    np.testing.assert_allclose(loaded.pixels, arr / 65535.0, atol=1e-6)
    assert loaded.meta.bits_stored == 16
    assert loaded.pixels.max() == pytest.approx(1.0)


def test_colour_png_becomes_luminance(tmp_path):
    rgb = np.zeros((32, 40, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    Image.fromarray(rgb).save(tmp_path / "c.png")
    loaded = read_image(tmp_path / "c.png")
    expected = (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255
    assert loaded.pixels.shape == (32, 40)
    np.testing.assert_allclose(loaded.pixels, expected, atol=1e-5)
    assert loaded.meta.photometric == "RGB"


def test_tiff_scaled_by_bits_per_sample(tmp_path):
    import tifffile

    arr16 = _ramp(max_value=65535, dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", arr16, compression="zlib")
    loaded = read_image(tmp_path / "a.tif")
    assert loaded.meta.format == "tiff" and loaded.meta.bits_stored == 16
    np.testing.assert_allclose(loaded.pixels, arr16 / 65535.0, atol=1e-6)

    # An 8-bit TIFF: 255 is white (not 255/65535).
    arr8 = _ramp()
    tifffile.imwrite(tmp_path / "b.tif", arr8)
    loaded = read_image(tmp_path / "b.tif")
    assert loaded.meta.bits_stored == 8
    np.testing.assert_allclose(loaded.pixels, arr8 / 255.0, atol=1e-6)


def test_tiff_miniswhite_is_inverted(tmp_path):
    import tifffile

    arr = _ramp(max_value=65535, dtype=np.uint16)
    tifffile.imwrite(tmp_path / "w.tif", arr, photometric="miniswhite")
    loaded = read_image(tmp_path / "w.tif")
    np.testing.assert_allclose(loaded.pixels, 1.0 - arr / 65535.0, atol=1e-6)
    assert loaded.meta.photometric == "MONOCHROME1"


def test_jpeg(tmp_path):
    arr = _ramp()
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    loaded = read_image(tmp_path / "a.jpg")
    assert loaded.meta.format == "jpeg"
    np.testing.assert_allclose(loaded.pixels, arr / 255.0, atol=0.03)  # lossy


@pytest.mark.parametrize("ascii_", [False, True], ids=["P5", "P2"])
@pytest.mark.parametrize("maxval", [255, 4095, 65535])
def test_pgm_scaled_by_maxval(tmp_path, ascii_, maxval):
    arr = _ramp(max_value=maxval, dtype=np.uint16)
    _write_pgm(tmp_path / "a.pgm", arr, maxval, ascii_=ascii_)
    loaded = read_image(tmp_path / "a.pgm")
    assert loaded.meta.format == "pnm"
    np.testing.assert_allclose(loaded.pixels, arr / maxval, atol=1e-6)
    assert loaded.pixels.max() == pytest.approx(1.0)


def test_format_comes_from_magic_bytes_not_extension(tmp_path):
    arr = _ramp()
    Image.fromarray(arr).save(tmp_path / "real.png")
    disguised = tmp_path / "image.dcm"
    disguised.write_bytes((tmp_path / "real.png").read_bytes())
    assert detect_format(disguised) == "png"
    np.testing.assert_allclose(read_image(disguised).pixels, arr / 255.0, atol=1e-6)
    _write_pgm(tmp_path / "mias.png", arr, 255)
    assert read_image(tmp_path / "mias.png").meta.format == "pnm"


def test_to_grayscale_weights():
    rgb = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]], np.float32)
    np.testing.assert_allclose(to_grayscale(rgb)[0], [0.299, 0.587, 0.114], atol=1e-6)


# --- failures --------------------------------------------------------------------


def _reason(path, **kwargs):
    with pytest.raises(ImageReadError) as info:
        read_image(path, **kwargs)
    assert str(path) in str(info.value)
    return info.value.reason


def test_missing_empty_and_unknown_files(tmp_path):
    assert "not found" in _reason(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    assert _reason(tmp_path / "empty.png") == "empty file"
    (tmp_path / "notes.txt").write_text("hello, not an image\n")
    assert "unsupported" in _reason(tmp_path / "notes.txt")


def test_truncated_files(tmp_path):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (64, 64), dtype=np.uint8)  # incompressible
    Image.fromarray(noise).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert "truncated" in _reason(tmp_path / "cut.png") or "corrupt" in _reason(tmp_path / "cut.png")

    _write_pgm(tmp_path / "full.pgm", noise, 255)
    data = (tmp_path / "full.pgm").read_bytes()
    (tmp_path / "cut.pgm").write_bytes(data[:-100])
    assert "truncated" in _reason(tmp_path / "cut.pgm")

    import tifffile

    tifffile.imwrite(tmp_path / "full.tif", noise.astype(np.uint16))
    data = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[:200])
    assert "TIFF" in _reason(tmp_path / "cut.tif")


def _png_with_size(path, width, height):
    """A tiny valid PNG whose IHDR claims ``width x height`` (CRC fixed)."""
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8  # after the signature: length(4) type(4) data(13) crc(4)
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 8 + 13]))
    data[ihdr + 21 : ihdr + 25] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))


def test_pixel_cap_checked_from_header_before_decoding(tmp_path):
    # 20000 x 5000 = 1e8 pixels: over our cap, under Pillow's hard bomb limit.
    _png_with_size(tmp_path / "big.png", 20000, 5000)
    assert "oversized" in _reason(tmp_path / "big.png", max_pixels=80_000_000)
    # 1e10 pixels: Pillow's own DecompressionBombError must become ours.
    _png_with_size(tmp_path / "bomb.png", 100000, 100000)
    assert "oversized" in _reason(tmp_path / "bomb.png")
    # A small cap applies to every format.
    _write_pgm(tmp_path / "a.pgm", _ramp(), 255)
    assert "oversized" in _reason(tmp_path / "a.pgm", max_pixels=100)


# --- screening -------------------------------------------------------------------


def test_screening_reasons(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(_ramp()).save(good)
    constant = tmp_path / "constant.png"
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(constant)
    tiny = tmp_path / "tiny.png"
    Image.fromarray(_ramp(8, 8)).save(tiny)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)

    assert screen_image(good).pixels.shape == (48, 64)
    paths = [good, constant, tiny, empty, corrupt, tmp_path / "missing.png"]
    ok, excluded = screen_files(paths, max_pixels=10_000)
    assert ok == [str(good)]
    reasons = {Path(e.path).name: e.reason for e in excluded}
    assert set(reasons) == {"constant.png", "tiny.png", "empty.png", "corrupt.png", "missing.png"}
    assert reasons["constant.png"] == "constant image (no content)"
    assert reasons["tiny.png"].startswith("wrong shape")
    assert reasons["empty.png"] == "empty file"
    assert "corrupt" in reasons["corrupt.png"] or "truncated" in reasons["corrupt.png"]
    ok, excluded = screen_files([good], max_pixels=100)
    assert ok == [] and excluded[0].reason.startswith("oversized")


# --- real data: mini-MIAS --------------------------------------------------------


@pytest.fixture(scope="module")
def mias_dir(tmp_path_factory):
    if not MIAS_ARCHIVE.exists():
        pytest.skip(f"MIAS archive not found at {MIAS_ARCHIVE}")
    target = tmp_path_factory.mktemp("mias")
    with tarfile.open(MIAS_ARCHIVE) as tar:
        tar.extractall(target, filter="data")
    return target


def test_all_mias_images_read_and_orient(mias_dir):
    paths = sorted(mias_dir.rglob("*.pgm"))
    assert len(paths) == 242
    misoriented = []
    for path in paths:
        loaded = read_image(path)
        pixels = loaded.pixels
        assert pixels.shape == (1024, 1024), path.name
        assert pixels.dtype == np.float32
        assert 0.0 <= pixels.min() and pixels.max() <= 1.0, path.name
        assert pixels.max() > 0.5, path.name  # every film has bright tissue
        assert loaded.meta.bits_stored == 8
        # mini-MIAS films come in left/right pairs facing opposite ways: the
        # odd-numbered films have the chest wall on the right.
        flipped = preprocess_image(pixels, image_size=32, orient=True, crop_breast=True).geometry.flipped
        if flipped != (int(path.stem[3:]) % 2 == 1):
            misoriented.append(path.name)
    assert misoriented == []


def test_mias_preprocessing_crop_and_orient(mias_dir):
    # Three images are enough to check the real-data path end to end.
    for path in sorted(mias_dir.rglob("*.pgm"))[:3]:
        pixels = read_image(path).pixels
        out = preprocess_image(pixels, image_size=64, orient=True, crop_breast=True)
        assert out.image.shape == (64, 64, 1) and np.all(np.isfinite(out.image))
        top, left, bottom, right = out.geometry.crop_box
        # The breast fills a good part of the film but not the empty background.
        assert (bottom - top) * (right - left) < 1024 * 1024
        assert (bottom - top) > 400 and (right - left) > 150
        # After orientation the left half holds more tissue (chest wall left).
        content = out.image[..., 0]
        assert content[:, :32].sum() > content[:, 32:].sum()
