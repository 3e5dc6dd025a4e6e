"""The library behind ``mammojax explain``: heatmaps for files, outputs, evaluation.

:class:`Explainer` pairs the heatmaps and probabilities of
:class:`mammojax.scoring.Scorer` with the decoded images for the output files;
:func:`evaluate_localization` scores heatmaps against annotated lesions.

Heatmaps are *shown* over the breast only: the raw map (saved as
``<stem>_cam.npy``, model-input resolution) is multiplied by the breast mask of
the same model input (:func:`mammojax.data.preprocess.breast_mask`: never the
padding, never the background or a film label) before it is drawn, located
(``peak_*``) or scored against lesions. Each ``explanations.jsonl`` line says
so with ``"heatmap_masked": true``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from mammojax.data.preprocess import breast_mask
from mammojax.data.readers import read_image
from mammojax.errors import MammojaxError
from mammojax.explain import localization as loc
from mammojax.explain.overlay import blend, on_breast, render_panel, save_png
from mammojax.jsonio import dumps
from mammojax.scoring import Scorer

OUTPUT_SUFFIXES = {"overlay": "_overlay.png", "panel": "_panel.png", "cam": "_cam.npy"}
JSONL_NAME = "explanations.jsonl"


@dataclasses.dataclass(frozen=True)
class Explanation:
    """One image's heatmap and prediction.

    ``heatmap`` is the raw map, float32 ``(S, S)`` over the model input, in
    [0, 1]; ``breast`` the model input's breast mask ``(S, S)``; ``original``
    the decoded image ``(H, W)`` in [0, 1]; peaks are ``(row, col)`` of the
    map restricted to the breast.
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
    breast: np.ndarray  # (S, S) bool
    tau: float
    positive_class: str  # what the probability is the probability of (the checkpoint's class 1)

    @property
    def heatmap_shown(self) -> np.ndarray:
        """The heatmap over the breast only, peak 1 there (:func:`~mammojax.explain.overlay.on_breast`)."""
        return on_breast(self.heatmap, self.breast)

    @property
    def heatmap_original(self) -> np.ndarray:
        """:attr:`heatmap_shown` on the original image's grid."""
        return self.geometry.to_original(self.heatmap_shown)

    @property
    def breast_original(self) -> np.ndarray:
        """The breast mask on the original image's grid (bool ``(H, W)``)."""
        return self.geometry.to_original(self.breast.astype(np.float32)) > 0.5

    @property
    def peak_input(self) -> tuple[int, int]:
        return loc.peak(self.heatmap_shown)

    @property
    def peak_original(self) -> tuple[int, int]:
        return loc.peak(self.heatmap_original)

    def to_json(self) -> dict:
        return {"path": self.path, "probability": round(float(self.probability), 6),
                "probability_of": self.positive_class, "tau": round(float(self.tau), 6),
                "decision": self.decision, "method": self.method, "layer": self.layer,
                "heatmap_masked": True, "peak_original": list(self.peak_original),
                "peak_input": list(self.peak_input), "original_shape": list(self.original.shape),
                "input_shape": list(self.heatmap.shape[:2])}


class Explainer:
    """Heatmaps and probabilities of files for ``explain`` and the quickstart.

    A thin adapter over :class:`mammojax.scoring.Scorer`, which computes every
    heatmap and probability (so ``explain`` gives the same probability as
    ``predict`` and ``eval``); this class pairs them with the decoded image
    and its geometry for the output files.

    Args:
        checkpoint: a :class:`~mammojax.checkpoint.Checkpoint` or a path to one.
        method / layer: the heatmap (None: the checkpoint's default, see
            :class:`mammojax.scoring.FilmScoring`).
        batch_size: images per compiled call.
    """

    def __init__(self, checkpoint, *, method: str | None = None, layer: str | None = None,
                 batch_size: int = 1, max_pixels: int | None = None):
        from mammojax.explain.cam import check_method  # imports JAX at the top: this module stays light

        if method is not None:
            check_method(method)
        self._attach(Scorer.from_checkpoint(checkpoint, batch_size=batch_size, max_pixels=max_pixels,
                                            cam_method=method, cam_layer=layer))

    @classmethod
    def from_scorer(cls, scorer) -> "Explainer":
        """An explainer over an existing scorer (``predict --dicom-out``: the scorer of the run,
        a checkpoint's or an exported model's), with its heatmap method and layer."""
        explainer = cls.__new__(cls)
        explainer._attach(scorer)
        return explainer

    def _attach(self, scorer) -> None:
        self.scorer = scorer
        self.checkpoint = self.scorer.checkpoint
        self.method, self.layer = self.scorer.scoring.cam_method, self.scorer.scoring.cam_layer
        if self.scorer.scoring.windows:
            self.method, self.layer = "window-margins", f"{self.scorer.scoring.window_size} px windows"
        self.tau = self.scorer.tau
        self.class_names = self.scorer.class_names

    def heatmaps(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(heatmaps (N, H, W) float32, probabilities (N,))`` for inputs ``(N, H, W, 1)``."""
        heatmaps, logits = self.scorer.explain(images)
        return heatmaps, self.scorer.probability_of(logits)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Probabilities ``(N,)`` of preprocessed images (the deletion test's forward passes)."""
        return self.scorer.probabilities(images)

    def decision(self, probability: float) -> str:
        return self.scorer.decision(probability)

    def explain_pixels(self, pixels: np.ndarray, *, path: str = "", laterality: str | None = None) -> Explanation:
        prepared = self.scorer.prepare(pixels, laterality, name=str(path) or "image")
        return self._explanation(str(path), prepared.image, prepared.geometry, pixels)

    def explain_path(self, path: str | os.PathLike, laterality: str | None = None) -> Explanation:
        """Reads, preprocesses and explains one file (``ImageReadError`` if unreadable)."""
        film = self.scorer.read(path, laterality)
        return self._explanation(film.path, film.image, film.geometry, film.pixels)

    def _explanation(self, path: str, image: np.ndarray, geometry, pixels: np.ndarray) -> Explanation:
        heatmaps, probabilities = self.heatmaps(image[None])
        probability = float(probabilities[0])
        return Explanation(path=path, probability=probability, decision=self.decision(probability),
                           heatmap=heatmaps[0], image=image, original=np.asarray(pixels, np.float32),
                           geometry=geometry, method=self.method, layer=self.layer,
                           breast=breast_mask(image, geometry), tau=self.tau,
                           positive_class=self.scorer.positive_class)


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
                      alpha: float = 0.4, colormap: str = "jet", lesions: Sequence = ()) -> dict:
    """Writes ``<stem>_overlay.png``, ``<stem>_panel.png``, ``<stem>_cam.npy``; returns the JSON line.

    The overlay and the panel show the heatmap over the breast only; the
    ``.npy`` holds the raw map. ``lesions`` (the record's, when known) are
    outlined on the panel.
    """
    paths = output_paths(out_dir, stem)
    overlay = blend(explanation.original, explanation.heatmap_original, alpha=alpha, colormap=colormap,
                    mask=explanation.breast_original)
    save_png(overlay, paths["overlay"])
    located = [lesion for lesion in lesions if loc.has_location(lesion)]
    outline = loc.lesion_mask(located, explanation.original.shape) if located else None
    panel = render_panel(explanation.original, overlay, explanation.probability, explanation.decision,
                         tau=explanation.tau, positive_class=explanation.positive_class,
                         heatmap_name=f"{explanation.method}, {explanation.layer}",
                         title=Path(explanation.path).name, lesion_mask=outline, colormap=colormap)
    save_png(panel, paths["panel"])
    np.save(paths["cam"], np.asarray(explanation.heatmap, np.float32), allow_pickle=False)
    return {**explanation.to_json(), "outputs": {k: str(p) for k, p in paths.items()}}


# -- localization ----------------------------------------------------------------

# Why a record has no localization row: every skipped record gets one of these.
SKIP_NEGATIVE = "negative (no lesion to point at)"
SKIP_UNLOCATED = "positive without a located lesion"
SKIP_UNREADABLE = "unreadable"
SKIP_REASONS = (SKIP_NEGATIVE, SKIP_UNLOCATED, SKIP_UNREADABLE)


def localizable(record, *, positives_only: bool = True) -> bool:
    """A record the localization metrics can score: located lesions (and positive)."""
    if positives_only and int(record.label) != 1:
        return False
    return any(loc.has_location(lesion) for lesion in record.lesions)


def evaluate_localization(checkpoint, records: Sequence, *, method: str | None = None,
                          layer: str | None = None, tolerance: float = 0.0, fraction: float = 0.05,
                          num_random: int = 1, fill: str = "mean", seed: int = 0,
                          region: str = "breast", positives_only: bool = True,
                          explainer: Explainer | None = None,
                          progress: Callable[[int, int], None] | None = None) -> dict:
    """Heatmap mass in the lesion, pointing game and deletion faithfulness over ``records``.

    Both localization measures are paired with what a heatmap that knows
    nothing would score, over the same breast: a uniform map puts the
    lesion's share of the breast area inside the lesion (``lesion_area_share``),
    and a peak placed at random hits the lesion that often (``pointing_chance``,
    the same share of the lesion grown by ``tolerance``).

    Args:
        checkpoint: a Checkpoint or a path (ignored when ``explainer`` is given).
        records: :class:`~mammojax.data.records.Record` objects; those without
            a located lesion (or negatives, with ``positives_only``) are skipped.
        tolerance: grow lesions by this many original pixels for the pointing game.
        fraction: share of model-input pixels removed in the deletion test.
        num_random: random same-shaped regions deleted per image (seeded).
        region: ``"breast"`` or ``"image"``: the area the chance level is taken over.

    Returns:
        ``{"summary": {...}, "images": [per-image rows], "skipped": [{"path", "reason"[, "error"]}]}``;
        every skipped record's reason is one of :data:`SKIP_REASONS`, counted in
        ``summary["skipped_reasons"]``.
    """
    if region not in ("breast", "image"):
        raise MammojaxError(f"unknown chance region {region!r}; valid: breast, image")
    explainer = explainer or Explainer(checkpoint, method=method, layer=layer)
    todo = [r for r in records if localizable(r, positives_only=positives_only)]
    skipped = [{"path": r.path, "reason": SKIP_UNLOCATED if int(r.label) == 1 or not positives_only
                else SKIP_NEGATIVE} for r in records if not localizable(r, positives_only=positives_only)]
    rows = []
    for index, record in enumerate(todo):
        if progress:
            progress(index, len(todo))
        try:
            loaded = read_image(record.path)
            explanation = explainer.explain_pixels(loaded.pixels, path=record.path,
                                                   laterality=record.laterality or loaded.meta.laterality)
        except MammojaxError as err:
            skipped.append({"path": record.path, "reason": SKIP_UNREADABLE, "error": str(err)})
            continue
        heatmap_original = explanation.heatmap_original  # over the breast only, as shown
        shape = heatmap_original.shape
        mask = loc.lesion_mask(record.lesions, shape)
        pointing_mask = loc.lesion_mask(record.lesions, shape, tolerance=tolerance) if tolerance else mask
        area = explanation.breast_original if region == "breast" else None
        rng = np.random.default_rng([seed, loc.PURPOSE_DELETION, index])
        batch = loc.deletion_images(explanation.image, explanation.heatmap_shown, fraction=fraction, rng=rng,
                                    num_random=num_random, fill=fill)
        probabilities = explainer.probabilities(batch)
        rows.append({
            "path": record.path,
            "probability": float(probabilities[0]),
            "hit": float(loc.pointing_hit(heatmap_original, pointing_mask)),
            "chance": loc.chance_level(pointing_mask, area),
            "mass_inside": loc.mass_inside(heatmap_original, mask),
            "lesion_share": loc.chance_level(mask, area),
            "drop_cam": float(probabilities[0] - probabilities[1]),
            "drop_random": float(probabilities[0] - probabilities[2:].mean()),
            "peak_original": list(loc.peak(heatmap_original)),
        })
    summary = loc.summarize(rows)
    counts = {reason: sum(s["reason"] == reason for s in skipped) for reason in SKIP_REASONS}
    summary.update({"method": explainer.method, "layer": explainer.layer, "tolerance": tolerance,
                    "fraction": fraction, "fill": fill, "region": region, "records": len(records),
                    "skipped": len(skipped), "skipped_reasons": counts})
    return {"summary": summary, "images": rows, "skipped": skipped}


def format_localization_table(summary: dict) -> str:
    """The summary as plain text: each measure beside what a heatmap that knows nothing scores.

    The mass inside the lesion comes first: it weighs the whole map, where the
    pointing game looks at one pixel. Each is followed by its uniform/chance
    level and the ratio (1.0x = no better than knowing nothing).
    """
    def number(key):
        value = summary.get(key)
        return "n/a" if value is None else f"{value:.4f}"

    def ratio(top, bottom):
        a, b = summary.get(top), summary.get(bottom)
        return f"{a / b:.2f}x" if a is not None and b else "n/a"

    where = "the breast" if summary.get("region", "breast") == "breast" else "the image"
    skipped = summary.get("skipped_reasons") or {}
    skipped_text = ", ".join(f"{n} {reason}" for reason, n in skipped.items()) or "none"
    grown = f" grown by {summary['tolerance']:g} px" if summary.get("tolerance") else ""
    rows = [
        ("records", (f"{summary.get('records', 'n/a')}: {summary.get('images', 0)} scored "
                     f"(positive, with a located lesion), {summary.get('skipped', 0)} skipped")),
        ("skipped because", skipped_text),
        ("heatmap mass inside the lesion", number("mass_inside")),
        (f"  a uniform map over {where}", f"{number('lesion_area_share')}  (the lesion's share of {where})"),
        ("  mass / uniform", ratio("mass_inside", "lesion_area_share")),  # = summary["mass_lift"]
        (f"pointing game: peak in the lesion{grown}", number("pointing_game")),
        ("  a peak placed at random", number("pointing_chance")),
        ("  hit rate / chance", ratio("pointing_game", "pointing_chance")),
        (f"P drop, top {summary.get('fraction', 0):.0%} of the map removed", number("drop_cam")),
        ("P drop, a random region as large", number("drop_random")),
        ("faithfulness gap (map - random)", number("faithfulness_gap")),
    ]
    width = max(len(text) for text, _ in rows)
    lines = [(f"localization ({summary.get('method')}, {summary.get('layer')}), heatmaps over {where} only; "
              "1.00x = no better than a map that knows nothing")]
    lines += [f"  {text:<{width}}  {value}" for text, value in rows]
    return "\n".join(lines)


def dumps_line(obj: dict) -> str:
    """One JSON line; NaN/inf (e.g. the CAM mass of an empty map) become null."""
    return dumps(obj, sort_keys=True)
