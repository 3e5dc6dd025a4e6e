"""Everything the web page computes, as plain functions a test can call.

The page (``page.py``) only lays out what these functions return. The flow for
one uploaded file is::

    bytes --read_upload--> LoadedImage --preprocess_image--> model input
          --one jitted pass--> logits (probability) + Grad-CAM map
          --on_breast--> the map over the breast only (breast_mask of the input)
          --geometry.to_original--> heatmap on the original image grid

Uploads are processed from memory and never written to disk: a mammogram is
health data, and a temporary file is one more copy to leak. Only the safe
metadata fields of :class:`~mammojax.data.readers.ImageMeta` (laterality, view,
manufacturer, ...) reach the page or the report; DICOM patient identifiers are
never read into anything this module returns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from mammojax import runtime
from mammojax.checkpoint import read_meta, training_data_warning
from mammojax.data import readers
from mammojax.data.preprocess import breast_mask
from mammojax.errors import ImageReadError, MammojaxError
from mammojax.evaluation.aggregate import AGGREGATES as PATIENT_AGGREGATES
from mammojax.evaluation.operating_points import OperatingPoint, calibration_warnings, group_probabilities
from mammojax.explain.overlay import blend, on_breast
from mammojax.scoring import Scorer
from mammojax.export import load_scorer, read_model_meta

DISCLAIMER = ("Research tool, not a medical device. Its output is not a diagnosis and must "
              "not guide patient care; every image needs a qualified reader.")
SUSPICIOUS_TEXT = "Suspicious — recall"
NEGATIVE_TEXT = "No suspicious finding"
ACCEPTED_TYPES = ("png", "jpg", "jpeg", "tif", "tiff", "pgm", "pnm", "dcm", "dicom")
# The page shows images at most this many pixels on their long side: enough
# for a screen, and it keeps the overlay PNG small for a full-field mammogram.
DISPLAY_MAX_SIDE = 1024
DEFAULT_PATIENT = "Patient 1"

GUIDANCE = """\
The page needs a trained model (a mammojax checkpoint directory). Get one with:

* `mammojax quickstart` — trains a small model on built-in synthetic phantoms
  (minutes on a laptop; for trying the page, not for real images);
* `mammojax train --config configs/CONFIG.py --workdir WORKDIR` — then pass
  `WORKDIR` (its `best/` checkpoint is used);
* `mammojax convert-weights ...` — imports torchvision/timm weights into a checkpoint.

Then start the page with `mammojax app --checkpoint DIR`.
"""


# --- the model ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AppModel:
    """A loaded checkpoint's scorer: the page's probabilities and heatmaps come from it alone."""

    scorer: Any  # mammojax.scoring.Scorer, batch size 1

    @property
    def checkpoint(self):
        return self.scorer.checkpoint

    @property
    def cam_method(self) -> str:
        return "window margins" if self.scorer.scoring.windows else self.scorer.scoring.cam_method

    @property
    def cam_layer(self) -> str:
        scoring = self.scorer.scoring
        return f"{scoring.window_size} px windows" if scoring.windows else scoring.cam_layer

    @property
    def tau(self) -> float:
        return self.scorer.tau

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of the model input."""
        return self.checkpoint.image_shape

    @property
    def patient_aggregate(self) -> str:
        aggregate = self.checkpoint.patient_aggregate
        return aggregate if aggregate in PATIENT_AGGREGATES else "max"

    @property
    def data_warning(self) -> str | None:
        """Why uploads look unlike this model's training data (synthetic phantoms only), or None."""
        return training_data_warning(self.checkpoint.meta)

    def score_and_cam(self, images: np.ndarray) -> tuple[float, np.ndarray, float]:
        """``(probability, heatmap (H, W) in [0, 1], lesion margin)`` of one preprocessed film ``(1, H, W, 1)``."""
        heatmaps, logits = self.scorer.explain(images)
        return float(self.scorer.probability_of(logits)[0]), heatmaps[0], float(logits[0, -1] - logits[0, 0])

    def describe(self) -> dict:
        """Facts about the model for the page's sidebar and the report."""
        meta = self.checkpoint.meta
        return {
            "model": self.checkpoint.model_name,
            "checkpoint": self.checkpoint.path.name,
            "input_shape": list(self.image_shape),
            "tau": self.tau,
            "temperature": self.scorer.temperature,
            "offset": self.scorer.offset,
            "threshold_policy": meta.get("threshold_policy"),
            "trained_on": meta.get("data", {}).get("dataset"),
            "class_names": self.scorer.class_names,
            "positive_class": self.scorer.positive_class,
            "scoring": self.scorer.scoring.kind,
            "tta_hflip": self.scorer.scoring.tta_hflip,
            "cam_method": self.cam_method,
            "cam_layer": self.cam_layer,
            "patient_aggregate": self.patient_aggregate,
            "warning": self.data_warning,
            "calibration_warnings": calibration_warnings(self.scorer.operating_points),
        }


def checkpoint_problem(path: str | os.PathLike | None) -> str | None:
    """Why ``path`` cannot serve as the page's checkpoint, or None if it looks usable.

    Only the metadata is read (no JAX), so the page and the CLI can check a
    path cheaply before loading anything.
    """
    if not path:
        return "no checkpoint given (start the page with `mammojax app --checkpoint DIR`)"
    try:
        read_model_meta(path)  # a checkpoint, a workdir or a `mammojax export` directory
    except MammojaxError as err:
        return str(err)
    return None


def load_app_model(path: str | os.PathLike, *, warm_up: bool = True) -> AppModel:
    """Loads a checkpoint's scorer (the same one ``predict`` and ``explain`` use).

    ``warm_up`` compiles its heatmap program now (a few seconds, once per
    server) so the first upload is answered at full speed.
    """
    runtime.setup()
    model = AppModel(scorer=load_scorer(path, batch_size=1))  # a checkpoint's or an export's
    if warm_up:
        model.score_and_cam(np.zeros((1, *model.image_shape, 1), np.float32))
    return model


# --- one uploaded file -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImageAnalysis:
    """The page's result for one uploaded image: only what the page redraws.

    A session keeps one per upload, so everything is display-sized uint8
    (about 2 bytes per displayed pixel): no full-resolution or float array.
    """

    name: str  # the uploaded file's name, as the user chose it
    probability: float
    tau: float
    model_input: np.ndarray  # (S, S) uint8: what the network saw
    display_image: np.ndarray  # (h, w) uint8: the original, at most DISPLAY_MAX_SIDE
    heat: np.ndarray  # (h, w) uint8: the heatmap over the breast, 255 = its peak, on display_image's grid
    meta: dict  # safe fields only, see safe_meta()
    margin: float | None = None  # the film's lesion margin (logit 1 - logit 0): patients aggregate margins
    # A DICOM upload's results for a PACS (SR + SC, zipped; they carry its identifiers, so they are
    # only ever downloaded, never shown), or why there are none.
    dicom_results: bytes | None = None
    dicom_note: str | None = None

    @property
    def heatmap(self) -> np.ndarray:
        """The heatmap as float32 in [0, 1] (``heat`` / 255)."""
        return self.heat.astype(np.float32) / 255.0

    @property
    def suspicious(self) -> bool:
        return is_suspicious(self.probability, self.tau)

    @property
    def decision(self) -> str:
        return decision_text(self.probability, self.tau)

    def overlay(self, opacity: float) -> np.ndarray:
        """(h, w, 3) uint8: the heatmap over the original image."""
        return overlay_heatmap(self.display_image, self.heatmap, opacity)

    @property
    def nbytes(self) -> int:
        """Memory the analysis holds (its arrays)."""
        return (self.model_input.nbytes + self.display_image.nbytes + self.heat.nbytes
                + len(self.dicom_results or b""))


def is_suspicious(probability: float, tau: float) -> bool:
    """The checkpoint's operating point: recall when the probability reaches tau."""
    return float(probability) >= float(tau)


def decision_text(probability: float, tau: float) -> str:
    return SUSPICIOUS_TEXT if is_suspicious(probability, tau) else NEGATIVE_TEXT


def analyse_upload(model: AppModel, name: str, data: bytes, *,
                   max_pixels: int | None = None, dicom_results: bool = True) -> ImageAnalysis:
    """Scores one uploaded file and explains the score.

    A DICOM upload also gets its results for a PACS (``dicom_results``: the
    SR and SC of ``predict --dicom-out``, zipped), made while its bytes are
    still at hand.

    Raises:
        ImageReadError: the bytes are not a readable image (named by ``name``).
    """
    if max_pixels is None:
        max_pixels = model.scorer.max_pixels
    loaded = read_upload(name, data, max_pixels=max_pixels)
    prepared = model.scorer.prepare(loaded.pixels, loaded.meta.laterality, name=name)
    batch = np.asarray(prepared.image, np.float32)[None]
    probability, heatmap, margin = model.score_and_cam(batch)
    shown = on_breast(heatmap, breast_mask(prepared.image, prepared.geometry))
    heatmap_original = np.asarray(prepared.geometry.to_original(shown), np.float32)
    display = _fit_display(loaded.pixels)
    results, note = None, None
    if dicom_results and loaded.meta.format == "dicom":
        # Here, not at the top: highdicom and the explainer load only when a DICOM is uploaded.
        from mammojax.clinic.dicom_out import dicom_results_zip

        with _in_memory_file(data) as path:
            results, note = dicom_results_zip(model.scorer, path, name=name, probability=float(probability),
                                              laterality=loaded.meta.laterality)
    return ImageAnalysis(
        name=name,
        probability=float(probability),
        tau=model.tau,
        model_input=_to_uint8(_window(np.asarray(prepared.image)[..., 0])),
        display_image=_to_uint8(display),
        heat=_to_uint8(_resize(heatmap_original, display.shape)),
        meta=safe_meta(loaded.meta),
        margin=margin,
        dicom_results=results,
        dicom_note=note,
    )


def read_upload(name: str, data: bytes, *, max_pixels: int | None = None):
    """Decodes uploaded bytes with the same reader as every other command.

    The bytes stay in memory. ``mammojax.data.readers`` reads from paths, so on
    Linux the bytes are exposed through an anonymous in-memory file
    (``memfd``, never on a disk) whose ``/proc`` path the reader opens. Errors
    are re-raised naming the upload, not that path.
    """
    if not data:
        raise ImageReadError(name, "empty file")
    kwargs = {} if max_pixels is None else {"max_pixels": int(max_pixels)}
    with _in_memory_file(data) as path:
        try:
            return readers.read_image(path, **kwargs)
        except ImageReadError as err:
            raise ImageReadError(name, err.reason) from None


@contextlib.contextmanager
def _in_memory_file(data: bytes):
    """A path to ``data`` that never touches a disk: an anonymous ``memfd``'s ``/proc`` path."""
    if not hasattr(os, "memfd_create"):
        raise MammojaxError("reading uploads from memory needs Linux (os.memfd_create)")
    fd = os.memfd_create("mammojax-upload", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "wb") as f:
            f.write(data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


SAFE_META_FIELDS = ("format", "laterality", "view", "manufacturer", "pixel_spacing",
                    "for_processing", "original_shape", "bits_stored", "photometric")


def safe_meta(meta) -> dict:
    """The ImageMeta fields the page shows: none of them identifies a patient."""
    out = {}
    for field in SAFE_META_FIELDS:
        value = getattr(meta, field, None)
        out[field] = list(value) if isinstance(value, tuple) else value
    return out


# --- images for the screen -----------------------------------------------------


def _window(image: np.ndarray) -> np.ndarray:
    """A z-scored model input mapped to [0, 1] for display (mean +- 3 SD)."""
    return np.clip((image + 3.0) / 6.0, 0.0, 1.0)


def _to_uint8(unit: np.ndarray) -> np.ndarray:
    return np.round(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)


def _resize(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float (H, W) array to ``shape``."""
    from PIL import Image

    if array.shape == tuple(shape):
        return array.astype(np.float32, copy=False)
    image = Image.fromarray(np.ascontiguousarray(array, np.float32), mode="F")
    return np.asarray(image.resize((shape[1], shape[0]), Image.Resampling.BILINEAR), np.float32)


def _fit_display(pixels: np.ndarray) -> np.ndarray:
    height, width = pixels.shape
    scale = DISPLAY_MAX_SIDE / max(height, width)
    if scale >= 1.0:
        return pixels
    shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    return _resize(pixels, shape)


def overlay_heatmap(gray: np.ndarray, heatmap: np.ndarray, opacity: float) -> np.ndarray:
    """(h, w, 3) uint8: ``heatmap`` in the "jet" colour map blended over a gray image.

    The colour's weight is ``opacity * heatmap``: where the map is 0 the
    mammogram shows through untouched, so the overlay never hides tissue the
    model found unremarkable.
    """
    return blend(np.asarray(gray, np.float32) / 255.0, heatmap, alpha=float(np.clip(opacity, 0.0, 1.0)),
                 weight_by_heat=True)


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 (h, w) or (h, w, 3) array, in memory."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


# --- patients and the report ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PatientSummary:
    """One patient's (one exam's) score over the views uploaded for them."""

    label: str
    image_names: tuple[str, ...]
    score: float
    aggregate: str
    tau: float

    @property
    def suspicious(self) -> bool:
        return is_suspicious(self.score, self.tau)

    @property
    def decision(self) -> str:
        return decision_text(self.score, self.tau)


def summarise_patients(items: Iterable[tuple[str, ImageAnalysis]], *, aggregate: str = "max",
                       tau: float, temperature: float = 1.0, offset: float = 0.0) -> list[PatientSummary]:
    """Groups ``(patient label, analysis)`` pairs into patient-level scores.

    The patient score aggregates her images' lesion margins, the max (default:
    one suspicious view recalls the woman) or the mean, read at the patient
    operating point ``(tau, temperature, offset)``, as ``predict`` and ``eval`` read it
    (:func:`mammojax.evaluation.operating_points.group_probabilities`). An
    analysis without a margin counts as the margin of its probability at T = 1.
    Patients keep the order in which they first appear.
    """
    if aggregate not in PATIENT_AGGREGATES:
        raise MammojaxError(f"unknown patient aggregate {aggregate!r}; valid: {', '.join(PATIENT_AGGREGATES)}")
    items = [(label.strip() or DEFAULT_PATIENT, analysis) for label, analysis in items]
    if not items:
        return []
    labels = [label for label, _ in items]
    margins = [a.margin if a.margin is not None else float(np.log(a.probability) - np.log1p(-a.probability))
               for _, a in items]
    grouped = group_probabilities(margins, labels, OperatingPoint(tau=tau, temperature=temperature, offset=offset),
                                  aggregate)
    return [PatientSummary(label=label, image_names=tuple(a.name for key, a in items if key == label),
                           score=float(score), aggregate=aggregate, tau=tau)
            for label, score in zip(grouped.keys, grouped.scores)]


def build_report(model_facts: dict, items: Sequence[tuple[str, ImageAnalysis]],
                 patients: Sequence[PatientSummary]) -> dict:
    """The downloadable JSON report: scores, decisions and safe metadata only."""
    from importlib import metadata

    try:
        version = metadata.version("mammojax")
    except metadata.PackageNotFoundError:
        version = "unknown"
    images = []
    for label, analysis in items:
        meta = analysis.meta
        images.append({
            "file": analysis.name,
            "patient": label,
            "probability": round(analysis.probability, 6),
            "probability_of": model_facts.get("positive_class"),
            "decision": analysis.decision,
            "suspicious": analysis.suspicious,
            "laterality": meta.get("laterality"),
            "view": meta.get("view"),
            "manufacturer": meta.get("manufacturer"),
            "format": meta.get("format"),
            "original_shape": meta.get("original_shape"),
        })
    return {
        "tool": f"mammojax {version}",
        "disclaimer": DISCLAIMER,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": model_facts,
        "images": images,
        "patients": [{
            "patient": p.label,
            "images": list(p.image_names),
            "aggregate": p.aggregate,
            "score": round(p.score, 6),
            "tau": p.tau,
            "decision": p.decision,
            "suspicious": p.suspicious,
        } for p in patients],
    }


def report_json(report: dict) -> bytes:
    return json.dumps(report, indent=2, ensure_ascii=False).encode("utf-8")


def report_file_name(names: Sequence[str]) -> str:
    stem = Path(names[0]).stem if len(names) == 1 else "mammojax"
    return f"{stem}-report.json"
