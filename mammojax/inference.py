"""Batched, jitted prediction from a loaded checkpoint.

:class:`Predictor` wraps one :class:`~mammojax.checkpoint.Checkpoint`. Every
call runs the model on batches of exactly ``batch_size`` images (the last one
padded), so XLA compiles once per predictor, not once per batch length. The
checkpoint's temperature divides the logits before the softmax; with
``tta_hflip`` the cancer probability is the mean over the image and its
left-right mirror (a breast seen from the other side is still the same breast).
A checkpoint of the patch recipe (``scoring`` in its metadata, see
:mod:`mammojax.recipes.patch_train`) scores a film by patch-sized windows
instead of one pass over the whole film, as its tau and temperature were fitted.

Decoding files (:meth:`Predictor.predict_paths`) overlaps with the model: the
next batch is read by worker threads while the current one runs.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from typing import Iterable, Iterator

import numpy as np

from mammojax.errors import ImageReadError, MammojaxError

POSITIVE_CLASS = 1
_READ_WORKERS = 2  # decoding threads (numpy/PIL release the GIL for most of it)


@dataclasses.dataclass(frozen=True)
class PathPrediction:
    """The result for one file: a probability, or the reason it failed."""

    path: str
    probability: float | None
    error: str | None = None
    laterality: str | None = None
    view: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _forward(model, variables, images, temperature, tta_hflip: bool):
    """Per-view logits ``(B, V, C)`` and the temperature-scaled probability ``(B,)``."""
    import jax
    import jax.numpy as jnp

    views = [images, jnp.flip(images, axis=2)] if tta_hflip else [images]
    logits = jnp.stack([model.apply(variables, v, train=False)[0] for v in views], axis=1)
    logits = logits.astype(jnp.float32)
    probs = jax.nn.softmax(logits / temperature, axis=-1)[..., POSITIVE_CLASS]
    return logits, probs.mean(axis=1)


def window_scorer(checkpoint, *, tta_hflip: bool):
    """``images (N, S, S, 1) -> logits (N, 1, 2)`` for a window-scored checkpoint, else None.

    The logits are ``[0, s]``, ``s`` the film's window score (mirror-averaged
    inside when ``tta_hflip``), so temperature and softmax apply as to any logits.
    """
    scoring = checkpoint.meta.get("scoring")
    if not scoring:
        return None
    if scoring.get("kind") != "windows":
        from mammojax.errors import CheckpointError

        raise CheckpointError(f"{checkpoint.path}: unknown film scoring {scoring.get('kind')!r} "
                              "(written by a newer mammojax?)")
    from mammojax.recipes.patches import score_images_by_windows

    def score(images: np.ndarray) -> np.ndarray:
        logits = score_images_by_windows(checkpoint.model, checkpoint.variables, images,
                                         size=int(scoring["size"]), stride=int(scoring["stride"]),
                                         top_k=int(scoring["top_k"]), tta_hflip=tta_hflip)
        return logits[:, None, :].astype(np.float32)

    return score


def probabilities_from_logits(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Cancer probability ``(N,)``, float64, from per-view logits ``(N, V, C)``, mean over views."""
    from mammojax.evaluation.calibration import apply_temperature

    return apply_temperature(logits, temperature)[..., POSITIVE_CLASS].mean(axis=1)


class Predictor:
    """Cancer probabilities from a checkpoint, one compiled program per predictor.

    Args:
        checkpoint: a loaded :class:`~mammojax.checkpoint.Checkpoint`.
        batch_size: images per model call (inputs are padded up to it).
        tta_hflip: average the probability over the image and its mirror.
        temperature: overrides the checkpoint's temperature (1.0 = raw softmax).
    """

    def __init__(self, checkpoint, *, batch_size: int = 8, tta_hflip: bool = False,
                 temperature: float | None = None, max_pixels: int | None = None):
        import functools

        import jax

        if batch_size < 1:
            raise MammojaxError(f"batch size must be positive, got {batch_size}")
        self.checkpoint = checkpoint
        self.batch_size = int(batch_size)
        self.tta_hflip = bool(tta_hflip)
        self.temperature = float(checkpoint.temperature if temperature is None else temperature)
        self.tau = checkpoint.tau
        self.image_size = checkpoint.image_size
        self.max_pixels = max_pixels
        self._variables = jax.device_put(checkpoint.variables)
        self._jitted = jax.jit(functools.partial(_forward, checkpoint.model, tta_hflip=self.tta_hflip))
        self._windows = window_scorer(checkpoint, tta_hflip=self.tta_hflip)

    @property
    def class_names(self) -> list[str]:
        return list(self.checkpoint.meta.get("class_names", ["normal", "cancer"]))

    def predict_logits(self, images: np.ndarray) -> np.ndarray:
        """Raw per-view logits ``(N, V, C)`` (V = 2 with flip TTA), no temperature."""
        return self._run(images)[0]

    def predict_images(self, images: np.ndarray) -> np.ndarray:
        """Cancer probabilities ``(N,)`` for NHWC float32 images ``(N, S, S, 1)``."""
        return self._run(images)[1]

    def predict_images_with_logits(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(logits (N, V, C), probabilities (N,))`` from one pass."""
        return self._run(images)

    def _run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4:
            raise ValueError(f"expected NHWC images, got shape {images.shape}")
        if self._windows is not None and len(images):
            logits = self._windows(images)
            return logits, probabilities_from_logits(logits, self.temperature).astype(np.float32)
        n = images.shape[0]
        logits_parts, prob_parts = [], []
        for start in range(0, n, self.batch_size):
            chunk = images[start:start + self.batch_size]
            real = chunk.shape[0]
            if real < self.batch_size:  # pad: same shape, same compiled program
                pad = np.zeros((self.batch_size - real, *chunk.shape[1:]), np.float32)
                chunk = np.concatenate([chunk, pad])
            logits, probs = self._jitted(self._variables, chunk, np.float32(self.temperature))
            logits_parts.append(np.asarray(logits)[:real])
            prob_parts.append(np.asarray(probs)[:real])
        if not prob_parts:
            classes = int(self.checkpoint.meta["model"]["num_classes"])
            return np.zeros((0, 2 if self.tta_hflip else 1, classes), np.float32), np.zeros(0, np.float32)
        return np.concatenate(logits_parts), np.concatenate(prob_parts)

    # -- files ---------------------------------------------------------------

    def load_image(self, path: str | os.PathLike):
        """``(image (S, S, 1), ImageMeta)`` preprocessed as the checkpoint was trained."""
        from mammojax.data.preprocess import preprocess_image
        from mammojax.data.readers import DEFAULT_MAX_PIXELS, read_image

        loaded = read_image(path, max_pixels=self.max_pixels or DEFAULT_MAX_PIXELS)
        try:
            pre = preprocess_image(loaded.pixels, laterality=loaded.meta.laterality,
                                   **self.checkpoint.preprocess_options)
        except MammojaxError:
            raise
        except Exception as err:  # a degenerate image (blank, 1 pixel): report, go on
            raise ImageReadError(path, f"cannot preprocess ({type(err).__name__}: {err})") from None
        return pre.image, loaded.meta

    def predict_paths(self, paths: Iterable[str | os.PathLike]) -> Iterator[PathPrediction]:
        """One :class:`PathPrediction` per path, in input order, streamed.

        A file that cannot be read yields an error result; the rest go on.
        """
        paths = [str(p) for p in paths]
        chunks = [paths[i:i + self.batch_size] for i in range(0, len(paths), self.batch_size)]
        with concurrent.futures.ThreadPoolExecutor(_READ_WORKERS) as pool:
            pending = [pool.submit(self._load_safely, p) for p in chunks[0]] if chunks else []
            for k, chunk in enumerate(chunks):
                loaded = [f.result() for f in pending]
                # Read the next batch while this one runs on the device.
                pending = [pool.submit(self._load_safely, p) for p in chunks[k + 1]] \
                    if k + 1 < len(chunks) else []
                yield from self._score_loaded(chunk, loaded)

    def _load_safely(self, path: str):
        try:
            return self.load_image(path)
        except MammojaxError as err:
            message = err.reason if isinstance(err, ImageReadError) else str(err)
            return _Failed(message)

    def _score_loaded(self, chunk: list[str], loaded: list) -> Iterator[PathPrediction]:
        good = [i for i, item in enumerate(loaded) if not isinstance(item, _Failed)]
        probs = self.predict_images(np.stack([loaded[i][0] for i in good])) if good else []
        prob_of = dict(zip(good, probs))
        for i, (path, item) in enumerate(zip(chunk, loaded)):
            if isinstance(item, _Failed):
                yield PathPrediction(path=path, probability=None, error=item.message)
            else:
                meta = item[1]
                yield PathPrediction(path=path, probability=float(prob_of[i]),
                                     laterality=meta.laterality, view=meta.view)


@dataclasses.dataclass(frozen=True)
class _Failed:
    message: str
