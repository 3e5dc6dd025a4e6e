"""A portable model: ``mammojax export`` writes a checkpoint as serialized ``jax.export`` artifacts.

A hospital deploys a frozen artifact, not a Python checkout. ``export`` writes::

    DIR/
      logits.jax    # jax.export: preprocessed films (B, H, W, 1) float32 -> film logits (B, C) float32
      heatmap.jax   # jax.export: films -> (heatmaps (B, H, W) in [0, 1], logits (B, C)), one pass
      export.json   # input shape, preprocessing, scoring, tau / temperature / offset per level, classes, digests

Each artifact is StableHLO with the weights inside, the batch dimension
symbolic (any ``B >= 1``), lowered for CPU and CUDA. It is the scorer's own
function (:func:`mammojax.scoring.film_logits` / :func:`~mammojax.scoring.film_cam`,
with the checkpoint's flip TTA and heatmap layer), so its logits are those of
``predict``. Any process with ``jax`` and ``numpy`` runs it, without mammojax::

    import json, numpy as np
    from jax import export
    meta = json.load(open("DIR/export.json"))
    run = export.deserialize(open("DIR/logits.jax", "rb").read())
    logits = np.asarray(run.call(films))                          # films: preprocessed, (B, H, W, 1)
    margin = (logits[:, 1] - logits[:, 0]) / meta["temperature"] + meta["offset"]
    probability = 1 / (1 + np.exp(-margin))                       # the positive class's
    decision = probability >= meta["tau"]

The film must be preprocessed as ``export.json`` describes (``preprocessing``;
:func:`mammojax.data.preprocess.preprocess_image` is the reference). Window-
scored checkpoints (the patch recipe) are not exported: their score is a
host-side loop over windows, not one function of the film.

``predict --checkpoint DIR`` (and ``--dicom-out``) and the web page (``app
--checkpoint DIR``) run from an export directory too: :func:`load_scorer` gives an :class:`ExportedScorer`, the
:class:`~mammojax.scoring.Scorer` with its compiled programs replaced by the
artifacts, so files are read, preprocessed, thresholded and grouped by the
same code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from mammojax.errors import CheckpointError, MammojaxError
from mammojax.checkpoint import load_checkpoint
from mammojax.checkpoint import read_meta
from mammojax.checkpoint import resolve_checkpoint_dir
from mammojax.evaluation.operating_points import OperatingPoint
from mammojax.film_scoring import film_scoring_from_meta
from mammojax.jsonio import write_json
from mammojax.scoring import Scorer
from mammojax.scoring.scorer import film_cam, film_logits

FORMAT = "mammojax-export"
FORMAT_VERSION = 1
META_FILE = "export.json"
LOGITS_FILE = "logits.jax"
HEATMAP_FILE = "heatmap.jax"
DEFAULT_PLATFORMS = ("cpu", "cuda")
PREPROCESSING_STEPS = (
    "decode to grey in [0, 1], bright = dense (DICOM: modality LUT, VOI LUT or window, MONOCHROME1 inverted)",
    "crop_breast: crop to the breast's bounding box first",
    "orient: flip left-right so the chest wall is on the left",
    "resize keeping the aspect ratio (bilinear) so the image fits image_size, pad to image_size",
    "z-score with the mean and standard deviation of the image's own pixels (not the padding); the padding "
    "takes the value of the image's raw-0 background",
    "layout NHWC float32: (batch, height, width, 1)",
)


def is_export_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / META_FILE).is_file()


def export_checkpoint(checkpoint, out_dir: str | os.PathLike, *, platforms=DEFAULT_PLATFORMS,
                      heatmap: bool = True, overwrite: bool = False) -> Path:
    """Writes the export of ``checkpoint`` (a path or a loaded checkpoint) to ``out_dir``; returns it.

    Written into a temporary sibling and renamed into place: a crash leaves no half export.
    """
    import jax
    from jax import export

    import mammojax  # the package's version; the package imports this module's callers

    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not overwrite:
        raise MammojaxError(f"{out_dir}: already exists; pass --overwrite to replace it")
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = load_checkpoint(checkpoint)
    scoring = film_scoring_from_meta(checkpoint.meta, where=str(checkpoint.path))
    if scoring.windows:
        raise MammojaxError(f"{checkpoint.path}: scores films by windows (the patch recipe), which is a loop "
                            "over windows, not one function of the film; only whole-film checkpoints export")
    height, width = checkpoint.image_shape
    model = checkpoint.model
    variables = jax.device_get({k: checkpoint.variables[k] for k in ("params", "batch_stats")
                                if k in checkpoint.variables})
    (batch,) = export.symbolic_shape("batch")
    films = jax.ShapeDtypeStruct((batch, height, width, 1), np.float32)
    programs = {LOGITS_FILE: jax.jit(lambda x: film_logits(model, variables, x, tta_hflip=scoring.tta_hflip))}
    if heatmap:
        programs[HEATMAP_FILE] = jax.jit(lambda x: film_cam(model, variables, x, tta_hflip=scoring.tta_hflip,
                                                            method=scoring.cam_method, layer=scoring.cam_layer))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        files = {}
        for name, program in programs.items():
            try:
                data = export.export(program, platforms=tuple(platforms))(films).serialize()
            except Exception as err:  # e.g. a platform name jax does not know
                raise MammojaxError(f"cannot export for platforms {', '.join(platforms)} "
                                    f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
            (tmp / name).write_bytes(data)
            files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        meta = dict(checkpoint.meta)
        meta.pop("variables_files", None)  # they describe the orbax files, not these
        points = checkpoint.operating_points
        write_json(tmp / META_FILE, {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "mammojax_version": mammojax.__version__, "jax_version": jax.__version__,
            "platforms": list(platforms), "files": files,
            "model": dict(checkpoint.meta["model"]),
            "input": {"shape": ["batch", height, width, 1], "dtype": "float32", "layout": "NHWC",
                      "batch": "polymorphic: any size >= 1"},
            "outputs": {LOGITS_FILE: "film logits (batch, classes) float32",
                        **({HEATMAP_FILE: "(heatmaps (batch, height, width) float32 in [0, 1], film logits)"}
                           if heatmap else {})},
            "preprocessing": {**checkpoint.preprocess_options, "image_shape": [height, width],
                              "steps": list(PREPROCESSING_STEPS)},
            "scoring": scoring.to_meta(),
            "class_names": checkpoint.class_names, "positive_class": checkpoint.positive_class,
            "probability": "sigmoid((logits[:, 1] - logits[:, 0]) / temperature + offset)",
            "tau": checkpoint.tau, "temperature": checkpoint.temperature, "offset": checkpoint.offset,
            "operating_points": {level: dataclasses.asdict(p) for level, p in points.items()},
            "patient_aggregate": checkpoint.patient_aggregate,
            "checkpoint_meta": meta,
        })
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


@dataclasses.dataclass
class ExportedModel:
    """What an export directory says about its model: the parts of a checkpoint the scorer's users read."""
    path: Path
    meta: dict  # the checkpoint's metadata at export time
    export_meta: dict

    @property
    def model_name(self) -> str:
        return self.meta["model"]["name"]

    @property
    def patient_aggregate(self) -> str:
        return str(self.export_meta.get("patient_aggregate", "max"))

    @property
    def image_shape(self) -> tuple[int, int]:
        height, width = self.export_meta["preprocessing"]["image_shape"]
        return int(height), int(width)

    @property
    def class_names(self) -> list[str]:
        return list(self.export_meta["class_names"])


def read_export(path: str | os.PathLike, *, verify: bool = True) -> ExportedModel:
    """The metadata of an export directory, its artifacts' digests checked (unless not ``verify``)."""
    import json

    path = Path(path)
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path / META_FILE}: unreadable export metadata ({err})") from None
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path / META_FILE}: not a mammojax export of format {FORMAT_VERSION}")
    for name, facts in (meta.get("files", {}) if verify else {}).items():
        data = (path / name).read_bytes() if (path / name).is_file() else b""
        if len(data) != facts["bytes"] or hashlib.sha256(data).hexdigest() != facts["sha256"]:
            raise CheckpointError(f"{path}: {name} is missing, truncated or altered")
    return ExportedModel(path=path, meta=meta["checkpoint_meta"], export_meta=meta)


class ExportedScorer:
    """A :class:`~mammojax.scoring.Scorer` whose programs are an export's artifacts.

    Reading, preprocessing, probabilities, decisions and batching of files
    are the scorer's own methods (bound here, not copied); only
    :meth:`logits` and :meth:`explain` call the artifacts, on the batch as it
    is (the batch dimension is symbolic, so no padding is needed).
    """
    def __init__(self, path: str | os.PathLike, *, batch_size: int = 8, max_pixels: int | None = None):
        from jax import export

        self.checkpoint = read_export(path)
        meta = self.checkpoint.export_meta
        self.scoring = film_scoring_from_meta({"scoring": meta["scoring"]}, where=str(path))
        self.temperature = float(meta["temperature"])
        self.offset = float(meta.get("offset", 0.0))  # exports written before the offset: none
        self.tau = float(meta["tau"])
        self.operating_points = {level: OperatingPoint(**point) for level, point in meta["operating_points"].items()}
        self.class_names = list(meta["class_names"])
        options = dict(meta["preprocessing"])
        self.preprocess_options = {k: options[k] for k in ("image_size", "orient", "crop_breast", "fix_inverted")
                                   if k in options}
        self.max_pixels = max_pixels or (self.checkpoint.meta.get("config") or {}).get("data", {}).get("max_pixels")
        self.batch_size = int(batch_size)
        self.num_classes = int(meta["model"]["num_classes"])
        root = Path(path)
        self._logits = export.deserialize(bytearray((root / LOGITS_FILE).read_bytes()))
        heatmap = root / HEATMAP_FILE
        self._heatmap = export.deserialize(bytearray(heatmap.read_bytes())) if heatmap.is_file() else None

    def logits(self, images: np.ndarray) -> np.ndarray:
        images = _films(images)
        if not len(images):
            return np.zeros((0, self.num_classes))
        return np.asarray(self._logits.call(images), np.float64)

    def explain(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._heatmap is None:
            raise MammojaxError(f"{self.checkpoint.path}: exported without heatmaps (export without --no-heatmap)")
        images = _films(images)
        if not len(images):
            return np.zeros((0, *images.shape[1:3]), np.float32), np.zeros((0, self.num_classes))
        maps, logits = self._heatmap.call(images)
        return np.asarray(maps, np.float32), np.asarray(logits, np.float64)

    # The scorer's own file handling and thresholds, unchanged.

    probabilities = Scorer.probabilities
    probability_of = Scorer.probability_of
    positive_class = Scorer.positive_class
    decision = Scorer.decision
    prepare = Scorer.prepare
    read = Scorer.read
    score_paths = Scorer.score_paths
    _read_safely = Scorer._read_safely


def _films(images) -> np.ndarray:
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"expected NHWC films, got shape {images.shape}")
    return images


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """An export directory as it is; else the checkpoint directory of a checkpoint or workdir."""
    return Path(path) if is_export_dir(path) else resolve_checkpoint_dir(path)


def read_model_meta(path: str | os.PathLike) -> dict:
    """The checkpoint metadata of a checkpoint, a workdir or an export (JSON only: a cheap check)."""
    return read_export(path, verify=False).meta if is_export_dir(path) else read_meta(path)


def load_scorer(path: str | os.PathLike, *, batch_size: int = 8, tta_hflip: bool | None = None):
    """The scorer of a checkpoint, a training workdir or an export directory."""
    if is_export_dir(path):
        if tta_hflip is not None:
            raise MammojaxError(f"{path}: an exported model's flip TTA is fixed at export time; drop --tta-hflip")
        return ExportedScorer(path, batch_size=batch_size)

    return Scorer.from_checkpoint(path, batch_size=batch_size, tta_hflip=tta_hflip)
