"""The scorer: the only place preprocessed films become logits, probabilities and heatmaps.

``predict``, ``explain``, ``eval``, the web page, validation inside training,
cross-validation and ``benchmark`` all call a :class:`Scorer`, so a film gets
one probability whichever door it comes in by.

What a scorer does, in order:

1. **Batches**: films run in fixed-size batches (the last one zero-padded, the
   padding dropped from the outputs) split over every local device along one
   ``data`` mesh axis, so XLA compiles once per scorer and every device works.
2. **Film logits** ``(N, C)``, as the checkpoint's :class:`FilmScoring` says:
   one pass of the model (``whole``), or the mean of the ``top_k`` highest
   lesion margins of patch-sized windows (``windows``, as logits ``[0, s]``).
3. **Flip TTA** (``tta_hflip``): the film and its left-right mirror are scored
   and their *logits* (for windows: each window's margin) are averaged, then
   the temperature and the softmax are applied once. Logits rather than
   probabilities because the temperature and tau are fitted on exactly these
   averaged logits (training validation uses this scorer too), so the
   calibration applies to what is thresholded; averaging probabilities would
   put a second, uncalibrated squashing between the fit and the decision.
4. **Probability** = ``sigmoid((z1 - z0) / T + b)`` (:func:`mammojax.evaluation.calibration.probabilities`,
   applied by the image :class:`OperatingPoint`), T and b the checkpoint's fitted temperature and offset.
5. **Heatmaps** (:meth:`Scorer.explain`) come from the same forward pass as the
   logits they are returned with. Whole films: Grad-CAM (or a sibling method)
   of the lesion class at the checkpoint's layer, upsampled to the model input;
   with flip TTA it is the mean of the film's map and the mirror's map flipped
   back, rescaled to peak 1. Window-scored films: the *window-margin map*, each
   pixel the highest lesion margin of the windows covering it (negative margins
   as 0, peak 1), from the margins that make the film's score; it shows which
   windows raised the score, not gradients inside them.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
from typing import Iterable, Iterator, Sequence

import numpy as np

from mammojax.checkpoint import DEFAULT_CLASS_NAMES, load_checkpoint
from mammojax.data.preprocess import preprocess_image
from mammojax.data.readers import DEFAULT_MAX_PIXELS, read_image
from mammojax.errors import ImageReadError, MammojaxError
from mammojax.evaluation.calibration import POSITIVE_CLASS
from mammojax.evaluation.operating_points import LEVELS, OperatingPoint
from mammojax.film_scoring import FilmScoring, film_scoring_from_meta
from mammojax.scoring import windows as win

WINDOW_BATCH = 64  # windows per device call: patches are small, so batches can be large
_READ_WORKERS = 2  # decoding threads (numpy/PIL release the GIL for most of it)


# --- pure functions of (variables, images), jitted below --------------------------


def _with_mirror(images):
    import jax.numpy as jnp

    return jnp.concatenate([images, jnp.flip(images, axis=2)], axis=0)


def _mean_of_views(values, batch: int):
    """``values`` of ``[films; mirrors]`` -> their mean per film."""
    return (values[:batch] + values[batch:]) / 2


def film_logits(model, variables, images, *, tta_hflip: bool):
    """Float32 logits ``(B, C)`` of whole films (mean with the mirror's under flip TTA)."""
    x = _with_mirror(images) if tta_hflip else images
    logits = model.apply(variables, x, train=False)[0].astype("float32")
    return _mean_of_views(logits, images.shape[0]) if tta_hflip else logits


def film_cam(model, variables, images, *, tta_hflip: bool, method: str, layer: str):
    """``(heatmaps (B, H, W) in [0, 1], logits (B, C))`` of whole films from one forward pass."""
    import jax.numpy as jnp

    # explain.cam imports JAX at the top; this module must stay importable before runtime.setup().
    from mammojax.explain.cam import compute_cam, normalize_maps, upsample_cam

    x = _with_mirror(images) if tta_hflip else images
    target = POSITIVE_CLASS if int(model.num_classes) > 1 else 0
    maps, logits = compute_cam(model, variables, x, method=method, layer=layer, target_class=target)
    maps = upsample_cam(maps, images.shape[1:3])
    logits = logits.astype("float32")
    if tta_hflip:
        batch = images.shape[0]
        logits = _mean_of_views(logits, batch)
        maps = normalize_maps((maps[:batch] + jnp.flip(maps[batch:], axis=2)) / 2)
    return jnp.clip(maps, 0.0, 1.0), logits


def patch_margins(model, variables, patches, *, tta_hflip: bool):
    """Lesion margin (logit 1 - logit 0) of each patch, mean with its mirror's under flip TTA."""
    x = _with_mirror(patches) if tta_hflip else patches
    logits = model.apply(variables, x, train=False)[0].astype("float32")
    margins = logits[:, POSITIVE_CLASS] - logits[:, 0]
    return _mean_of_views(margins, patches.shape[0]) if tta_hflip else margins


@functools.lru_cache(maxsize=64)
def _jitted(fn, model, mesh, **options):
    """One compiled program per (function, model, device mesh, options): shared by every scorer."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    replicated = NamedSharding(mesh, PartitionSpec())
    split = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    return jax.jit(functools.partial(fn, model, **options), in_shardings=(replicated, split),
                   out_shardings=split)


def local_mesh(devices=None):
    """A 1-D ``data`` mesh over ``devices`` (default: this process's devices)."""
    import jax
    from jax.sharding import Mesh

    return Mesh(np.asarray(list(devices or jax.local_devices())), ("data",))


# --- the scorer -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ReadFilm:
    """A decoded and preprocessed file."""

    path: str
    image: np.ndarray  # (H, W, 1) float32 model input
    geometry: object  # mammojax.data.preprocess.Geometry: model input <-> original pixels
    pixels: np.ndarray  # (h, w) float32 original in [0, 1]
    meta: object  # mammojax.data.readers.ImageMeta (safe fields only)


@dataclasses.dataclass(frozen=True)
class PathScore:
    """The result for one file: logits and probability, or the reason it failed."""

    path: str
    probability: float | None
    logits: np.ndarray | None = None
    error: str | None = None
    meta: object = None  # ImageMeta of a read file

    @property
    def ok(self) -> bool:
        return self.error is None


class Scorer:
    """Films -> logits, probabilities and heatmaps for one model (see the module docstring).

    Args:
        model: the Flax module (returns ``(logits, features)``).
        variables: ``{"params", "batch_stats"}``, or a list of them: an ensemble,
            whose film logits (window margins for window scoring) are averaged.
        scoring: how films are scored (:class:`FilmScoring`).
        temperature / offset / tau: the fitted calibration ``sigmoid(margin / T + offset)``
            and the operating point on it (the image level's).
        batch_size: films per compiled call, rounded up to a multiple of the devices.
        devices: where to run (default: every local device).
        preprocess_options: keyword arguments of ``preprocess_image`` (file inputs).
    """

    def __init__(self, model, variables, scoring: FilmScoring, *, temperature: float = 1.0, tau: float = 0.5,
                 offset: float = 0.0,
                 batch_size: int = 8, devices=None, class_names: Sequence[str] = DEFAULT_CLASS_NAMES,
                 preprocess_options: dict | None = None, max_pixels: int | None = None, checkpoint=None,
                 operating_points: dict | None = None):
        import jax
        from jax.sharding import NamedSharding, PartitionSpec

        if batch_size < 1:
            raise MammojaxError(f"batch size must be positive, got {batch_size}")
        self.model = model
        self.scoring = scoring
        self.temperature = float(temperature)
        self.offset = float(offset)
        self.tau = float(tau)
        # Per level (image, breast, patient); the image level is (tau, temperature, offset).
        self.operating_points = {level: OperatingPoint(tau=self.tau, temperature=self.temperature, offset=self.offset)
                                 for level in LEVELS}
        self.operating_points.update({k: v for k, v in (operating_points or {}).items() if k != "image"})
        self.class_names = list(class_names)
        self.preprocess_options = dict(preprocess_options or {})
        self.max_pixels = max_pixels
        self.checkpoint = checkpoint
        self.mesh = local_mesh(devices)
        n = self.mesh.devices.size
        self.batch_size = -(-int(batch_size) // n) * n
        self.window_batch = -(-WINDOW_BATCH // n) * n
        self._split = NamedSharding(self.mesh, PartitionSpec("data"))
        replicated = NamedSharding(self.mesh, PartitionSpec())
        members = variables if isinstance(variables, (list, tuple)) else [variables]
        self._members = [jax.device_put({k: v[k] for k in ("params", "batch_stats") if k in v}, replicated)
                         for v in members]

    @classmethod
    def from_checkpoint(cls, checkpoint, *, batch_size: int = 8, tta_hflip: bool | None = None,
                        temperature: float | None = None, devices=None, max_pixels: int | None = None,
                        cam_method: str | None = None, cam_layer: str | None = None) -> "Scorer":
        """The scorer of a :class:`~mammojax.checkpoint.Checkpoint` (or a path to one).

        ``tta_hflip``, ``cam_*`` and ``temperature`` override what the checkpoint
        stores (None keeps it); tau was fitted with the stored scoring. An overridden
        temperature drops the stored offset, which was fitted together with the stored one.
        """
        if isinstance(checkpoint, (str, os.PathLike)):
            checkpoint = load_checkpoint(checkpoint)
        scoring = film_scoring_from_meta(checkpoint.meta, where=str(checkpoint.path))
        changes = {k: v for k, v in (("tta_hflip", tta_hflip), ("cam_method", cam_method),
                                     ("cam_layer", cam_layer)) if v is not None}
        if changes:
            scoring = scoring.replace(**changes)
        if max_pixels is None:
            max_pixels = (checkpoint.meta.get("config") or {}).get("data", {}).get("max_pixels")
        return cls(checkpoint.model, checkpoint.variables, scoring,
                   temperature=checkpoint.temperature if temperature is None else temperature,
                   offset=checkpoint.offset if temperature is None else 0.0,
                   tau=checkpoint.tau, batch_size=batch_size, devices=devices,
                   class_names=checkpoint.class_names,
                   preprocess_options=checkpoint.preprocess_options, max_pixels=max_pixels,
                   checkpoint=checkpoint, operating_points=checkpoint.operating_points)

    # -- logits and probabilities ----------------------------------------------------

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Film logits ``(N, C)`` float64 for preprocessed films ``(N, H, W, 1)``."""
        images = _as_films(images)
        if not len(images):
            return np.zeros((0, self.num_classes))
        if self.scoring.windows:
            return self._window_logits(images)[0]
        program = _jitted(film_logits, self.model, self.mesh, tta_hflip=self.scoring.tta_hflip)
        total = sum(self._batched(program, member, images, self.batch_size)[0] for member in self._members)
        return total / len(self._members)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Lesion-class probabilities ``(N,)`` of preprocessed films."""
        return self.probability_of(self.logits(images))

    def probability_of(self, logits) -> np.ndarray:
        """Probabilities ``(N,)`` of film logits at this scorer's image operating point (temperature, offset)."""
        return self.operating_points["image"].film_probabilities(logits)

    @property
    def positive_class(self) -> str:
        """What the probability is the probability of: class 1's name (``"abnormal"``, ``"malignant"``...)."""
        return self.class_names[POSITIVE_CLASS]

    def decision(self, probability: float, level: str = "image") -> str:
        """The class name at ``level``'s operating point tau."""
        tau = self.operating_points[level].tau
        return self.class_names[POSITIVE_CLASS] if probability >= tau else self.class_names[0]

    # -- heatmaps ----------------------------------------------------------------

    def explain(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(heatmaps (N, H, W) float32 in [0, 1], film logits (N, C))`` from one pass.

        See the module docstring for what the heatmap is for each scoring kind.
        """
        images = _as_films(images)
        if self.scoring.windows:
            logits, maps = self._window_logits(images, with_maps=True)
            return maps, logits
        if len(self._members) != 1:
            raise MammojaxError("heatmaps of an ensemble are not defined; explain one network")
        program = _jitted(film_cam, self.model, self.mesh, tta_hflip=self.scoring.tta_hflip,
                          method=self.scoring.cam_method, layer=self.scoring.cam_layer)
        if not len(images):
            return np.zeros((0, *images.shape[1:3]), np.float32), np.zeros((0, self.num_classes))
        maps, logits = self._batched(program, self._members[0], images, self.batch_size)
        return maps.astype(np.float32), logits

    # -- the compiled programs, for benchmarks ------------------------------------------

    def programs(self):
        """``(logits_fn, cam_fn)``: the compiled whole-film programs this scorer runs.

        Both take ``(variables, images)`` with ``images`` placed by :meth:`put`;
        ``logits_fn`` returns film logits ``(B, C)``, ``cam_fn`` ``(heatmaps, logits)``.
        ``mammojax benchmark`` times exactly these.
        """
        s = self.scoring
        return (_jitted(film_logits, self.model, self.mesh, tta_hflip=s.tta_hflip),
                _jitted(film_cam, self.model, self.mesh, tta_hflip=s.tta_hflip, method=s.cam_method,
                        layer=s.cam_layer))

    @property
    def variables(self):
        """The (first) network's variables, placed on this scorer's devices."""
        return self._members[0]

    def put(self, images: np.ndarray):
        """``images`` split over this scorer's devices (the batch must divide over them)."""
        import jax

        return jax.device_put(np.asarray(images, np.float32), self._split)

    # -- window scoring ----------------------------------------------------------------

    def _window_logits(self, images: np.ndarray, *, with_maps: bool = False, windows_per_call: int = 1024):
        """Film logits ``[0, s]`` (and margin maps) of window scoring; windows of several films share calls."""
        s = self.scoring
        program = _jitted(patch_margins, self.model, self.mesh, tta_hflip=s.tta_hflip)
        logits = np.zeros((len(images), 2), np.float64)
        maps = np.zeros(images.shape[:3], np.float32) if with_maps else None

        def flush(owners: list[int], positions: list[np.ndarray], patches: list[np.ndarray]) -> None:
            stacked = np.stack(patches).astype(np.float32)
            margins = sum(self._batched(program, m, stacked, self.window_batch)[0] for m in self._members)
            margins = margins / len(self._members)
            owners_array = np.asarray(owners)
            positions_array = np.asarray(positions)
            for n in np.unique(owners_array):
                mine = owners_array == n
                logits[n, 1] = win.top_k_mean(margins[mine], s.window_top_k)
                if with_maps:
                    maps[n] = win.margin_map(images.shape[1:3], positions_array[mine], margins[mine], s.window_size)

        owners, positions, patches = [], [], []
        for n, image in enumerate(images):
            where = win.window_positions(image, s.window_size, s.window_stride)
            if patches and len(patches) + len(where) > windows_per_call:
                flush(owners, positions, patches)
                owners, positions, patches = [], [], []
            patches += [image[t:t + s.window_size, l:l + s.window_size] for t, l in where]
            positions += [tuple(p) for p in where]
            owners += [n] * len(where)
        if patches:
            flush(owners, positions, patches)
        return logits, maps

    def patch_margins(self, patches: np.ndarray) -> np.ndarray:
        """Lesion margins ``(N,)`` of patch-sized inputs (the classifier's own scale), ensemble-averaged."""
        patches = _as_films(patches)
        if not len(patches):
            return np.zeros(0)
        program = _jitted(patch_margins, self.model, self.mesh, tta_hflip=self.scoring.tta_hflip)
        return sum(self._batched(program, m, patches, self.window_batch)[0] for m in self._members) \
            / len(self._members)

    def _batched(self, program, variables, images: np.ndarray, batch_size: int) -> list[np.ndarray]:
        """``program(variables, batch)`` over fixed-size, zero-padded batches; outputs trimmed, float64."""
        import jax

        parts = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            real = len(chunk)
            if real < batch_size:  # pad: same shape, same compiled program
                chunk = np.concatenate([chunk, np.zeros((batch_size - real, *chunk.shape[1:]), chunk.dtype)])
            outputs = program(variables, jax.device_put(chunk, self._split))
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            parts.append([np.asarray(o)[:real] for o in outputs])
        return [np.concatenate(column).astype(np.float64) for column in zip(*parts)]

    # -- files ---------------------------------------------------------------------

    def prepare(self, pixels: np.ndarray, laterality: str | None = None, *, name: str = "image"):
        """``Preprocessed(image, geometry)`` of decoded pixels, as the checkpoint was trained."""
        try:
            return preprocess_image(pixels, laterality=laterality, **self.preprocess_options)
        except MammojaxError:
            raise
        except Exception as err:  # a degenerate image (blank, 1 pixel): report, go on
            raise ImageReadError(name, f"cannot preprocess ({type(err).__name__}: {err})") from None

    def read(self, path: str | os.PathLike, laterality: str | None = None) -> ReadFilm:
        """Decodes and preprocesses one file (``ImageReadError`` when it cannot)."""
        loaded = read_image(path, max_pixels=self.max_pixels or DEFAULT_MAX_PIXELS)
        prepared = self.prepare(loaded.pixels, laterality or loaded.meta.laterality, name=str(path))
        return ReadFilm(path=str(path), image=prepared.image, geometry=prepared.geometry,
                        pixels=loaded.pixels, meta=loaded.meta)

    def score_paths(self, paths: Iterable[str | os.PathLike]) -> Iterator[PathScore]:
        """One :class:`PathScore` per path, in input order, streamed.

        The next batch is decoded by worker threads while this one runs; a file
        that cannot be read yields an error result and the rest go on.
        """
        paths = [str(p) for p in paths]
        chunks = [paths[i:i + self.batch_size] for i in range(0, len(paths), self.batch_size)]
        with concurrent.futures.ThreadPoolExecutor(_READ_WORKERS) as pool:
            pending = [pool.submit(self._read_safely, p) for p in chunks[0]] if chunks else []
            for k, chunk in enumerate(chunks):
                loaded = [f.result() for f in pending]
                pending = [pool.submit(self._read_safely, p) for p in chunks[k + 1]] if k + 1 < len(chunks) else []
                good = [i for i, item in enumerate(loaded) if isinstance(item, ReadFilm)]
                logits = self.logits(np.stack([loaded[i].image for i in good])) if good else np.zeros((0, 2))
                probs = self.probability_of(logits) if good else []
                by_index = {i: (logits[j], float(probs[j])) for j, i in enumerate(good)}
                for i, (path, item) in enumerate(zip(chunk, loaded)):
                    if isinstance(item, ReadFilm):
                        yield PathScore(path=path, probability=by_index[i][1], logits=by_index[i][0], meta=item.meta)
                    else:
                        yield PathScore(path=path, probability=None, error=item)

    def _read_safely(self, path: str):
        try:
            return self.read(path)
        except MammojaxError as err:
            return err.reason if isinstance(err, ImageReadError) else str(err)


def _as_films(images) -> np.ndarray:
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"expected NHWC films, got shape {images.shape}")
    return images
