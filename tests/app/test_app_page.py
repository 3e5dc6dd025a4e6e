"""The Streamlit page through streamlit.testing.v1.AppTest (no browser, real script run)."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("streamlit")

from streamlit.testing.v1 import AppTest  # noqa: E402

from app_support import IDENTIFIERS, MANUFACTURER, TAU, dicom_bytes, make_tiny_checkpoint, png_bytes  # noqa: E402
from mammojax.app import logic  # noqa: E402  (never import page: that runs the script)

RUN_TIMEOUT = 180  # seconds: the first run loads and compiles the model


def _page_path() -> str:
    from pathlib import Path

    return str(Path(logic.__file__).with_name("page.py"))


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("app-page") / "ckpt")


def _run_page(monkeypatch, checkpoint) -> AppTest:
    if checkpoint is None:
        monkeypatch.delenv("MAMMOJAX_CHECKPOINT", raising=False)
    else:
        monkeypatch.setenv("MAMMOJAX_CHECKPOINT", str(checkpoint))
    app = AppTest.from_file(_page_path(), default_timeout=RUN_TIMEOUT)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _all_text(app: AppTest) -> str:
    """Every string the page rendered: text elements, widget labels, values, captions."""
    parts = []
    for node in _walk(app._tree):
        proto = getattr(node, "proto", None)
        if proto is not None:
            parts.append(str(proto))
        for attribute in ("value", "label", "body", "caption", "help"):
            value = getattr(node, attribute, None)
            if isinstance(value, str):
                parts.append(value)
    return "\n".join(parts)


def _walk(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _walk(child)


def test_without_a_checkpoint_the_page_explains_how_to_get_one(monkeypatch):
    app = _run_page(monkeypatch, None)
    assert app.title[0].value == page_title()
    text = _all_text(app)
    for command in ("mammojax quickstart", "mammojax train", "mammojax convert-weights"):
        assert command in text
    assert "No usable model" in app.error[0].value
    assert not app.file_uploader  # nothing to upload to


def test_an_unusable_checkpoint_gets_the_same_guidance(monkeypatch, tmp_path):
    app = _run_page(monkeypatch, tmp_path)  # exists, but is no checkpoint
    assert "not a mammojax checkpoint" in app.error[0].value
    assert "mammojax quickstart" in _all_text(app)


def test_with_a_checkpoint_the_page_shows_title_disclaimer_and_uploader(monkeypatch, checkpoint_dir):
    app = _run_page(monkeypatch, checkpoint_dir)
    assert app.title[0].value == page_title()
    assert "not a medical device" in app.warning[0].value
    # A phantom-trained model says so on the page (issue 19 item 9).
    assert any("synthetic phantoms only" in w.value for w in app.warning)
    assert len(app.file_uploader) == 1 and app.file_uploader[0].accept_multiple_files
    assert f"{TAU:.3f}" in _all_text(app)  # the checkpoint's own threshold is shown
    assert not app.error


def test_uploads_are_scored_explained_and_summarised(monkeypatch, checkpoint_dir):
    app = _run_page(monkeypatch, checkpoint_dir)
    app.file_uploader[0].set_value([
        ("left-cc.dcm", dicom_bytes(laterality="L", view="CC"), "application/dicom"),
        ("broken.png", b"\x89PNG\r\n\x1a\nnot really", "image/png"),
        ("right-mlo.png", png_bytes(140, 100, seed=5), "image/png"),
    ]).run()
    assert not app.exception, [e.value for e in app.exception]

    # Two good images: a probability, a decision, an overlay each; one clean error.
    probabilities = [float(m.value) for m in app.metric]
    assert len(probabilities) == 2 and all(0.0 <= p <= 1.0 for p in probabilities)
    # The probability names the checkpoint's positive class (phantoms: "lesion"), never "cancer".
    assert {m.label for m in app.metric} == {"Probability of lesion"}
    assert [e.value for e in app.error] == [app.error[0].value]
    assert app.error[0].value.startswith("broken.png: ")
    text = _all_text(app)
    for p in probabilities:
        expected = logic.SUSPICIOUS_TEXT if p >= TAU else logic.NEGATIVE_TEXT
        assert f"probability {p:.3f} {'≥' if p >= TAU else '<'} decision threshold τ = {TAU:.3f}" in text
        assert expected in text
    assert len(app.slider) == 2
    assert "**Laterality:** L" in text and "**View:** CC" in text and MANUFACTURER in text

    # Default: one patient, scored by the max over her views.
    patient = [m.value for m in app.markdown if m.value.startswith(f"**{logic.DEFAULT_PATIENT}**")]
    assert len(patient) == 1 and "2 image(s)" in patient[0]
    assert f"max probability **{max(probabilities):.3f}**" in patient[0]
    assert {b.label for b in _download_buttons(app)} == {"Download overlay (PNG)", "Download JSON report"}

    # Privacy: nothing from the DICOM's patient module anywhere on the page.
    for identifier in IDENTIFIERS:
        assert identifier not in text
    assert "cancer" not in text.lower()

    # The opacity slider only re-blends; a second patient label splits the summary.
    app.slider[0].set_value(0.9).run()
    app.text_input(key=[t.key for t in app.text_input][1]).set_value("Patient 2").run()
    assert not app.exception
    summaries = [m.value for m in app.markdown if re.match(r"\*\*Patient \d\*\*", m.value)]
    assert len(summaries) == 2
    assert [float(m.value) for m in app.metric] == probabilities  # analysed once, not again


def _download_buttons(app: AppTest):
    return [node for node in _walk(app._tree) if getattr(node, "type", None) == "download_button"]


def page_title() -> str:
    import ast
    from pathlib import Path

    # Read the title constant without running the Streamlit script.
    tree = ast.parse(Path(_page_path()).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "TITLE":
            return node.value.value
    raise AssertionError("page.py defines no TITLE")
