"""DICOM reading: pydicom's own test files, pydicom-data externals, and files
written here with known pixel values and headers.

Expected values are computed by hand from the DICOM formulas (PS3.3 C.11),
not by calling the pipeline under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from mammojax.data.dicom import safe_dicom_summary
from mammojax.data.readers import read_image
from mammojax.data.synthetic import write_dicom
from mammojax.errors import ImageReadError

MAMMO_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
PATIENT_NAME = "Zarathustra^Wilhelmina"
PATIENT_ID = "PID-99817263"
IDENTIFIERS = (PATIENT_NAME, "Zarathustra", "Wilhelmina", PATIENT_ID)


def _testdata(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} not available")
    return path


def _write(path, stored, *, bits_stored=16, preamble=True, **options):
    """An uncompressed single- or multi-frame DICOM with identifiers, ``mammojax.data.synthetic.write_dicom``'s."""
    options = {"PatientName": PATIENT_NAME, "PatientID": PATIENT_ID, "Manufacturer": "ACME", **options}
    return write_dicom(path, stored, bits_stored=bits_stored, file_meta=preamble, **options)


def _ramp12(height=16, width=64):
    return np.tile(np.linspace(0, 4095, width).round().astype(np.uint16), (height, 1))


# --- files written by the test ------------------------------------------------------


def test_bits_stored_12_in_16_scaled_by_4095(tmp_path):
    stored = _ramp12()
    loaded = read_image(_write(tmp_path / "a.dcm", stored, bits_stored=12))
    np.testing.assert_allclose(loaded.pixels, stored / 4095.0, atol=1e-6)
    assert loaded.pixels.max() == pytest.approx(1.0)
    assert loaded.meta.format == "dicom" and loaded.meta.bits_stored == 12


def test_monochrome1_is_inverse_of_monochrome2(tmp_path):
    stored = _ramp12()
    window = dict(WindowCenter=2048, WindowWidth=2048)
    mono2 = read_image(_write(tmp_path / "m2.dcm", stored, bits_stored=12, **window)).pixels
    mono1 = read_image(_write(tmp_path / "m1.dcm", stored, bits_stored=12, photometric="MONOCHROME1",
                              **window)).pixels
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
    assert mono2[0, 0] == 0.0 and mono2[0, -1] == 1.0  # window saturates both ends


def test_signed_12bit_uses_the_signed_range(tmp_path):
    stored = np.array([[-2048, -1, 0, 2047]] * 4, np.int16)
    loaded = read_image(_write(tmp_path / "s.dcm", stored, bits_stored=12, signed=True))
    expected = (stored + 2048) / 4095.0
    np.testing.assert_allclose(loaded.pixels, expected, atol=1e-6)


def test_linear_window_with_rescale(tmp_path):
    stored = _ramp12()
    loaded = read_image(_write(tmp_path / "w.dcm", stored, bits_stored=12, RescaleSlope=2, RescaleIntercept=-100,
                               WindowCenter=[3000, 500], WindowWidth=[2000, 100]))
    values = stored * 2.0 - 100  # modality LUT, then the FIRST window of two
    expected = np.clip((values - (3000 - 0.5)) / (2000 - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(loaded.pixels, expected, atol=1e-5)


def test_sigmoid_voi_function(tmp_path):
    stored = _ramp12()
    loaded = read_image(_write(tmp_path / "sig.dcm", stored, bits_stored=12, WindowCenter=2048,
                               WindowWidth=1000, VOILUTFunction="SIGMOID"))
    expected = 1.0 / (1.0 + np.exp(-4.0 * (stored - 2048.0) / 1000.0))
    np.testing.assert_allclose(loaded.pixels, expected, atol=1e-5)


def test_invalid_window_falls_back_to_the_stored_range(tmp_path):
    stored = _ramp12()
    loaded = read_image(_write(tmp_path / "w0.dcm", stored, bits_stored=12, WindowCenter=100, WindowWidth=0))
    np.testing.assert_allclose(loaded.pixels, stored / 4095.0, atol=1e-6)


def test_pixel_padding_value_and_range_become_background(tmp_path):
    stored = _ramp12()
    stored[:, :4] = 4095  # padding at the white end, as MONOCHROME1 scanners do
    loaded = read_image(_write(tmp_path / "p.dcm", stored, bits_stored=12, photometric="MONOCHROME1",
                               PixelPaddingValue=4095))
    assert np.all(loaded.pixels[:, :4] == 0.0)
    # Without padding the same pixels are stored white in MONOCHROME1: black after
    # inversion anyway, so check a MONOCHROME2 range too, where they would be bright.
    stored2 = _ramp12()
    loaded = read_image(_write(tmp_path / "p2.dcm", stored2, bits_stored=12, PixelPaddingValue=4000,
                               PixelPaddingRangeLimit=4095))
    padded = stored2 >= 4000
    assert padded.any() and np.all(loaded.pixels[padded] == 0.0)
    np.testing.assert_allclose(loaded.pixels[~padded], stored2[~padded] / 4095.0, atol=1e-6)


def test_laterality_view_and_for_processing_metadata(tmp_path):
    stored = _ramp12()
    both = read_image(_write(tmp_path / "a.dcm", stored, bits_stored=12, ImageLaterality="L",
                             Laterality="R", ViewPosition="CC")).meta
    assert both.laterality == "L" and both.view == "CC"
    assert not both.for_processing

    code = Dataset()
    code.CodeValue = "399368009"
    code.CodingSchemeDesignator = "SCT"
    code.CodeMeaning = "medio-lateral oblique"
    series_only = read_image(_write(tmp_path / "b.dcm", stored, bits_stored=12, Laterality="R",
                                    ViewCodeSequence=Sequence([code]))).meta
    assert series_only.laterality == "R" and series_only.view == "MLO"

    meaning_only = Dataset()
    meaning_only.CodeMeaning = "cranio-caudal"
    meta = read_image(_write(tmp_path / "c.dcm", stored, bits_stored=12,
                             ViewCodeSequence=Sequence([meaning_only]))).meta
    assert meta.view == "CC" and meta.laterality is None

    intent = read_image(_write(tmp_path / "d.dcm", stored, bits_stored=12,
                               PresentationIntentType="FOR PROCESSING")).meta
    sop = read_image(_write(tmp_path / "e.dcm", stored, bits_stored=12, SOPClassUID=MAMMO_FOR_PROCESSING)).meta
    assert intent.for_processing and sop.for_processing


def test_pixel_spacing_falls_back_to_imager_spacing(tmp_path):
    meta = read_image(_write(tmp_path / "a.dcm", _ramp12(), bits_stored=12, ImagerPixelSpacing=[0.07, 0.07])).meta
    assert meta.pixel_spacing == pytest.approx((0.07, 0.07))


def test_multiframe_reads_first_frame(tmp_path):
    frames = np.stack([_ramp12(), np.full((16, 64), 4095, np.uint16), np.zeros((16, 64), np.uint16)])
    loaded = read_image(_write(tmp_path / "mf.dcm", frames, bits_stored=12))
    np.testing.assert_allclose(loaded.pixels, frames[0] / 4095.0, atol=1e-6)
    assert "oversized" in _reason(tmp_path / "mf.dcm", max_pixels=16 * 64 * 2)


def test_file_without_preamble_or_meta(tmp_path):
    stored = _ramp12()
    path = _write(tmp_path / "raw", stored, bits_stored=12, preamble=False)
    assert path.read_bytes()[128:132] != b"DICM"
    np.testing.assert_allclose(read_image(path).pixels, stored / 4095.0, atol=1e-6)


def _reason(path, **kwargs):
    with pytest.raises(ImageReadError) as info:
        read_image(path, **kwargs)
    assert str(path) in str(info.value)
    return info.value.reason


def test_patient_identifiers_never_leak(tmp_path, caplog, recwarn):
    good = _write(tmp_path / "good.dcm", _ramp12(), bits_stored=12)
    data = good.read_bytes()
    name_at = data.index(PATIENT_NAME.encode())

    corrupted = {
        "truncated.dcm": data[: len(data) - 500],
        # A huge length just before the name: the parser runs off the end.
        "bad_length.dcm": data[: name_at - 2] + b"\xff\xff" + data[name_at:],
        "cut_in_header.dcm": data[: name_at + 5],
    }
    for name, content in corrupted.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ImageReadError) as info:
            read_image(path)
        for text in (str(info.value), info.value.reason, repr(info.value)):
            assert not any(i in text for i in IDENTIFIERS), (name, text)

    meta = read_image(good).meta
    summary = safe_dicom_summary(pydicom.dcmread(good))
    assert summary == {"laterality": None, "view": None, "manufacturer": "ACME", "modality": "MG",
                       "photometric": "MONOCHROME2", "rows": 16, "cols": 64, "bits": 12}
    assert safe_dicom_summary(good) == summary
    everything = repr(meta) + repr(summary) + caplog.text + " ".join(str(w.message) for w in recwarn)
    assert not any(i in everything for i in IDENTIFIERS)


# --- pydicom's own test files --------------------------------------------------------


@pytest.mark.parametrize("name, shape", [("CT_small.dcm", (128, 128)), ("MR_small.dcm", (64, 64))])
def test_pydicom_samples(name, shape):
    loaded = read_image(_testdata(name))
    assert loaded.pixels.shape == shape and loaded.pixels.dtype == np.float32
    assert 0.0 <= loaded.pixels.min() < loaded.pixels.max() <= 1.0


def test_mr_small_window_matches_hand_computation():
    path = _testdata("MR_small.dcm")
    ds = pydicom.dcmread(path)
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    expected = np.clip((ds.pixel_array - (center - 0.5)) / (width - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(read_image(path).pixels, expected, atol=1e-5)


def test_truncated_pydicom_file():
    assert "truncated" in _reason(_testdata("MR_truncated.dcm"))


def test_not_an_image_dicom():
    assert "no pixel data" in _reason(_testdata("rtplan.dcm"))


def test_colour_dicom_becomes_grayscale():
    loaded = read_image(_testdata("SC_rgb.dcm"))
    ds = pydicom.dcmread(_testdata("SC_rgb.dcm"))
    rgb = ds.pixel_array.astype(np.float64)
    expected = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0
    assert loaded.pixels.shape == rgb.shape[:2]
    np.testing.assert_allclose(loaded.pixels, expected, atol=1e-5)


# --- pydicom-data externals ------------------------------------------------------------


def test_rg1_monochrome1_windowed_then_inverted():
    path = _testdata("RG1_UNCR.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    center = float(ds.WindowCenter[0] if ds["WindowCenter"].VM > 1 else ds.WindowCenter)
    width = float(ds.WindowWidth[0] if ds["WindowWidth"].VM > 1 else ds.WindowWidth)
    windowed = np.clip((ds.pixel_array - (center - 0.5)) / (width - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(read_image(path).pixels, 1.0 - windowed, atol=1e-5)


def test_mr2_rescale_then_window():
    path = _testdata("MR2_UNCR.dcm")
    ds = pydicom.dcmread(path)
    values = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    center = float(ds.WindowCenter[0] if ds["WindowCenter"].VM > 1 else ds.WindowCenter)
    width = float(ds.WindowWidth[0] if ds["WindowWidth"].VM > 1 else ds.WindowWidth)
    expected = np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(read_image(path).pixels, expected, atol=1e-5)


def test_vlut_04_voi_lut_sequence():
    path = _testdata("vlut_04.dcm")
    ds = pydicom.dcmread(path)
    item = ds.VOILUTSequence[0]
    entries, first, bits = (int(v) for v in item.LUTDescriptor)
    lut = np.frombuffer(item.LUTData, "<u2") if isinstance(item.LUTData, bytes) else np.asarray(item.LUTData)
    lut = lut[:entries or 65536].astype(np.float64)
    out = lut[np.clip(ds.pixel_array.astype(np.int64) - first, 0, len(lut) - 1)]
    expected = (out - lut.min()) / (lut.max() - lut.min())
    np.testing.assert_allclose(read_image(path).pixels, expected, atol=1e-5)


# --- every compression archives use (the `dicom` extra, dicom_codecs) -------------------

def _needs_dicom_extra():
    from mammojax.data.dicom_codecs import IMPORT_NAMES, installed_packages

    missing = sorted(set(IMPORT_NAMES) - installed_packages())
    if missing:
        pytest.skip(f"the dicom extra is not fully installed (missing {', '.join(missing)})")


# (compressed file, its uncompressed twin, tolerance on the [0, 1] pixels)
TWINS = [
    ("MR_small_RLE.dcm", "MR_small.dcm", 0.0),  # RLE
    ("emri_small_RLE.dcm", "emri_small.dcm", 0.0),  # RLE, multi-frame
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm", 0.0),  # JPEG-LS lossless, signed
    ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm", 0.0),  # JPEG-LS lossless, 12-bit
    ("SC_rgb_jls_lossy_line.dcm", "SC_rgb.dcm", 2 / 255),  # JPEG-LS near-lossless (NEAR = 2)
    ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb.dcm", 0.0),  # JPEG lossless, process 14 SV1
    ("MR_small_jp2klossless.dcm", "MR_small.dcm", 0.0),  # JPEG 2000 lossless
    ("RG1_J2KR.dcm", "RG1_UNCR.dcm", 0.0),  # JPEG 2000, MONOCHROME1 15-bit radiograph
    ("US1_J2KR.dcm", "US1_UNCR.dcm", 0.0),  # JPEG 2000, colour
    ("SC_rgb_dcmtk_+eb+cr.dcm", "SC_rgb.dcm", 0.01),  # JPEG baseline (lossy)
]


@pytest.mark.parametrize("compressed, twin, tolerance", TWINS, ids=[t[0] for t in TWINS])
def test_compressed_file_matches_its_uncompressed_twin(compressed, twin, tolerance):
    _needs_dicom_extra()
    expected = read_image(_testdata(twin)).pixels
    loaded = read_image(_testdata(compressed))
    assert loaded.pixels.shape == expected.shape
    np.testing.assert_allclose(loaded.pixels, expected, atol=tolerance + 1e-6, rtol=0)


def test_jpeg_extended_12bit_matches_pydicom_reference():
    _needs_dicom_extra()
    loaded = read_image(_testdata("JPGExtended.dcm"))
    # pydicom's pixel reference for this file: stored 244 at (420, 140), 95 at
    # (230, 120). No window: 12 stored bits scale by 4095.
    assert loaded.meta.bits_stored == 12 and loaded.pixels.shape == (1024, 256)
    assert loaded.pixels[420, 140] * 4095 == pytest.approx(244, abs=1e-3)
    assert loaded.pixels[230, 120] * 4095 == pytest.approx(95, abs=1e-3)
    # JPEG-lossy.dcm is the same stream with a bad SOS marker: libjpeg-turbo reads it alike.
    np.testing.assert_array_equal(read_image(_testdata("JPEG-lossy.dcm")).pixels, loaded.pixels)


def _write_encoded(path, stored, encoded: bytes, tsyntax, *, bits_stored):
    """``_write``'s header around one encapsulated frame."""
    from pydicom.encaps import encapsulate

    _write(path, stored, bits_stored=bits_stored)
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([encoded])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = tsyntax
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("bits", [12, 14, 16])
def test_mammogram_jpeg_lossless_and_12bit_extended(tmp_path, bits):
    """Films as archives store them: JPEG lossless SV1 (12-16 bit), JPEG Extended (12 bit)."""
    _needs_dicom_extra()
    import imagecodecs
    from pydicom.uid import JPEGExtended12Bit, JPEGLosslessSV1

    rng = np.random.default_rng(bits)
    stored = np.tile(np.linspace(0, 2**bits - 1, 96), (64, 1)).astype(np.uint16)
    stored[::7] = rng.integers(0, 2**bits, size=(len(stored[::7]), 96))  # some texture
    plain = read_image(_write(tmp_path / "plain.dcm", stored, bits_stored=bits)).pixels
    lossless = imagecodecs.jpeg8_encode(stored, lossless=True, bitspersample=bits, predictor=1)
    loaded = read_image(_write_encoded(tmp_path / "ll.dcm", stored, lossless, JPEGLosslessSV1, bits_stored=bits))
    np.testing.assert_array_equal(loaded.pixels, plain)
    if bits == 12:
        smooth = np.tile(np.linspace(0, 4095, 96), (64, 1)).astype(np.uint16)
        lossy = imagecodecs.jpeg8_encode(smooth, level=95, bitspersample=12)
        loaded = read_image(_write_encoded(tmp_path / "ext.dcm", smooth, lossy, JPEGExtended12Bit, bits_stored=12))
        np.testing.assert_allclose(loaded.pixels, smooth / 4095.0, atol=0.01, rtol=0)


MISSING_DECODER_SCRIPT = """
import sys
for name in sys.argv[2].split(","):
    sys.modules[name] = None  # as if the package were not installed
from mammojax.data.readers import read_image
from mammojax.data.synthetic import write_dicom
from mammojax.errors import ImageReadError
try:
    read_image(sys.argv[1])
    print("loaded")
except ImageReadError as err:
    print(err.reason)
"""


@pytest.mark.parametrize("file, blocked, expected", [
    # Nothing of the extra installed: name every alternative and the extra.
    ("MR_small_jpeg_ls_lossless.dcm", "gdcm,jpeg_ls,pylibjpeg,openjpeg,rle,imagecodecs",
     ("compressed DICOM (JPEG-LS Lossless Image Compression) needs a decoder that is not installed: "
      "pyjpegls or python-gdcm (pip install 'mammojax[dicom]')")),
    ("JPGExtended.dcm", "imagecodecs",
     ("compressed DICOM (JPEG Extended (Process 2 and 4)) needs a decoder that is not installed: "
      "imagecodecs (pip install 'mammojax[dicom]')")),
    # One alternative is enough: GDCM reads JPEG-LS without pyjpegls.
    ("MR_small_jpeg_ls_lossless.dcm", "jpeg_ls", "loaded"),
])
def test_missing_decoder_names_what_is_missing(file, blocked, expected):
    path = _testdata(file)
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", MISSING_DECODER_SCRIPT, path, blocked], capture_output=True,
                            text=True, cwd=repo, check=False, env={**os.environ, "PYTHONPATH": str(repo)},
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected
    assert result.stderr == ""  # no decoder or pydicom chatter on the console


def test_missing_decoder_reason_when_installed_but_unusable():
    from pydicom.uid import JPEG2000, JPEGLSLossless

    from mammojax.data.dicom_codecs import missing_decoder_reason

    assert missing_decoder_reason(JPEGLSLossless, frozenset({"python-gdcm"})) == (
        "compressed DICOM (JPEG-LS Lossless Image Compression) needs a decoder newer than the installed "
        "python-gdcm (pip install -U 'mammojax[dicom]')")
    # J2K: pylibjpeg without pylibjpeg-openjpeg is no decoder; name only what is missing.
    assert missing_decoder_reason(JPEG2000, frozenset({"pylibjpeg"})).endswith(
        "not installed: pylibjpeg-openjpeg or python-gdcm (pip install 'mammojax[dicom]')")
