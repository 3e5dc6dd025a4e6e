"""The library behind ``mammojax explain``: heatmaps for files, outputs, evaluation.

:class:`Explainer` wraps a loaded checkpoint with one compiled Grad-CAM program
(heatmap upsampled to the model input, logits) and one compiled prediction
program (for deletion tests). Both always run on batches of ``batch_size``
images, the last one padded, so XLA compiles once per explainer.
:func:`evaluate_localization` scores heatmaps against annotated lesions.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from mammojax.errors import MammojaxError
from mammojax.explain import localization as loc

POSITIVE_CLASS = 1
OUTPUT_SUFFIXES = {"overlay": "_overlay.png", "panel": "_panel.png", "cam": "_cam.npy"}
JSONL_NAME = "explanations.jsonl"


@dataclasses.dataclass(frozen=True)
class Explanation:
    """One image's heatmap and prediction.

    ``heatmap`` is float32 ``(S, S)`` over the model input, in [0, 1];
    ``original`` the decoded image ``(H, W)`` in [0, 1]; peaks are ``(row, col)``.
    """

    path: str
    probability: float
    decision: str
    heatmap: np.ndarray
    image: np.ndarray
    original: np.ndarray
    geometry: object  # mammojax.data.preprocess.Geometry
    method: str
    layer: str

    @property
    def heatmap_original(self) -> np.ndarray:
        return self.geometry.to_original(self.heatmap)

    @property
    def peak_input(self) -> tuple[int, int]:
        return loc.peak(self.heatmap)

    @property
    def peak_original(self) -> tuple[int, int]:
        return loc.peak(self.heatmap_original)

    def to_json(self) -> dict:
        return {"path": self.path, "probability": round(float(self.probability), 6),
                "decision": self.decision, "method": self.method, "layer": self.layer,
                "peak_original": list(self.peak_original), "peak_input": list(self.peak_input),
                "original_shape": list(self.original.shape), "input_size": int(self.heatmap.shape[0])}


def _padded_batches(fn, images: np.ndarray, batch_size: int) -> list:
    """Runs ``fn`` on fixed-size batches (last one zero-padded), returns trimmed outputs."""
    outputs = []
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start:start + batch_size]
        real = chunk.shape[0]
        if real < batch_size:
            chunk = np.concatenate([chunk, np.zeros((batch_size - real, *chunk.shape[1:]), chunk.dtype)])
        outputs.append([np.asarray(o)[:real] for o in fn(chunk)])
    return [np.concatenate(parts) for parts in zip(*outputs)]


class Explainer:
    """Grad-CAM heatmaps and cancer probabilities from a checkpoint.

    Args:
        checkpoint: a :class:`~mammojax.checkpoint.Checkpoint` or a path to one.
        method / layer: see :func:`mammojax.explain.cam.compute_cam`.
        batch_size: images per compiled call.
    """

    def __init__(self, checkpoint, *, method: str = "gradcam", layer: str = "stage4",
                 batch_size: int = 1, max_pixels: int | None = None):
        import jax

        from mammojax.checkpoint import load_checkpoint
        from mammojax.explain.cam import check_method, make_cam_fn

        if isinstance(checkpoint, (str, os.PathLike)):
            checkpoint = load_checkpoint(checkpoint)
        check_method(method)
        self.checkpoint = checkpoint
        self.method, self.layer = method, layer
        self.batch_size = int(batch_size)
        self.max_pixels = max_pixels
        self.image_size = checkpoint.image_size
        self.temperature = float(checkpoint.temperature)
        self.tau = checkpoint.tau
        self.class_names = list(checkpoint.meta.get("class_names", ["normal", "cancer"]))
        self._variables = jax.device_put(checkpoint.variables)
        cam_fn = make_cam_fn(checkpoint.model, method=method, layer=layer,
                             target_class=POSITIVE_CLASS, size=self.image_size)
        model = checkpoint.model
        self._cam = lambda x: cam_fn(self._variables, x)
        self._logits = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])
        # A patch-recipe model's probability is its window score, as in `predict` (the map stays whole-film).
        from mammojax.inference import window_scorer
        from mammojax.predict import config_tta

        self._windows = window_scorer(checkpoint, tta_hflip=config_tta(checkpoint.meta))

    def _probability(self, logits: np.ndarray) -> np.ndarray:
        z = np.asarray(logits, np.float64) / self.temperature
        z = z - z.max(axis=-1, keepdims=True)
        p = np.exp(z)
        return (p[:, POSITIVE_CLASS] / p.sum(axis=-1)).astype(np.float32)

    def heatmaps(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(heatmaps (N, S, S) float32, probabilities (N,))`` for inputs ``(N, S, S, 1)``."""
        images = np.asarray(images, np.float32)
        heatmaps, logits = _padded_batches(self._cam, images, self.batch_size)
        if self._windows is not None:
            return heatmaps.astype(np.float32), self.probabilities(images)
        return heatmaps.astype(np.float32), self._probability(logits)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Cancer probabilities ``(N,)`` from a plain forward pass."""
        images = np.asarray(images, np.float32)
        if self._windows is not None:
            return self._probability(self._windows(images)[:, 0])
        (logits,) = _padded_batches(lambda x: (self._logits(self._variables, x),), images,
                                    self.batch_size)
        return self._probability(logits)

    def decision(self, probability: float) -> str:
        return self.class_names[POSITIVE_CLASS] if probability >= self.tau else self.class_names[0]

    def preprocess(self, pixels: np.ndarray, laterality: str | None = None):
        from mammojax.data.preprocess import preprocess_image

        return preprocess_image(pixels, laterality=laterality, **self.checkpoint.preprocess_options)

    def explain_pixels(self, pixels: np.ndarray, *, path: str = "", laterality: str | None = None) -> Explanation:
        image, geometry = self.preprocess(pixels, laterality)
        heatmaps, probabilities = self.heatmaps(image[None])
        probability = float(probabilities[0])
        return Explanation(path=str(path), probability=probability, decision=self.decision(probability),
                           heatmap=heatmaps[0], image=image, original=np.asarray(pixels, np.float32),
                           geometry=geometry, method=self.method, layer=self.layer)

    def explain_path(self, path: str | os.PathLike, laterality: str | None = None) -> Explanation:
        """Reads, preprocesses and explains one file (``ImageReadError`` if unreadable)."""
        from mammojax.data.readers import read_image

        kwargs = {} if self.max_pixels is None else {"max_pixels": self.max_pixels}
        loaded = read_image(path, **kwargs)
        return self.explain_pixels(loaded.pixels, path=str(path),
                                   laterality=laterality or loaded.meta.laterality)


# -- outputs ---------------------------------------------------------------------


def output_stems(paths: Sequence[str]) -> list[str]:
    """File stems for outputs; repeated stems (same name, other folder) get ``-2``, ``-3``..."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        stem = Path(path).name.split(".")[0] or "image"
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems


def output_paths(out_dir: str | os.PathLike, stem: str) -> dict[str, Path]:
    return {kind: Path(out_dir) / f"{stem}{suffix}" for kind, suffix in OUTPUT_SUFFIXES.items()}


def check_outputs_free(out_dir: str | os.PathLike, stems: Iterable[str], *, overwrite: bool) -> None:
    """Refuses (MammojaxError) to replace any existing output unless ``overwrite``."""
    if overwrite:
        return
    candidates = [Path(out_dir) / JSONL_NAME]
    for stem in stems:
        candidates += output_paths(out_dir, stem).values()
    existing = [p for p in candidates if p.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise MammojaxError(f"{existing[0]}: already exists{more}; pass --overwrite to replace")


def write_explanation(explanation: Explanation, out_dir: str | os.PathLike, stem: str, *,
                      alpha: float = 0.4, colormap: str = "jet") -> dict:
    """Writes ``<stem>_overlay.png``, ``<stem>_panel.png``, ``<stem>_cam.npy``; returns the JSON line."""
    from mammojax.explain.overlay import overlay_on_original, render_panel, save_png

    paths = output_paths(out_dir, stem)
    overlay = overlay_on_original(explanation.original, explanation.heatmap, explanation.geometry,
                                  alpha=alpha, colormap=colormap)
    save_png(overlay, paths["overlay"])
    panel = render_panel(explanation.original, overlay, explanation.probability, explanation.decision,
                         title=Path(explanation.path).name)
    save_png(panel, paths["panel"])
    np.save(paths["cam"], np.asarray(explanation.heatmap, np.float32), allow_pickle=False)
    return {**explanation.to_json(), "outputs": {k: str(p) for k, p in paths.items()}}


# -- localization ----------------------------------------------------------------


def localizable(record, *, positives_only: bool = True) -> bool:
    """A record the localization metrics can score: located lesions (and positive)."""
    if positives_only and int(record.label) != 1:
        return False
    return any(loc.has_location(lesion) for lesion in record.lesions)


def evaluate_localization(checkpoint, records: Sequence, *, method: str = "gradcam",
                          layer: str = "stage4", tolerance: float = 0.0, fraction: float = 0.05,
                          num_random: int = 1, fill: str = "mean", seed: int = 0,
                          region: str = "breast", positives_only: bool = True,
                          explainer: Explainer | None = None,
                          progress: Callable[[int, int], None] | None = None) -> dict:
    """Pointing game, CAM mass in the lesion and deletion faithfulness over ``records``.

    Args:
        checkpoint: a Checkpoint or a path (ignored when ``explainer`` is given).
        records: :class:`~mammojax.data.records.Record` objects; those without
            a located lesion (or negatives, with ``positives_only``) are skipped.
        tolerance: grow lesions by this many original pixels for the pointing game.
        fraction: share of model-input pixels removed in the deletion test.
        num_random: random same-shaped regions deleted per image (seeded).
        region: ``"breast"`` or ``"image"``: the area the chance level is taken over.

    Returns:
        ``{"summary": {...}, "images": [per-image rows], "skipped": [{"path", "reason"}]}``.
    """
    if region not in ("breast", "image"):
        raise MammojaxError(f"unknown chance region {region!r}; valid: breast, image")
    from mammojax.data.readers import read_image

    explainer = explainer or Explainer(checkpoint, method=method, layer=layer)
    todo = [r for r in records if localizable(r, positives_only=positives_only)]
    skipped = [{"path": r.path, "reason": "no located lesion" if int(r.label) == 1 or not positives_only
                else "negative"} for r in records if not localizable(r, positives_only=positives_only)]
    rows = []
    for index, record in enumerate(todo):
        if progress:
            progress(index, len(todo))
        try:
            loaded = read_image(record.path)
        except MammojaxError as err:
            skipped.append({"path": record.path, "reason": str(err)})
            continue
        explanation = explainer.explain_pixels(loaded.pixels, path=record.path,
                                               laterality=record.laterality or loaded.meta.laterality)
        heatmap_original = explanation.heatmap_original
        shape = heatmap_original.shape
        mask = loc.lesion_mask(record.lesions, shape)
        pointing_mask = loc.lesion_mask(record.lesions, shape, tolerance=tolerance) if tolerance else mask
        area = loc.breast_region(loaded.pixels) if region == "breast" else None
        rng = np.random.default_rng([seed, loc.PURPOSE_DELETION, index])
        batch = loc.deletion_images(explanation.image, explanation.heatmap, fraction=fraction, rng=rng,
                                    num_random=num_random, fill=fill)
        probabilities = explainer.probabilities(batch)
        rows.append({
            "path": record.path,
            "probability": float(probabilities[0]),
            "hit": float(loc.pointing_hit(heatmap_original, pointing_mask)),
            "chance": loc.chance_level(pointing_mask, area),
            "mass_inside": loc.mass_inside(heatmap_original, mask),
            "drop_cam": float(probabilities[0] - probabilities[1]),
            "drop_random": float(probabilities[0] - probabilities[2:].mean()),
            "peak_original": list(loc.peak(heatmap_original)),
        })
    summary = loc.summarize(rows)
    summary.update({"method": explainer.method, "layer": explainer.layer, "tolerance": tolerance,
                    "fraction": fraction, "fill": fill, "region": region, "skipped": len(skipped)})
    return {"summary": summary, "images": rows, "skipped": skipped}


def format_localization_table(summary: dict) -> str:
    """The summary as an aligned two-column text table."""
    labels = [
        ("images", "images scored"),
        ("pointing_game", "pointing game hit rate"),
        ("pointing_chance", "pointing game chance level"),
        ("pointing_lift", "hit rate / chance"),
        ("mass_inside", "CAM mass inside lesion"),
        ("drop_cam", f"P drop, top {summary.get('fraction', 0):.0%} CAM removed"),
        ("drop_random", "P drop, random region removed"),
        ("faithfulness_gap", "faithfulness gap (CAM - random)"),
        ("skipped", "records skipped"),
    ]
    width = max(len(text) for _, text in labels)
    lines = [f"localization ({summary.get('method')}, {summary.get('layer')})"]
    for key, text in labels:
        value = summary.get(key)
        shown = "n/a" if value is None else (str(value) if isinstance(value, int) else f"{value:.4f}")
        lines.append(f"  {text:<{width}}  {shown}")
    return "\n".join(lines)


def dumps_line(obj: dict) -> str:
    """One JSON line; NaN/inf (e.g. the CAM mass of an empty map) become null."""
    return json.dumps(_finite(obj), sort_keys=True, allow_nan=False)


def _finite(value):
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
