"""The clinical web page: upload mammograms, see the score, the decision and Grad-CAM.

Started by ``mammojax app --checkpoint DIR`` (which runs
``streamlit run page.py -- --checkpoint DIR``). Streamlit re-executes this
script on every interaction; the model is loaded once per server
(``st.cache_resource``) and each upload is analysed once per browser session,
so moving the opacity slider only re-blends the overlay.

Memory, with several clinicians at once: a session keeps only what the page
redraws, the :class:`~mammojax.app.logic.ImageAnalysis` of each upload still
in the uploader (display-size uint8 images and heatmap, in
``st.session_state["analyses"]``, keyed by the upload's id and dropped when
the file is removed); the upload's bytes are dropped once analysed, downloads
are built only when clicked, and a janitor thread shuts down closed sessions
and returns freed memory (:mod:`mammojax.app.sessions`).

Patients: all uploads of a session count as one patient (the clinician
uploads one exam at a time). Each image has a "Patient / exam" label; give
uploads different labels to score several patients side by side. The patient
score is the max (or the checkpoint's configured aggregate) of her images'
probabilities, compared with the same threshold tau.

All computation is in :mod:`mammojax.app.logic`; this file is layout only.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

import streamlit as st

from mammojax.app import logic, sessions
from mammojax.errors import MammojaxError

TITLE = "mammojax — mammogram analysis"
DEFAULT_OPACITY = 0.45
CHECKPOINT_ENV = "MAMMOJAX_CHECKPOINT"


def checkpoint_argument() -> str | None:
    """``--checkpoint`` after ``--`` on the streamlit command line, else $MAMMOJAX_CHECKPOINT."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--checkpoint")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args.checkpoint or os.environ.get(CHECKPOINT_ENV) or None


@st.cache_resource(show_spinner="Loading the model (once per server)…")
def get_model(path: str) -> logic.AppModel:
    return logic.load_app_model(path)


@st.cache_resource
def start_janitor() -> threading.Thread:
    """Once per server: ended sessions are shut down and their memory returned (mammojax.app.sessions)."""
    return sessions.start_janitor()


def show_guidance(problem: str) -> None:
    st.error(f"No usable model: {problem}")
    st.markdown(logic.GUIDANCE)


def show_sidebar(model: logic.AppModel) -> None:
    facts = model.describe()
    with st.sidebar:
        st.header("Model")
        st.markdown(
            f"- **Network:** {facts['model']} ({'×'.join(map(str, facts['input_shape']))} input)\n"
            f"- **Checkpoint:** {facts['checkpoint']}\n"
            f"- **Trained on:** {facts['trained_on'] or 'unknown'}\n"
            f"- **Decision threshold τ:** {facts['tau']:.3f}"
            f" ({facts['threshold_policy'] or 'fixed'} policy)\n"
            f"- **Temperature:** {facts['temperature']:.3f}\n"
            f"- **Heatmap:** {facts['cam_method']} at {facts['cam_layer']}")
        for text in facts.get("calibration_warnings") or []:
            st.warning(text[0].upper() + text[1:] + ".")
        st.header("How to read this page")
        positive = facts["positive_class"]
        st.markdown(
            f"- **Probability of {positive}** is the model's calibrated score for the image"
            f" ({positive} vs {facts['class_names'][0]}, the classes it was trained on).\n"
            f"- **Decision:** *{logic.SUSPICIOUS_TEXT}* when the probability is at least τ,"
            f" otherwise *{logic.NEGATIVE_TEXT}*.\n"
            f"- **Heatmap (Grad-CAM):** where the image pushed the score towards {positive};"
            " colours are relative within each image, not probabilities, and drawn over the breast only.\n"
            "- **Patient:** all uploads count as one patient (one exam) unless you give them"
            f" different *Patient / exam* labels; the patient score is the {model.patient_aggregate}"
            " over her images.\n"
            "- Uploads stay in memory and are never stored; DICOM patient identifiers are never shown.")


def analyse_new_uploads(model: logic.AppModel, files) -> dict:
    """Analyses each upload once per session; results keyed by the upload's id.

    Results of uploads no longer in the uploader are dropped, and an analysed
    upload's bytes are dropped from Streamlit's store: the analysis is all the
    page shows again.
    """
    results = st.session_state.setdefault("analyses", {})
    current = {f.file_id for f in files}
    for key in [k for k in results if k not in current]:
        del results[key]  # the user removed the file: forget it
    for upload in files:
        if upload.file_id in results:
            continue
        with st.spinner(f"Analysing {upload.name}…"):
            try:
                results[upload.file_id] = logic.analyse_upload(model, upload.name, upload.getvalue())
            except MammojaxError as err:
                results[upload.file_id] = str(err)
            except Exception as err:  # a bug must not take the other uploads down
                results[upload.file_id] = f"{upload.name}: could not be analysed ({type(err).__name__})"
        sessions.forget_upload_bytes(upload.file_id)
    return results


def show_analysis(key: str, analysis: logic.ImageAnalysis, model: logic.AppModel) -> str:
    """One image's panel; returns the patient label the user gave it."""
    with st.container(border=True):
        st.subheader(analysis.name)
        info, original, heat = st.columns([1.1, 1, 1])
        with info:
            colour = "red" if analysis.suspicious else "green"
            st.markdown(f"#### :{colour}[{analysis.decision}]")
            st.metric(f"Probability of {model.scorer.positive_class}", f"{analysis.probability:.3f}")
            relation = "≥" if analysis.suspicious else "<"
            st.caption(f"probability {analysis.probability:.3f} {relation} decision threshold "
                       f"τ = {analysis.tau:.3f}")
            st.markdown(describe_image(analysis.meta))
            label = st.text_input("Patient / exam", value=logic.DEFAULT_PATIENT, key=f"patient-{key}",
                                  help="Uploads with the same label are scored as one patient.")
        with original:
            st.image(analysis.model_input, caption="Model input (preprocessed, as the network sees it)",
                     width="stretch")
        with heat:
            opacity = st.slider("Heatmap opacity", 0.0, 1.0, DEFAULT_OPACITY, 0.05, key=f"opacity-{key}")
            overlay = analysis.overlay(opacity)
            caption = ("Grad-CAM heatmap over the breast" if analysis.heat.max() > 0 else
                       f"Grad-CAM: no region pushed the score towards {model.scorer.positive_class} (empty heatmap)")
            st.image(overlay, caption=caption, width="stretch")
            st.download_button("Download overlay (PNG)", data=lambda: logic.png_bytes(analysis.overlay(opacity)),
                               file_name=f"{Path(analysis.name).stem}-gradcam.png", mime="image/png",
                               key=f"png-{key}", on_click="ignore")
            if analysis.dicom_results:
                # The objects carry the woman's identifiers (a PACS files them by them): downloaded, never shown.
                st.download_button("Download DICOM results for the PACS (SR + overlay SC, zip)",
                                   data=analysis.dicom_results, file_name=f"{Path(analysis.name).stem}-dicom.zip",
                                   mime="application/zip", key=f"dicom-{key}", on_click="ignore")
            elif analysis.dicom_note:
                st.caption(f"No DICOM results: {analysis.dicom_note}")
    return label


def describe_image(meta: dict) -> str:
    """Safe image facts as one markdown line (unknown fields say so)."""
    height, width = meta.get("original_shape") or (0, 0)
    facts = {
        "Laterality": meta.get("laterality") or "unknown",
        "View": meta.get("view") or "unknown",
        "Manufacturer": meta.get("manufacturer") or "unknown",
        "Format": (meta.get("format") or "?").upper(),
        "Size": f"{width}×{height} px",
    }
    if meta.get("for_processing"):
        facts["Note"] = "raw FOR PROCESSING image: the model expects FOR PRESENTATION images"
    return "  \n".join(f"**{name}:** {value}" for name, value in facts.items())


def show_patients(model: logic.AppModel, labelled: list[tuple[str, logic.ImageAnalysis]]) -> None:
    point = model.scorer.operating_points["patient"]
    patients = logic.summarise_patients(labelled, aggregate=model.patient_aggregate, tau=point.tau,
                                        temperature=point.temperature, offset=point.offset)
    st.header("Patient-level result")
    for patient in patients:
        colour = "red" if patient.suspicious else "green"
        st.markdown(f"**{patient.label}** — {len(patient.image_names)} image(s), "
                    f"{patient.aggregate} probability **{patient.score:.3f}** (τ = {patient.tau:.3f}): "
                    f":{colour}[**{patient.decision}**]")
    st.download_button("Download JSON report",
                       data=lambda: logic.report_json(logic.build_report(model.describe(), labelled, patients)),
                       file_name=logic.report_file_name([a.name for _, a in labelled]),
                       mime="application/json", key="report", on_click="ignore")


def main() -> None:
    st.set_page_config(page_title=TITLE, layout="wide")
    st.title(TITLE)
    st.warning(logic.DISCLAIMER, icon="⚠️")

    path = checkpoint_argument()
    problem = logic.checkpoint_problem(path)
    if problem is not None:
        show_guidance(problem)
        return
    try:
        model = get_model(str(path))
    except MammojaxError as err:
        show_guidance(str(err))
        return
    start_janitor()
    show_sidebar(model)
    if model.data_warning:
        st.warning(f"**This model:** {model.data_warning}", icon="⚠️")

    limit_mb = st.get_option("server.maxUploadSize")
    files = st.file_uploader(
        "Mammograms of one exam: PNG, JPEG, TIFF, PGM or DICOM",
        accept_multiple_files=True,
        help=f"Up to {limit_mb} MB per file. Files are analysed in memory and never stored.")
    if not files:
        st.info("Upload one or more views (e.g. L-CC, L-MLO, R-CC, R-MLO) to analyse them.")
        return

    results = analyse_new_uploads(model, files)
    labelled = []
    for upload in files:
        result = results.get(upload.file_id)
        if isinstance(result, logic.ImageAnalysis):
            labelled.append((show_analysis(upload.file_id, result, model), result))
        elif result is not None:
            st.error(result)
    if labelled:
        show_patients(model, labelled)


main()
