"""No DICOM patient identifier ever leaves mammojax: not on stdout or stderr,
not in logs, not in any file written by predict / explain / eval or the web
page logic.

Inputs: pydicom-data's RG1_UNCR.dcm (a real 12-bit mammogram; its own header
values are searched for too) and a DICOM written here carrying distinctive
PatientName / PatientID / PatientBirthDate / InstitutionName / AccessionNumber
(plus a few more identifying fields). A broken copy of that DICOM is added so
the error paths (error rows, skipped files) are checked as well.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from eval_support import make_tiny_checkpoint
from mammojax.cli import main

PLANTED = {
    "PatientName": "Zarathustra^Ophelia",
    "PatientID": "PID-90417733",
    "PatientBirthDate": "19530217",
    "InstitutionName": "Saint Wilbrord Clinic",
    "AccessionNumber": "ACC-7730561",
    "ReferringPhysicianName": "Moriarty^Jim",
    "OtherPatientIDs": "OPID-5550123",
    "PatientAddress": "17 Cherry Tree Lane",
}
# The parts of a PN too: "Zarathustra" alone must not leak either.
PLANTED_STRINGS = [*PLANTED.values(), "Zarathustra", "Ophelia", "Moriarty", "Wilbrord"]


def _identifying_dicom(path: Path, *, laterality: str) -> None:
    from pydicom.uid import generate_uid

    from mammojax.data.synthetic import write_dicom

    rng = np.random.default_rng(5 if laterality == "L" else 6)
    rows, cols = np.mgrid[0:96, 0:80]
    pixels = ((rows + cols) * 20 + rng.integers(0, 300, (96, 80))).clip(0, 4095).astype(np.uint16)
    write_dicom(path, pixels, bits_stored=12, SOPInstanceUID=generate_uid(entropy_srcs=["privacy", laterality]),
                ImageLaterality=laterality, ViewPosition="CC", **PLANTED)


def _header_identifiers(path: Path) -> list[str]:
    """Identifying values in a real file's header (long enough to search for safely)."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    found = []
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "AccessionNumber",
                    "ReferringPhysicianName", "StudyID", "OtherPatientIDs", "InstitutionAddress"):
        value = str(ds.get(keyword, "") or "").strip()
        found += [v for v in {value, *value.split("^")} if _distinctive(v)]
    return found


def _distinctive(value: str) -> bool:
    # Short words ("ward") or short numbers ("26210") occur by chance in logs
    # and hashes; searching for them would prove nothing but flakiness.
    mixed = any(c.isdigit() for c in value) and any(c.isalpha() for c in value)
    return len(value) >= 8 or (mixed and len(value) >= 4)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("privacy")
    inputs = root / "inputs"
    inputs.mkdir()
    _identifying_dicom(inputs / "exam_left.dcm", laterality="L")
    _identifying_dicom(inputs / "exam_right.dcm", laterality="R")
    data = (inputs / "exam_left.dcm").read_bytes()
    (inputs / "exam_cut.dcm").write_bytes(data[: len(data) // 2])  # an error path
    identifiers = list(PLANTED_STRINGS)
    from pydicom.data import get_testdata_file

    real = get_testdata_file("RG1_UNCR.dcm")
    if real is not None:
        shutil.copy(real, inputs / "real_mammogram.dcm")
        identifiers += _header_identifiers(inputs / "real_mammogram.dcm")
    manifest = inputs / "manifest.csv"
    rows = ["path,label,patient_id", "exam_left.dcm,1,p1", "exam_right.dcm,0,p1"]
    if real is not None:
        rows.append("real_mammogram.dcm,0,p2")
    manifest.write_text("\n".join(rows) + "\n")
    return {"root": root, "inputs": inputs, "manifest": manifest, "identifiers": identifiers,
            "real": real is not None, "ckpt": make_tiny_checkpoint(root / "ckpt")}


def assert_no_identifiers(text: bytes | str, where: str, identifiers: list[str]) -> None:
    data = text.encode() if isinstance(text, str) else text
    for identifier in identifiers:
        for form in {identifier, identifier.upper(), identifier.replace("^", " ")}:
            assert form.encode() not in data, f"{identifier!r} found in {where}"


def assert_no_identifiers_in_files(root: Path, identifiers: list[str]) -> int:
    """Search every file under ``root`` (bytes); return how many were searched."""
    files = [p for p in root.rglob("*") if p.is_file()]
    for path in files:
        assert_no_identifiers(path.read_bytes(), str(path), identifiers)
    return len(files)


def _run(capfd, caplog, *argv: str) -> tuple[int, str]:
    capfd.readouterr()
    with caplog.at_level(logging.DEBUG):
        code = main(list(argv))
    captured = capfd.readouterr()
    return code, captured.out + captured.err + caplog.text


def test_inputs_really_carry_the_identifiers(case):
    data = (case["inputs"] / "exam_left.dcm").read_bytes()
    for value in PLANTED.values():
        assert value.encode() in data  # else the searches below prove nothing
    if case["real"]:
        assert len(case["identifiers"]) > len(PLANTED_STRINGS), "RG1_UNCR.dcm has no identifiers to search for"


def test_predict_leaks_nothing(case, capfd, caplog):
    out = case["root"] / "predict" / "scores.csv"
    code, text = _run(capfd, caplog, "predict", "--checkpoint", str(case["ckpt"]), str(case["inputs"]),
                      "--out", str(out))
    assert code == 3, text  # exam_cut.dcm is skipped, the rest scored
    scores = out.read_text()
    assert "exam_left.dcm" in scores and "exam_cut.dcm" in scores  # scored, and an error row
    assert_no_identifiers(text, "predict stdout/stderr/logs", case["identifiers"])
    assert assert_no_identifiers_in_files(out.parent, case["identifiers"]) == 1


def test_predict_dicom_out_puts_identifiers_only_into_the_dicom_objects(case, capfd, caplog):
    pytest.importorskip("highdicom")
    out = case["root"] / "predict-dicom"
    code, text = _run(capfd, caplog, "predict", "--checkpoint", str(case["ckpt"]), str(case["inputs"]),
                      "--out", str(out / "scores.csv"), "--dicom-out", str(out / "dicom"))
    assert code == 3, text
    assert_no_identifiers(text, "predict --dicom-out stdout/stderr/logs", case["identifiers"])
    assert_no_identifiers((out / "scores.csv").read_bytes(), "scores.csv", case["identifiers"])
    # The planted DICOMs have no Study Instance UID, so no PACS could file a result: none is written.
    assert "exam_left.dcm: its header has no Study Instance UID" in text
    if case["real"]:
        import pydicom

        assert sorted(p.name for p in (out / "dicom").iterdir()) == ["real_mammogram_sc.dcm",
                                                                      "real_mammogram_sr.dcm"]
        # The objects for the PACS are where the identifiers must be: filed with the right woman.
        source = pydicom.dcmread(case["inputs"] / "real_mammogram.dcm", stop_before_pixels=True)
        for kind in ("sr", "sc"):
            written = pydicom.dcmread(out / "dicom" / f"real_mammogram_{kind}.dcm", stop_before_pixels=True)
            assert (written.PatientID, written.StudyInstanceUID) == (source.PatientID, source.StudyInstanceUID)


def test_explain_leaks_nothing(case, capfd, caplog):
    out = case["root"] / "explain"
    code, text = _run(capfd, caplog, "explain", "--checkpoint", str(case["ckpt"]), "--out", str(out),
                      str(case["inputs"] / "exam_left.dcm"), str(case["inputs"] / "exam_cut.dcm"),
                      *([str(case["inputs"] / "real_mammogram.dcm")] if case["real"] else []), "--json")
    assert_no_identifiers(text, "explain stdout/stderr/logs", case["identifiers"])
    assert (out / "explanations.jsonl").exists(), text
    assert assert_no_identifiers_in_files(out, case["identifiers"]) >= 4


def test_eval_leaks_nothing(case, capfd, caplog):
    out = case["root"] / "eval"
    code, text = _run(capfd, caplog, "eval", "--checkpoint", str(case["ckpt"]), "--dataset", "csv",
                      "--data-dir", str(case["manifest"]), "--split", "all", "--bootstrap", "10",
                      "--out", str(out), "--json")
    assert code == 0, text
    assert_no_identifiers(text, "eval stdout/stderr/logs", case["identifiers"])
    assert assert_no_identifiers_in_files(out, case["identifiers"]) >= 3


def test_web_page_logic_leaks_nothing(case, capfd, caplog):
    from mammojax.app import logic
    from mammojax.errors import ImageReadError

    model = logic.load_app_model(case["ckpt"], warm_up=False)
    items, shown = [], []
    names = ["exam_left.dcm", "exam_cut.dcm"] + (["real_mammogram.dcm"] if case["real"] else [])
    with caplog.at_level(logging.DEBUG):
        for name in names:
            try:
                analysis = logic.analyse_upload(model, name, (case["inputs"] / name).read_bytes())
            except ImageReadError as err:
                shown.append(str(err))  # what the page would display
                continue
            items.append(("Patient 1", analysis))
            shown.append(repr(analysis.meta) + analysis.decision)
            shown.append(logic.png_bytes(analysis.display_image).hex())
        report = logic.build_report(model.describe(), items, logic.summarise_patients(items, tau=model.tau))
    captured = capfd.readouterr()
    assert len(items) == len(names) - 1 and len(shown) > len(items)
    assert_no_identifiers(logic.report_json(report), "web report", case["identifiers"])
    assert_no_identifiers("\n".join(shown) + captured.out + captured.err + caplog.text, "web page",
                          case["identifiers"])


# --- pydicom's own output (warnings, decoder tracebacks) -------------------------------

def _chatty_dicom(path: Path, *, broken_pixels: bool) -> Path:
    """A DICOM whose reading makes pydicom log: an unknown character set (its
    warning quotes the header value) and, optionally, pixel data no decoder takes."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGLSLossless if broken_pixels else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.SpecificCharacterSet = "ZARATHUSTRA"
    for keyword, value in PLANTED.items():
        setattr(ds, keyword, value)
    ds.Modality, ds.Manufacturer, ds.ImageLaterality, ds.ViewPosition = "MG", "ACME", "L", "CC"
    ds.Rows, ds.Columns = 40, 40
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if broken_pixels:
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + PLANTED["PatientName"].encode() * 8])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = (np.arange(1600, dtype=np.uint16) % 4096).tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the character set while writing too
        ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("broken_pixels", [False, True], ids=["pydicom-warning", "decoder-error"])
def test_pydicom_output_reaches_the_console_only_as_safe_lines(tmp_path, capfd, broken_pixels):
    """What predict's console would show: no pydicom record, no traceback, no header value."""
    import io
    import re

    from mammojax.data.readers import read_image
    from mammojax.errors import ImageReadError

    path = _chatty_dicom(tmp_path / "chatty.dcm", broken_pixels=broken_pixels)
    console = io.StringIO()
    handler = logging.StreamHandler(console)  # as logging.basicConfig() sets up
    handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # the most that could ever reach a console
    capfd.readouterr()
    try:
        try:
            read_image(path)
            error = ""
        except ImageReadError as err:
            error = str(err)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    captured = capfd.readouterr()
    lines = console.getvalue().splitlines()
    assert bool(error) == broken_pixels and "\n" not in error
    assert [line for line in lines if re.match(r"^\w+:pydicom", line)] == []
    text = "\n".join(lines) + captured.out + captured.err + error
    assert "Traceback" not in text
    assert_no_identifiers(text, "console", PLANTED_STRINGS)
    # pydicom's records did arrive, as one safe line each on mammojax's logger.
    ours = [line for line in lines if line.startswith("DEBUG:mammojax.data.dicom:")]
    assert f"DEBUG:mammojax.data.dicom:{path}: pydicom warning: unknown character set" in ours
    if broken_pixels:
        assert any(line.startswith(f"DEBUG:mammojax.data.dicom:{path}: pydicom error: a decoder failed (")
                   for line in ours)
        assert error == f"{path}: DICOM pixel data could not be decoded (RuntimeError)"
