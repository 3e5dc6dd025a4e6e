"""How a patch-trained network scores patches and films (moved here from ``mammojax/recipes``).

* :func:`lesion_margins`: a patch's lesion margin (logit 1 - logit 0); the
  patch trainer mines hard negatives with it;
* :func:`score_images_by_windows`: a film as the mean of its ``top_k``
  highest window margins, windows the patch size, centred on the breast;
* :func:`score_films` / :func:`window_scoring_meta`: which of the two (whole
  film or windows) a config asks for, and the ``scoring`` entry a checkpoint
  of that config carries so that ``Predictor`` scores films the same way.

Validation inside the patch trainer and the cross-validation score through
here; the one film scorer (issue 15, item 1) replaces this module.
"""

from __future__ import annotations

import functools

import numpy as np

from mammojax.data.preprocess import input_breast_mask
from mammojax.errors import MammojaxError


def window_scoring_meta(config) -> dict | None:
    """The checkpoint's ``scoring`` entry: how :class:`~mammojax.inference.Predictor` turns a film into a score.

    None for ``eval.scoring = "whole"``: such a model scores a film in one pass, like any other.
    """
    if config.eval.scoring == "whole":
        return None
    if config.eval.scoring != "windows":
        raise MammojaxError(f"eval.scoring must be 'windows' or 'whole' (got {config.eval.scoring!r})")
    return {"kind": "windows", "size": int(config.patch.size), "stride": int(config.patch.window_stride),
            "top_k": int(config.patch.window_top_k)}


def score_films(model, variables, images: np.ndarray, config, tta: bool) -> np.ndarray:
    """Film logits ``(N, 2)`` as :func:`window_scoring_meta` says a checkpoint of ``config`` scores them.

    One definition for the CV, for the tau fitted here, and for the entry
    ``Predictor`` reads, so the three cannot drift apart.
    """
    scoring = window_scoring_meta(config)
    if scoring is None:
        return score_images(model, variables, images, tta_hflip=tta)
    return score_images_by_windows(model, variables, images, size=scoring["size"], stride=scoring["stride"],
                                   top_k=scoring["top_k"], tta_hflip=tta)


def score_images(model, variables: dict, images: np.ndarray, *, batch_size: int = 32,
                 tta_hflip: bool = True) -> np.ndarray:
    """Whole-image logits ``(N, num_classes)`` (pooled score map), mirror-averaged when ``tta_hflip``."""
    import jax

    if len(images) == 0:
        return np.zeros((0, model.num_classes))
    apply = _apply_fn(model)
    variables = jax.device_put(variables)  # once, not at every call
    images = np.asarray(images, np.float32)
    logits = _batched(apply, variables, images, batch_size=batch_size).astype(np.float64)
    if tta_hflip:
        mirrored = np.ascontiguousarray(images[:, :, ::-1])
        logits = (logits + _batched(apply, variables, mirrored, batch_size=batch_size).astype(np.float64)) / 2
    return logits


def _batched(fn, variables, patches: np.ndarray, *, batch_size: int) -> np.ndarray:
    """``fn(variables, batch)`` over ``patches`` in fixed-size (zero-padded) batches."""
    out = []
    for start in range(0, len(patches), batch_size):
        batch = patches[start:start + batch_size]
        real = len(batch)
        if real < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - real, *batch.shape[1:]), batch.dtype)])
        out.append(np.asarray(fn(variables, batch))[:real])
    return np.concatenate(out)


def lesion_margins(model, variables, patches: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """Lesion margin (logit 1 - logit 0) of each patch, inference-mode BatchNorm.

    ``variables`` may be a list of networks' variables (an ensemble): their margins are averaged.
    """
    return _ensemble_margins(model, _members(variables), np.asarray(patches, np.float32), batch_size=batch_size)


def _members(variables) -> list:
    """One network's variables, or a list of them, as a list placed on the device once."""
    import jax

    return [jax.device_put(v) for v in (variables if isinstance(variables, (list, tuple)) else [variables])]


def _ensemble_margins(model, members: list, patches: np.ndarray, *, batch_size: int) -> np.ndarray:
    score = _lesion_score_fn(model)
    total = sum(_batched(score, v, patches, batch_size=batch_size).astype(np.float64) for v in members)
    return total / len(members)


@functools.lru_cache(maxsize=None)
def _lesion_score_fn(model):
    """Jitted patch -> lesion margin (logit 1 - logit 0), inference-mode BatchNorm."""
    import jax

    def score(variables, x):
        logits = model.apply(variables, x, train=False)[0]
        return logits[:, 1] - logits[:, 0]

    return jax.jit(score)


@functools.lru_cache(maxsize=None)
def _apply_fn(model):
    import jax

    return jax.jit(lambda variables, x: model.apply(variables, x, train=False)[0])


def window_positions(image: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Top-left ``(row, col)`` of the ``size`` windows on a ``stride`` grid whose centre is breast."""
    height, width = image.shape[:2]
    tops = np.unique(np.r_[np.arange(0, max(1, height - size + 1), stride), max(0, height - size)])
    lefts = np.unique(np.r_[np.arange(0, max(1, width - size + 1), stride), max(0, width - size)])
    breast = input_breast_mask(image)
    grid = np.array([(t, l) for t in tops for l in lefts])
    keep = breast[grid[:, 0] + size // 2, grid[:, 1] + size // 2]
    return grid[keep] if keep.any() else grid


def score_images_by_windows(model, variables, images: np.ndarray, *, size: int, stride: int,
                            top_k: int = 3, tta_hflip: bool = True, batch_size: int = 64,
                            windows_per_call: int = 1024) -> np.ndarray:
    """Whole-film logits ``[0, s]``: ``s`` is the mean of the ``top_k`` highest window lesion margins.

    The patch classifier is run on exactly what it was trained on: ``size``
    px windows of the film (every ``stride`` px, centred on breast), not on the
    whole film, whose positions would see context and no zero padding, a
    different input than any training patch. ``tta_hflip`` averages each
    window with its mirror image. Windows of several films share batches
    (up to ``windows_per_call`` at a time), so small films do not leave
    batches mostly padding. ``variables`` may be a list of networks'
    variables (an ensemble): each window's margin is their mean.
    """
    members = _members(variables)
    out = np.zeros((len(images), 2), np.float64)

    def flush(owners: list[int], windows: list[np.ndarray]) -> None:
        stacked = np.stack(windows).astype(np.float32)
        margins = _ensemble_margins(model, members, stacked, batch_size=batch_size)
        if tta_hflip:
            mirrored = np.ascontiguousarray(stacked[:, :, ::-1])
            margins = (margins + _ensemble_margins(model, members, mirrored, batch_size=batch_size)) / 2
        owners = np.asarray(owners)
        for n in np.unique(owners):
            out[n, 1] = np.sort(margins[owners == n])[::-1][:top_k].mean()

    owners, windows = [], []
    for n, image in enumerate(images):
        positions = window_positions(image, size, stride)
        if windows and len(windows) + len(positions) > windows_per_call:
            flush(owners, windows)
            owners, windows = [], []
        windows += [image[t:t + size, l:l + size] for t, l in positions]
        owners += [n] * len(positions)
    if windows:
        flush(owners, windows)
    return out
