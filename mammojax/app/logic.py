"""Everything the web page computes, as plain functions a test can call.

The page (``page.py``) only lays out what these functions return. The flow for
one uploaded file is::

    bytes --read_upload--> LoadedImage --preprocess_image--> model input
          --one jitted pass--> logits (probability) + Grad-CAM map
          --geometry.to_original--> heatmap on the original image grid

Uploads are processed from memory and never written to disk: a mammogram is
health data, and a temporary file is one more copy to leak. Only the safe
metadata fields of :class:`~mammojax.data.readers.ImageMeta` (laterality, view,
manufacturer, ...) reach the page or the report; DICOM patient identifiers are
never read into anything this module returns.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from mammojax.errors import ImageReadError, MammojaxError

DISCLAIMER = ("Research tool, not a medical device. Its output is not a diagnosis and must "
              "not guide patient care; every image needs a qualified reader.")
SUSPICIOUS_TEXT = "Suspicious — recall"
NEGATIVE_TEXT = "No suspicious finding"
ACCEPTED_TYPES = ("png", "jpg", "jpeg", "tif", "tiff", "pgm", "pnm", "dcm", "dicom")
# The page shows images at most this many pixels on their long side: enough
# for a screen, and it keeps the overlay PNG small for a full-field mammogram.
DISPLAY_MAX_SIDE = 1024
DEFAULT_PATIENT = "Patient 1"
PATIENT_AGGREGATES = ("max", "mean")

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
    """A loaded checkpoint plus the one jitted function the page calls."""

    checkpoint: Any  # mammojax.checkpoint.Checkpoint
    cam_method: str
    cam_layer: str
    # (1, S, S, 1) float32 -> (probability (), heatmap (S, S) in [0, 1])
    score_and_cam: Callable[[np.ndarray], tuple[Any, Any]]

    @property
    def tau(self) -> float:
        return self.checkpoint.tau

    @property
    def image_size(self) -> int:
        return self.checkpoint.image_size

    @property
    def patient_aggregate(self) -> str:
        aggregate = self.checkpoint.meta.get("patient_aggregate", "max")
        return aggregate if aggregate in PATIENT_AGGREGATES else "max"

    def describe(self) -> dict:
        """Facts about the model for the page's sidebar and the report."""
        meta = self.checkpoint.meta
        return {
            "model": self.checkpoint.model_name,
            "checkpoint": self.checkpoint.path.name,
            "image_size": self.image_size,
            "tau": self.tau,
            "temperature": self.checkpoint.temperature,
            "threshold_policy": meta.get("threshold_policy"),
            "trained_on": meta.get("data", {}).get("dataset"),
            "cam_method": self.cam_method,
            "cam_layer": self.cam_layer,
            "patient_aggregate": self.patient_aggregate,
        }


def checkpoint_problem(path: str | os.PathLike | None) -> str | None:
    """Why ``path`` cannot serve as the page's checkpoint, or None if it looks usable.

    Only the metadata is read (no JAX), so the page and the CLI can check a
    path cheaply before loading anything.
    """
    from mammojax.checkpoint import read_meta

    if not path:
        return "no checkpoint given (start the page with `mammojax app --checkpoint DIR`)"
    try:
        read_meta(path)
    except MammojaxError as err:
        return str(err)
    return None


def load_app_model(path: str | os.PathLike, *, warm_up: bool = True) -> AppModel:
    """Loads a checkpoint and compiles the scoring + Grad-CAM function.

    ``warm_up`` compiles it now (a few seconds, once per server) so the first
    upload is answered at full speed.
    """
    from mammojax import runtime

    runtime.setup()
    import functools

    import jax

    from mammojax.checkpoint import load_checkpoint
    from mammojax.inference import probabilities_from_logits, window_scorer
    from mammojax.predict import config_tta

    checkpoint = load_checkpoint(path)
    explain = checkpoint.meta.get("config", {}).get("explain", {})
    method = explain.get("method", "gradcam")
    layer = explain.get("layer", "stage4")
    # Same probability as `mammojax predict`: the evaluation config decides
    # whether it averages over the image and its mirror.
    tta_hflip = config_tta(checkpoint.meta)
    fn = jax.jit(functools.partial(_score_and_cam, checkpoint.model, method=method, layer=layer,
                                   temperature=checkpoint.temperature, tta_hflip=tta_hflip))
    variables = checkpoint.variables
    windows = window_scorer(checkpoint, tta_hflip=tta_hflip)

    def score_and_cam(images: np.ndarray):
        probability, heatmap = fn(variables, images)
        if windows is not None:  # a patch-recipe model: the film's score is its windows' (as `predict`)
            probability = probabilities_from_logits(windows(np.asarray(images)), checkpoint.temperature)[0]
        return probability, heatmap

    model = AppModel(checkpoint=checkpoint, cam_method=method, cam_layer=layer,
                     score_and_cam=score_and_cam)
    if warm_up:
        size = checkpoint.image_size
        jax.block_until_ready(score_and_cam(np.zeros((1, size, size, 1), np.float32)))
    return model


def _score_and_cam(model, variables, images, *, method: str, layer: str, temperature: float,
                   tta_hflip: bool):
    """Cancer probability and Grad-CAM map of one image.

    The map and the probability come from the same forward pass; flip
    test-time augmentation adds one more pass for the probability only.
    """
    import jax
    import jax.numpy as jnp

    from mammojax.explain.cam import compute_cam, upsample_cam

    num_classes = int(model.num_classes)
    target = 1 if num_classes >= 2 else 0  # class 1 is "cancer"; a 1-logit model scores it directly
    heatmaps, logits = compute_cam(model, variables, images, method=method, layer=layer,
                                   target_class=target)
    probability = probability_from_logits(logits, temperature)
    if tta_hflip:
        mirrored = model.apply(variables, jnp.flip(images, axis=2), train=False)[0]
        probability = 0.5 * (probability + probability_from_logits(mirrored, temperature))
    heatmap = upsample_cam(heatmaps, images.shape[1:3])
    return probability[0], jnp.clip(heatmap[0], 0.0, 1.0)


def probability_from_logits(logits, temperature: float):
    """Temperature-scaled probability of class 1 (cancer), as the checkpoint was calibrated."""
    import jax

    scaled = logits.astype("float32") / temperature
    if scaled.shape[-1] == 1:
        return jax.nn.sigmoid(scaled[..., 0])
    return jax.nn.softmax(scaled, axis=-1)[..., 1]


# --- one uploaded file -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImageAnalysis:
    """The page's result for one uploaded image."""

    name: str  # the uploaded file's name, as the user chose it
    probability: float
    tau: float
    model_input: np.ndarray  # (S, S) uint8: what the network saw
    display_image: np.ndarray  # (h, w) uint8: the original, at most DISPLAY_MAX_SIDE
    heatmap: np.ndarray  # (h, w) float32 in [0, 1], on display_image's grid
    meta: dict  # safe fields only, see safe_meta()

    @property
    def suspicious(self) -> bool:
        return is_suspicious(self.probability, self.tau)

    @property
    def decision(self) -> str:
        return decision_text(self.probability, self.tau)

    def overlay(self, opacity: float) -> np.ndarray:
        """(h, w, 3) uint8: the heatmap over the original image."""
        return overlay_heatmap(self.display_image, self.heatmap, opacity)


def is_suspicious(probability: float, tau: float) -> bool:
    """The checkpoint's operating point: recall when the probability reaches tau."""
    return float(probability) >= float(tau)


def decision_text(probability: float, tau: float) -> str:
    return SUSPICIOUS_TEXT if is_suspicious(probability, tau) else NEGATIVE_TEXT


def analyse_upload(model: AppModel, name: str, data: bytes, *,
                   max_pixels: int | None = None) -> ImageAnalysis:
    """Scores one uploaded file and explains the score.

    Raises:
        ImageReadError: the bytes are not a readable image (named by ``name``).
    """
    from mammojax.data.preprocess import preprocess_image

    if max_pixels is None:
        max_pixels = model.checkpoint.meta.get("config", {}).get("data", {}).get("max_pixels")
    loaded = read_upload(name, data, max_pixels=max_pixels)
    options = dict(model.checkpoint.preprocess_options)
    try:
        prepared = preprocess_image(loaded.pixels, laterality=loaded.meta.laterality, **options)
    except ValueError as err:  # a degenerate image (e.g. one pixel): report it, keep serving
        raise ImageReadError(name, f"cannot preprocess ({err})") from None
    batch = np.asarray(prepared.image, np.float32)[None]
    probability, heatmap = model.score_and_cam(batch)
    heatmap_original = np.asarray(prepared.geometry.to_original(np.asarray(heatmap)), np.float32)
    display = _fit_display(loaded.pixels)
    return ImageAnalysis(
        name=name,
        probability=float(probability),
        tau=model.tau,
        model_input=_to_uint8(_window(np.asarray(prepared.image)[..., 0])),
        display_image=_to_uint8(display),
        heatmap=np.clip(_resize(heatmap_original, display.shape), 0.0, 1.0),
        meta=safe_meta(loaded.meta),
    )


def read_upload(name: str, data: bytes, *, max_pixels: int | None = None):
    """Decodes uploaded bytes with the same reader as every other command.

    The bytes stay in memory. ``mammojax.data.readers`` reads from paths, so on
    Linux the bytes are exposed through an anonymous in-memory file
    (``memfd``, never on a disk) whose ``/proc`` path the reader opens. Errors
    are re-raised naming the upload, not that path.
    """
    from mammojax.data import readers

    if not data:
        raise ImageReadError(name, "empty file")
    kwargs = {} if max_pixels is None else {"max_pixels": int(max_pixels)}
    if not hasattr(os, "memfd_create"):
        raise MammojaxError("reading uploads from memory needs Linux (os.memfd_create)")
    fd = os.memfd_create("mammojax-upload", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "wb") as f:
            f.write(data)
        try:
            return readers.read_image(f"/proc/self/fd/{fd}", **kwargs)
        except ImageReadError as err:
            raise ImageReadError(name, err.reason) from None
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
    from mammojax.explain.overlay import blend

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
                       tau: float) -> list[PatientSummary]:
    """Groups ``(patient label, analysis)`` pairs into patient-level scores.

    The patient score is the max (default: one suspicious view recalls the
    woman) or the mean of her image probabilities; patients keep the order in
    which they first appear.
    """
    if aggregate not in PATIENT_AGGREGATES:
        raise MammojaxError(f"unknown patient aggregate {aggregate!r}; valid: {', '.join(PATIENT_AGGREGATES)}")
    groups: dict[str, list[ImageAnalysis]] = {}
    for label, analysis in items:
        groups.setdefault(label.strip() or DEFAULT_PATIENT, []).append(analysis)
    summaries = []
    for label, analyses in groups.items():
        probabilities = [a.probability for a in analyses]
        score = max(probabilities) if aggregate == "max" else float(np.mean(probabilities))
        summaries.append(PatientSummary(label=label, image_names=tuple(a.name for a in analyses),
                                        score=float(score), aggregate=aggregate, tau=tau))
    return summaries


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
