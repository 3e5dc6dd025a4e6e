"""The web page's logic, without Streamlit: analysis, decisions, patients, report, privacy."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from app_support import (IDENTIFIERS, IMAGE_SIZE, MANUFACTURER, TAU, dicom_bytes,
                         make_tiny_checkpoint, png_bytes)
from mammojax.app import logic
from mammojax.errors import ImageReadError, MammojaxError


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("app-logic") / "ckpt")


@pytest.fixture(scope="module")
def app_model(checkpoint_dir):
    return logic.load_app_model(checkpoint_dir)


def test_png_upload_gives_probability_decision_and_overlay(app_model):
    analysis = logic.analyse_upload(app_model, "left-cc.png", png_bytes(120, 96))

    assert 0.0 <= analysis.probability <= 1.0
    assert analysis.tau == pytest.approx(TAU)
    assert analysis.suspicious == (analysis.probability >= TAU)
    assert analysis.decision == (logic.SUSPICIOUS_TEXT if analysis.suspicious else logic.NEGATIVE_TEXT)
    assert analysis.model_input.shape == (IMAGE_SIZE, IMAGE_SIZE)
    assert analysis.model_input.dtype == np.uint8
    # Display and heatmap stay on the original grid (120 x 96 fits the screen as is).
    assert analysis.display_image.shape == (120, 96)
    assert analysis.heatmap.shape == (120, 96)
    assert 0.0 <= analysis.heatmap.min() and analysis.heatmap.max() <= 1.0
    # A session keeps only display-size uint8 arrays: about 2 bytes per displayed pixel.
    assert {a.dtype for a in (analysis.model_input, analysis.display_image, analysis.heat)} == {np.dtype(np.uint8)}
    assert analysis.nbytes == IMAGE_SIZE**2 + 2 * 120 * 96
    overlay = analysis.overlay(0.5)
    assert overlay.shape == (120, 96, 3) and overlay.dtype == np.uint8
    assert analysis.meta["format"] == "png"


def test_large_images_are_shown_downscaled(app_model):
    analysis = logic.analyse_upload(app_model, "big.png", png_bytes(1500, 1200))
    assert max(analysis.display_image.shape) == logic.DISPLAY_MAX_SIDE
    assert analysis.heatmap.shape == analysis.display_image.shape
    assert analysis.nbytes < 2.1 * logic.DISPLAY_MAX_SIDE**2  # not 1500 x 1200 floats
    assert analysis.meta["original_shape"] == [1500, 1200]


def test_dicom_metadata_is_shown_but_never_patient_identifiers(app_model):
    analysis = logic.analyse_upload(app_model, "exam.dcm", dicom_bytes(laterality="R", view="MLO"))

    assert analysis.meta["format"] == "dicom"
    assert (analysis.meta["laterality"], analysis.meta["view"]) == ("R", "MLO")
    assert analysis.meta["manufacturer"] == MANUFACTURER
    report = logic.build_report(app_model.describe(), [("Patient 1", analysis)],
                                logic.summarise_patients([("Patient 1", analysis)], tau=app_model.tau))
    assert report["images"][0]["probability_of"] == "lesion" == report["model"]["positive_class"]
    text = logic.report_json(report).decode() + repr(analysis.meta)
    for identifier in IDENTIFIERS:
        assert identifier not in text


@pytest.mark.parametrize("name, data, reason", [
    ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "PNG"),
    ("notes.txt", b"these are not pixels", None),
    ("empty.dcm", b"", "empty"),
    ("cut.dcm", dicom_bytes()[:400], None),
])
def test_unreadable_uploads_raise_a_clean_error_naming_the_upload(app_model, name, data, reason):
    with pytest.raises(ImageReadError) as caught:
        logic.analyse_upload(app_model, name, data)
    message = str(caught.value)
    assert message.startswith(f"{name}: ")
    assert "/proc" not in message and "\n" not in message
    if reason:
        assert reason in message


def test_analysis_writes_nothing_to_disk(app_model, tmp_path, monkeypatch):
    # Temporary files would land in TMPDIR or the working directory: both stay empty.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.chdir(tmp_path)
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    logic.analyse_upload(app_model, "exam.dcm", dicom_bytes())
    logic.analyse_upload(app_model, "view.png", png_bytes())
    assert sorted(os.listdir(tmp_path)) == ["tmp"]
    assert os.listdir(scratch) == []


def test_decision_is_at_tau_inclusive():
    assert logic.is_suspicious(0.37, 0.37)
    assert not logic.is_suspicious(0.3699, 0.37)
    assert logic.decision_text(0.9, 0.5) == logic.SUSPICIOUS_TEXT
    assert logic.decision_text(0.1, 0.5) == logic.NEGATIVE_TEXT


def _fake_analysis(name: str, probability: float, tau: float = 0.5) -> logic.ImageAnalysis:
    gray = np.zeros((4, 4), np.uint8)
    return logic.ImageAnalysis(name=name, probability=probability, tau=tau, model_input=gray,
                               display_image=gray, heat=gray, meta={"format": "png"})


def test_patient_score_is_the_max_over_her_views_by_default():
    items = [("A", _fake_analysis("a-cc", 0.2)), ("B", _fake_analysis("b-cc", 0.1)),
             ("A", _fake_analysis("a-mlo", 0.7)), (" ", _fake_analysis("x", 0.3))]
    patients = logic.summarise_patients(items, tau=0.5)

    assert [p.label for p in patients] == ["A", "B", logic.DEFAULT_PATIENT]
    assert patients[0].image_names == ("a-cc", "a-mlo")
    assert patients[0].score == pytest.approx(0.7) and patients[0].suspicious
    assert patients[1].score == pytest.approx(0.1) and not patients[1].suspicious
    mean = logic.summarise_patients(items, aggregate="mean", tau=0.5)  # the mean of the margins
    margin = (np.log(0.2 / 0.8) + np.log(0.7 / 0.3)) / 2
    assert mean[0].score == pytest.approx(1 / (1 + np.exp(-margin))) and not mean[0].suspicious


def test_unknown_patient_aggregate_is_a_user_error():
    with pytest.raises(MammojaxError, match="median"):
        logic.summarise_patients([], aggregate="median", tau=0.5)


def test_report_is_json_with_images_patients_and_disclaimer():
    items = [(logic.DEFAULT_PATIENT, _fake_analysis("cc.png", 0.8)),
             (logic.DEFAULT_PATIENT, _fake_analysis("mlo.png", 0.3))]
    patients = logic.summarise_patients(items, tau=0.5)
    report = json.loads(logic.report_json(logic.build_report({"model": "resnet18"}, items, patients)))

    assert report["disclaimer"] == logic.DISCLAIMER
    assert [i["file"] for i in report["images"]] == ["cc.png", "mlo.png"]
    assert report["images"][0]["decision"] == logic.SUSPICIOUS_TEXT
    assert report["patients"] == [{"patient": logic.DEFAULT_PATIENT, "images": ["cc.png", "mlo.png"],
                                   "aggregate": "max", "score": 0.8, "tau": 0.5,
                                   "decision": logic.SUSPICIOUS_TEXT, "suspicious": True}]
    assert logic.report_file_name(["cc.png"]) == "cc-report.json"


def test_png_bytes_round_trip():
    from io import BytesIO

    from PIL import Image

    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert np.array_equal(np.asarray(Image.open(BytesIO(logic.png_bytes(rgb)))), rgb)


def test_checkpoint_problem_explains_what_is_wrong(tmp_path, checkpoint_dir):
    assert "no checkpoint given" in logic.checkpoint_problem(None)
    assert "not found" in logic.checkpoint_problem(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert "not a mammojax checkpoint" in logic.checkpoint_problem(tmp_path / "empty")
    assert logic.checkpoint_problem(checkpoint_dir) is None


def test_cli_rejects_a_missing_checkpoint_in_one_line(tmp_path, capsys):
    from mammojax.cli import main

    code = main(["app", "--checkpoint", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.count("\n") == 0 and "nowhere" in err and "checkpoint not found" in err


def test_cli_builds_the_streamlit_command(tmp_path):
    from mammojax.cli.app_cmd import PAGE, streamlit_command

    command = streamlit_command(tmp_path, host="127.0.0.1", port=8765, max_upload_mb=7)
    assert PAGE.is_file() and command[command.index("run") + 1] == str(PAGE)
    flags = dict(zip(command[5::2], command[6::2]))
    assert flags["--server.port"] == "8765" and flags["--server.maxUploadSize"] == "7"
    assert flags["--server.address"] == "127.0.0.1" and flags["--server.headless"] == "true"
    assert command[-3:] == ["--", "--checkpoint", str(tmp_path)]


def test_overlay_opacity_blends_only_where_the_heatmap_is_hot():
    gray = np.full((2, 2), 100, np.uint8)
    heatmap = np.array([[0.0, 1.0], [0.5, 0.0]], np.float32)

    clear = logic.overlay_heatmap(gray, heatmap, 0.0)
    assert np.array_equal(clear, np.full((2, 2, 3), 100, np.uint8))
    full = logic.overlay_heatmap(gray, heatmap, 1.0)
    assert np.array_equal(full[0, 0], [100, 100, 100])  # cold pixel untouched
    assert full[0, 1, 0] > 100 and full[0, 1, 2] < 100  # peak of "jet" is red
    half = logic.overlay_heatmap(gray, heatmap, 0.5)
    assert np.abs(half[0, 1].astype(int) - 100).sum() < np.abs(full[0, 1].astype(int) - 100).sum()


def test_heatmap_is_shown_over_the_breast_only(app_model):
    from scipy import ndimage

    analysis = logic.analyse_upload(app_model, "left-cc.png", png_bytes(120, 96))
    # Clear of the skin line by two model-input pixels (the map is interpolated up to the display).
    background = ndimage.binary_erosion(analysis.display_image < 5, iterations=4)
    assert background.sum() > 1000
    assert float(np.max(analysis.heatmap[background])) == 0.0
    overlay = analysis.overlay(1.0)
    assert (overlay[background] == analysis.display_image[background][:, None]).all()  # grey, untouched
