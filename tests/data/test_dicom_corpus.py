"""Every DICOM test file of pydicom and pydicom-data loads or fails cleanly.

"Loads" means float32, 2-D, finite, in [0, 1]; "fails cleanly" means an
ImageReadError. The corpus (about 240 files: compressed syntaxes, big-endian,
ACR-NEMA, multi-frame, palette colour, broken files) comes from
``scripts/dicom_corpus.py``, which prints the same figures.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest

pytest.importorskip("pydicom")
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus():
    script = _load_script("dicom_corpus")
    logging.disable(logging.CRITICAL)
    try:
        files = script.corpus_files()
        return files, script.run_corpus(files, timeout=60)
    finally:
        logging.disable(logging.NOTSET)


def test_corpus_is_the_real_one(corpus):
    files, _ = corpus
    names = {p.name for p in files}
    # pydicom's own files and pydicom-data's (RG1_UNCR is a 12-bit mammogram).
    assert "CT_small.dcm" in names and "MR_small.dcm" in names
    if importlib.util.find_spec("data_store") is not None:
        assert "RG1_UNCR.dcm" in names
    assert len(files) > 100


def test_every_file_loads_or_fails_cleanly(corpus):
    _, results = corpus
    others = [f"{path.name}: {outcome} {detail}" for path, outcome, detail, _ in results
              if outcome not in ("loaded", "clean_error")]
    assert others == []
    loaded = [path.name for path, outcome, _, _ in results if outcome == "loaded"]
    # Uncompressed and natively decodable images must really load, not merely fail cleanly.
    for name in ("CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm"):
        assert name in loaded


def test_clean_errors_never_quote_header_values(corpus):
    _, results = corpus
    for path, outcome, detail, _ in results:
        if outcome == "clean_error":
            # Reasons are fixed texts: no patient names like pydicom's "CompressedSamples^CT1".
            assert "^" not in detail, f"{path.name}: {detail}"


def test_no_file_needs_a_missing_decoder(corpus):
    """With the dicom extra installed, every syntax in the corpus has a decoder."""
    from mammojax.data.dicom_codecs import IMPORT_NAMES, installed_packages

    missing = sorted(set(IMPORT_NAMES) - installed_packages())
    if missing:
        pytest.skip(f"the dicom extra is not fully installed (missing {', '.join(missing)})")
    script = _load_script("dicom_corpus")
    _, results = corpus
    needing = [f"{path.name}: {detail}" for path, outcome, detail, _ in results
               if outcome == "clean_error" and script.needs_decoder(detail)]
    assert needing == []
    loaded = {path.name for path, outcome, _, _ in results if outcome == "loaded"}
    # One file per syntax family that used to need a decoder we did not have.
    assert {"JPEG-LL.dcm", "JPGExtended.dcm", "JPEGLSNearLossless_16.dcm",
            "MR_small_jpeg_ls_lossless.dcm", "SC_rgb_jpeg_gdcm.dcm"} <= loaded
