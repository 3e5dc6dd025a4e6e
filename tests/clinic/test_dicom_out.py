"""`predict --dicom-out`: a Structured Report and a Secondary Capture per DICOM input that
pydicom, highdicom and dciodvfy accept, referencing the input, filed under its patient and study."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from clinic_support import IDENTIFIERS, OPERATING_POINTS, assert_no_identifiers, run_cli

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")


def _outputs(run: dict, suffix: str) -> dict[str, Path]:
    """Input file name -> its output object."""
    return {p.name.replace(suffix, ".dcm"): p for p in sorted(run["out"].glob(f"*{suffix}"))}


def _groups(sr) -> dict[str, object]:
    return {str(g.tracking_identifier): g for g in sr.content.get_image_measurement_groups()}


def _texts(item, code: str) -> list[str]:
    """TEXT values of the content items under ``item`` named by DCM ``code``."""
    found = []
    for child in item.get("ContentSequence", []):
        name = child.get("ConceptNameCodeSequence")
        if name and name[0].CodeValue == code and "TextValue" in child:
            found.append(str(child.TextValue))
        found += _texts(child, code)
    return found


def _values(group) -> dict[str, float]:
    return {m.name.meaning: m.value for m in group.get_measurements()}


def test_objects_for_dicom_inputs_only_and_say_why_not(dicom_run, exam_inputs):
    # Every input was scored, but no_study.dcm, a DICOM, got no DICOM output: a partial run.
    assert dicom_run["code"] == 3, dicom_run["console"]
    expected = set(exam_inputs["uids"])  # the six DICOMs with a study; not no_study.dcm, not the PNG
    assert set(_outputs(dicom_run, "_sr.dcm")) == expected
    assert set(_outputs(dicom_run, "_sc.dcm")) == expected
    console = dicom_run["console"]
    assert "no DICOM output for 1 input that is not DICOM" in console and "P9_L_CC.png" in console
    assert "no_study.dcm: its header has no Study Instance UID" in console
    assert "6 structured reports and 6 secondary captures written" in console


def test_sr_reads_back_with_the_csv_numbers_and_references_the_input(dicom_run, exam_inputs):
    import mammojax

    rows = {Path(r["path"]).name: r for r in dicom_run["rows"] if r["kind"] == "image"}
    levels = [r for r in dicom_run["rows"] if r["kind"] in ("breast", "exam")]
    for name, path in _outputs(dicom_run, "_sr.dcm").items():
        uids, row = exam_inputs["uids"][name], rows[name]
        source = pydicom.dcmread(exam_inputs["folder"] / name, stop_before_pixels=True)
        ds = pydicom.dcmread(path)
        sr = hd.sr.srread(path)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR Storage
        assert isinstance(sr.content, hd.sr.MeasurementReport)  # TID 1500
        # Filed with the right woman: patient and study modules copied, a new series in her study.
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                        "AccessionNumber", "StudyDate", "StudyID", "ReferringPhysicianName"):
            assert str(ds.get(keyword)) == str(source.get(keyword)), keyword
        assert ds.SeriesInstanceUID != uids["series"] and ds.SOPInstanceUID != uids["sop"]
        evidence = {(s.SeriesInstanceUID, r.ReferencedSOPInstanceUID)
                    for study in ds.CurrentRequestedProcedureEvidenceSequence
                    for s in study.ReferencedSeriesSequence for r in s.ReferencedSOPSequence}
        assert (uids["series"], uids["sop"]) in evidence
        assert all(study.StudyInstanceUID == uids["study"] for study in ds.CurrentRequestedProcedureEvidenceSequence)
        groups = _groups(sr)
        image = groups["image"]
        assert [s.referenced_sop_instance_uid for s in image.source_images] == [uids["sop"]]
        values = _values(image)
        assert values["Probability of lesion"] == pytest.approx(float(row["probability"]), abs=1e-6)
        assert values["Threshold Value"] == pytest.approx(OPERATING_POINTS["image"]["tau"])
        assert values["Calibration temperature"] == pytest.approx(OPERATING_POINTS["image"]["temperature"])
        assert values["Calibration offset"] == pytest.approx(OPERATING_POINTS["image"]["offset"])
        decision = image.get_qualitative_evaluations()[0]
        assert decision.value.meaning == row["decision"]
        # TID 4019 Algorithm Identification, on the group and on its probability.
        assert set(_texts(image[0], "111001")) == {"mammojax resnet18"}  # Algorithm Name
        assert set(_texts(image[0], "111003")) == {mammojax.__version__}  # Algorithm Version
        # Its exam's breasts and the exam itself, each at its own level's tau.
        mine = [r for r in levels if r["exam"] == row["exam"]]
        assert len(groups) == 1 + len(mine)
        for level in mine:
            key = "exam" if level["kind"] == "exam" else f"breast {level['laterality'] or '(side unknown)'}"
            got = _values(groups[key])
            assert got["Probability of lesion"] == pytest.approx(float(level["probability"]), abs=1e-6)
            point = OPERATING_POINTS["patient" if level["kind"] == "exam" else "breast"]
            assert got["Threshold Value"] == pytest.approx(point["tau"]) == float(level["tau"])
            derivation = groups[key].get_measurements()[0].derivation
            assert derivation.meaning == "Maximum" and level["rule"] == "max"
            assert len(groups[key].source_images) == int(level["n_images"])


def test_secondary_capture_is_the_overlay_on_the_input_grid(dicom_run, exam_inputs):
    for name, path in _outputs(dicom_run, "_sc.dcm").items():
        uids = exam_inputs["uids"][name]
        source = pydicom.dcmread(exam_inputs["folder"] / name)
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
        assert ds.PhotometricInterpretation == "RGB" and ds.pixel_array.shape == (source.Rows, source.Columns, 3)
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == uids["sop"]
        assert ds.StudyInstanceUID == uids["study"] and ds.PatientID == IDENTIFIERS["PatientID"]
        assert str(ds.PatientName) == IDENTIFIERS["PatientName"]


def test_dciodvfy_finds_no_errors(dicom_run):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian's dicom3tools) is not installed")
    for path in sorted(dicom_run["out"].glob("*.dcm")):
        report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True).stderr
        errors = [line for line in report.splitlines() if line.startswith("Error")]
        assert not errors, f"{path.name}: {errors}"


def test_console_and_csv_carry_no_identifier(dicom_run, exam_inputs):
    uids = tuple(u for facts in exam_inputs["uids"].values() for u in (facts["study"], facts["sop"]))
    assert_no_identifiers(dicom_run["console"], "predict --dicom-out console", uids)
    assert_no_identifiers(dicom_run["csv"].read_bytes(), "scores.csv", uids)
    # ...while the objects for the PACS must carry them.
    sr = next(dicom_run["out"].glob("*_sr.dcm")).read_bytes()
    assert IDENTIFIERS["PatientID"].encode() in sr and IDENTIFIERS["PatientName"].encode() in sr


def test_existing_objects_are_not_replaced_without_overwrite(dicom_run, clinic_checkpoint, exam_inputs):
    code, console = run_cli(["predict", "--checkpoint", str(clinic_checkpoint), str(exam_inputs["folder"]),
                             "--out", str(dicom_run["out"].parent / "again.csv"), "--dicom-out",
                             str(dicom_run["out"])])
    assert code == 2 and "already exists" in console and "--overwrite" in console
    assert not (dicom_run["out"].parent / "again.csv").exists()  # refused before anything ran


# --- the heatmap peak region ----------------------------------------------------------


def test_peak_region_is_the_box_of_a_clear_peak_only():
    from mammojax.clinic.dicom_out import peak_region

    breast = np.zeros((100, 80), bool)
    breast[:, :60] = True
    heat = np.zeros((100, 80), np.float32)
    heat[20:30, 10:18] = 0.8
    heat[24, 14] = 1.0
    heat[70:75, 40:45] = 0.9  # another hot spot, not connected to the peak
    top, left, bottom, right, share = peak_region(heat, breast)
    assert (top, left, bottom, right) == (20, 10, 30, 18) and share == pytest.approx(80 / 6000)
    assert peak_region(np.where(breast, 0.9, 0.0).astype(np.float32), breast) is None  # hot everywhere
    assert peak_region(np.zeros_like(heat), breast) is None  # nothing


def test_sr_holds_the_peak_region_on_the_source_image(dicom_run, exam_inputs, clinic_checkpoint, tmp_path,
                                                      monkeypatch):
    """A random tiny model has no clear peak; a planted one checks the ROI's encoding."""
    from mammojax.clinic import dicom_out
    from mammojax.scoring import Scorer

    monkeypatch.setattr(dicom_out, "peak_region", lambda heat, breast: (10, 12, 30, 33, 0.05))
    name = "wA_L_CC.dcm"
    rows = [r for r in dicom_run["rows"] if r["kind"] == "image" and Path(r["path"]).name == name]
    image_rows = [{**r, "format": "dicom", "probability": float(r["probability"]), "tau": float(r["tau"])}
                  for r in rows]
    summary = dicom_out.write_dicom_results(Scorer.from_checkpoint(clinic_checkpoint), image_rows, [], tmp_path)
    (_, sr_path, _), = summary.written
    sr = hd.sr.srread(sr_path)
    (roi,) = sr.content.get_planar_roi_measurement_groups()
    assert str(roi.tracking_identifier) == "heatmap peak region"
    assert roi.roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    np.testing.assert_array_equal(roi.roi.value, [[12, 10], [33, 10], [33, 30], [12, 30], [12, 10]])
    (reference,) = roi.roi.ContentSequence[0].ReferencedSOPSequence
    assert reference.ReferencedSOPInstanceUID == exam_inputs["uids"][name]["sop"]
    assert _values(roi)["Share of the breast covered"] == pytest.approx(5.0)
    if shutil.which("dciodvfy"):
        report = subprocess.run(["dciodvfy", str(sr_path)], capture_output=True, text=True).stderr
        assert not [line for line in report.splitlines() if line.startswith("Error")], report


def test_unusual_but_real_headers_still_get_both_objects(clinic_checkpoint, tmp_path):
    """An MLO's compound orientation (A\\FR), missing type-2 study attributes, a UTF-8 name and
    MONOCHROME1: what vendor files carry; each used to stop highdicom."""
    from pydicom.uid import generate_uid

    from mammojax.data.synthetic import write_dicom

    rows, cols = np.mgrid[0:96, 0:80]
    write_dicom(tmp_path / "mlo.dcm", ((rows + cols) * 20).astype(np.uint16), bits_stored=12,
                photometric="MONOCHROME1", StudyInstanceUID=generate_uid(), SeriesInstanceUID=generate_uid(),
                ImageLaterality="R", ViewPosition="MLO", PatientOrientation=["A", "FR"],
                SpecificCharacterSet="ISO_IR 192", PatientName="Zoë^Müller", PatientID="X-77")
    code, console = run_cli(["predict", "--checkpoint", str(clinic_checkpoint), str(tmp_path / "mlo.dcm"),
                             "--out", str(tmp_path / "scores.csv"), "--dicom-out", str(tmp_path / "dicom")])
    assert code == 0 and "1 structured report and 1 secondary capture written" in console, console
    sr, sc = (pydicom.dcmread(tmp_path / "dicom" / f"mlo_{kind}.dcm") for kind in ("sr", "sc"))
    assert str(sr.PatientName) == str(sc.PatientName) == "Zoë^Müller" and sr.PatientBirthDate == ""
    assert list(sc.PatientOrientation) == ["A", "FR"] and sc.Laterality == "R"
    if shutil.which("dciodvfy"):
        for kind in ("sr", "sc"):
            report = subprocess.run(["dciodvfy", str(tmp_path / "dicom" / f"mlo_{kind}.dcm")],
                                    capture_output=True, text=True).stderr
            assert not [line for line in report.splitlines() if line.startswith("Error")], report
