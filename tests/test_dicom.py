"""DICOM reading: pydicom's own test files, pydicom-data externals, and files
written here with known pixel values and headers.

Expected values are computed by hand from the DICOM formulas (PS3.3 C.11),
not by calling the pipeline under test.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

from mammojax.data.dicom import safe_dicom_summary
from mammojax.data.readers import read_image
from mammojax.errors import ImageReadError

MAMMO_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MAMMO_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
PATIENT_NAME = "Zarathustra^Wilhelmina"
PATIENT_ID = "PID-99817263"
IDENTIFIERS = (PATIENT_NAME, "Zarathustra", "Wilhelmina", PATIENT_ID)


def _testdata(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} not available")
    return path


def _write(path, stored, *, bits_stored=16, signed=False, photometric="MONOCHROME2",
           preamble=True, **elements):
    """Write an uncompressed single- or multi-frame DICOM with ``elements``."""
    stored = np.asarray(stored)
    frames = stored.shape[0] if stored.ndim == 3 else 1
    ds = Dataset()
    ds.SOPClassUID = elements.pop("SOPClassUID", MAMMO_FOR_PRESENTATION)
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.Modality = "MG"
    ds.Manufacturer = "ACME"
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    # Two's complement in 16 bits; readers must honour BitsStored when sign-extending.
    ds.PixelData = stored.astype(np.int16 if signed else np.uint16).tobytes()
    if preamble:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.save_as(path, implicit_vr=True, little_endian=True)
    return path


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


def test_lossless_codecs_match_uncompressed():
    pytest.importorskip("pylibjpeg")
    pytest.importorskip("openjpeg")
    reference = read_image(_testdata("MR_small.dcm")).pixels
    np.testing.assert_array_equal(read_image(_testdata("MR_small_RLE.dcm")).pixels, reference)
    j2k = read_image(_testdata("JPEG2000.dcm"))
    assert j2k.pixels.shape == (1024, 256) and np.isfinite(j2k.pixels).all()
    # Lossless JPEG 2000 colour vs its uncompressed twin (pydicom-data).
    np.testing.assert_allclose(read_image(_testdata("US1_J2KR.dcm")).pixels,
                               read_image(_testdata("US1_UNCR.dcm")).pixels, atol=1e-6)


def test_colour_dicom_becomes_grayscale():
    loaded = read_image(_testdata("SC_rgb.dcm"))
    ds = pydicom.dcmread(_testdata("SC_rgb.dcm"))
    rgb = ds.pixel_array.astype(np.float64)
    expected = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0
    assert loaded.pixels.shape == rgb.shape[:2]
    np.testing.assert_allclose(loaded.pixels, expected, atol=1e-5)


def test_missing_decoder_message():
    from pydicom.pixels import get_decoder

    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed")
    reason = _reason(_testdata("MR_small_jpeg_ls_lossless.dcm"))
    assert reason == ("compressed DICOM (JPEG-LS Lossless Image Compression) needs a decoder: "
                      "pip install 'mammojax[dicom]'")


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
