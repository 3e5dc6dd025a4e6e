"""The web page's DICOM download: a DICOM upload's SR and SC for the PACS, made from its bytes in memory."""

from __future__ import annotations

import io
import zipfile

import pydicom
import pytest
from clinic_support import IDENTIFIERS, OPERATING_POINTS, assert_no_identifiers


@pytest.fixture(scope="module")
def app_model(clinic_checkpoint):
    from mammojax.app.logic import load_app_model

    return load_app_model(clinic_checkpoint, warm_up=False)


def test_a_dicom_upload_gets_its_sr_and_sc_as_one_download(app_model, exam_inputs):
    from mammojax.app.logic import analyse_upload

    name = "wA_L_CC.dcm"
    data = (exam_inputs["folder"] / name).read_bytes()
    analysis = analyse_upload(app_model, name, data)
    assert analysis.dicom_results and analysis.dicom_note is None
    with zipfile.ZipFile(io.BytesIO(analysis.dicom_results)) as archive:
        assert sorted(archive.namelist()) == ["wA_L_CC_sc.dcm", "wA_L_CC_sr.dcm"]
        sr_bytes, sc_bytes = archive.read("wA_L_CC_sr.dcm"), archive.read("wA_L_CC_sc.dcm")
    sr, sc = pydicom.dcmread(io.BytesIO(sr_bytes)), pydicom.dcmread(io.BytesIO(sc_bytes))
    uids = exam_inputs["uids"][name]
    # Filed with the right woman, in her study, pointing at the uploaded instance.
    assert sr.PatientID == IDENTIFIERS["PatientID"] and sr.StudyInstanceUID == uids["study"]
    assert sc.StudyInstanceUID == uids["study"]
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == uids["sop"]
    # The SR's probability is the one the page shows, at the image level's tau.
    import highdicom as hd

    report = hd.sr.srread(io.BytesIO(sr_bytes))
    (group,) = [g for g in report.content.get_image_measurement_groups() if str(g.tracking_identifier) == "image"]
    assert [s.referenced_sop_instance_uid for s in group.source_images] == [uids["sop"]]
    values = {m.name.meaning: m.value for m in group.get_measurements()}
    assert values["Probability of lesion"] == pytest.approx(analysis.probability, abs=1e-6)
    assert values["Threshold Value"] == pytest.approx(OPERATING_POINTS["image"]["tau"])
    # What the page displays carries none of the identifiers.
    assert_no_identifiers(repr(analysis.meta), "the page's image facts")
    assert analysis.nbytes >= len(analysis.dicom_results)


def test_non_dicom_and_unfilable_uploads_get_none_and_say_why(app_model, exam_inputs):
    from mammojax.app.logic import analyse_upload

    folder = exam_inputs["folder"]
    png = analyse_upload(app_model, "P9_L_CC.png", (folder / "P9_L_CC.png").read_bytes())
    assert png.dicom_results is None and png.dicom_note is None
    orphan = analyse_upload(app_model, "no_study.dcm", (folder / "no_study.dcm").read_bytes())
    assert orphan.dicom_results is None and "StudyInstanceUID" in orphan.dicom_note
    assert_no_identifiers(orphan.dicom_note, "the page's note")
