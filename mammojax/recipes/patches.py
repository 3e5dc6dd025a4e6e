"""Lesion-centred patch training, then whole-image scoring with the same network.

Why patches: a whole-image label on ~200 films is too weak a signal to learn
mammographic features from scratch (shared/docs/QUALITY.md); a lesion covers
under 1% of the film. Patches cut around the annotated lesion centres
(positives) and from the breast of normal films (negatives) give the network
the lesion itself to learn from. The ResNet is fully convolutional and its
``topk``/``max`` head applies the same Dense layer at every position of
``stage4``, so the patch classifier runs unchanged over a whole image at the
same pixel scale and pools its score map: no fine-tuning step that could
dilute what the patches taught.

Everything here works on images already preprocessed into a
:class:`mammojax.data.cache.Cache` (z-scored, ``(S, S, 1)``); patches are cut
from those arrays, so patch and whole-image scale match exactly.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import numpy as np

PURPOSE_PATCH_SAMPLING = 301  # np.random.default_rng([seed, purpose, ...])
PURPOSE_PATCH_INIT = 302

# A pixel belongs to the breast when it is this many standard deviations above
# the image minimum (the background after z-scoring); negatives are centred there.
BREAST_MARGIN = 0.5


@dataclasses.dataclass(frozen=True)  # frozen: hashable, a cache key for the optimizer
class PatchSettings:
    """How the patch classifier is trained (the ``patch`` section of configs/mias.py)."""

    size: int = 64  # patch side in model-input pixels (the image is cfg.data.image_size)
    positives_per_lesion: int = 2  # jittered crops of each annotated lesion per epoch
    negatives_per_positive: float = 1.0  # balanced classes by default
    jitter_fraction: float = 0.25  # centre jitter, as a fraction of the patch side
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    # Negatives also from the tissue of abnormal films, away from every lesion:
    # the classifier must call the lesion, not "a film of a woman with cancer".
    background_from_abnormal: bool = True
    # Hard-negative mining (Shen et al. 2019): once ``hard_negative_start`` of
    # the schedule is done, each epoch draws ``hard_negative_pool`` times the
    # negatives needed, scores them with the current network and keeps the
    # ``hard_negative_fraction`` that look most like lesions (the rest random).
    # Whole films are scored by their *top* positions, so those are the
    # negatives that decide the image-level AUC.
    hard_negative_fraction: float = 0.0
    hard_negative_pool: int = 4
    hard_negative_start: float = 0.5

    @classmethod
    def from_config(cls, section) -> "PatchSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: section[k] for k in section.keys() if k in names})


def lesion_centres(lesions_input: Sequence[dict]) -> list[tuple[float, float]]:
    """Centres ``(row, col)`` of the lesions that have one (MIAS ``*NOTE 3*`` rows have none)."""
    return [(float(l["row"]), float(l["col"])) for l in lesions_input
            if l.get("row") is not None and l.get("col") is not None]


def crop(image: np.ndarray, row: float, col: float, size: int) -> np.ndarray:
    """The ``size`` square centred near ``(row, col)``, moved inside the image."""
    height, width = image.shape[:2]
    top = int(np.clip(round(row - size / 2), 0, height - size))
    left = int(np.clip(round(col - size / 2), 0, width - size))
    return image[top:top + size, left:left + size]


def breast_pixels(image: np.ndarray) -> np.ndarray:
    """``(n, 2)`` row/col of breast pixels (bright enough above the background)."""
    plane = image[..., 0]
    rows, cols = np.nonzero(plane > plane.min() + BREAST_MARGIN)
    return np.stack([rows, cols], axis=1) if rows.size else np.array([[plane.shape[0] // 2, plane.shape[1] // 2]])


def background_pixels(image: np.ndarray, lesions_input: Sequence[dict], size: int) -> np.ndarray:
    """Breast pixels where a ``size`` patch centred there holds none of ``lesions_input``.

    A lesion without a radius keeps a ``size``-wide margin; an image with a
    lesion that has no centre (MIAS ``*NOTE 3*``) offers no background at all.
    """
    if any(l.get("row") is None or l.get("col") is None for l in lesions_input):
        return np.zeros((0, 2), np.int64)
    pixels = breast_pixels(image)
    keep = np.ones(len(pixels), bool)
    for lesion in lesions_input:
        reach = float(lesion.get("radius") or size / 2) + size / 2  # patch half-diagonal would be stricter
        keep &= np.max(np.abs(pixels - [lesion["row"], lesion["col"]]), axis=1) > reach
    return pixels[keep]


def sample_epoch(images: np.ndarray, labels: np.ndarray, lesions: Sequence[Sequence[dict]],
                 settings: PatchSettings, rng: np.random.Generator, *,
                 negative_scorer: Callable[[np.ndarray], np.ndarray] | None = None,
                 sites: dict[int, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One epoch of patches ``(N, P, P, 1)`` and labels, shuffled.

    Positives: every lesion centre of a positive image, ``positives_per_lesion``
    times with a random shift. Negatives: random breast positions of negative
    images and (``background_from_abnormal``) lesion-free breast of positive
    images, images drawn evenly. With ``negative_scorer`` (patches -> lesion
    score) and ``hard_negative_fraction`` > 0, that share of the negatives is
    the highest-scoring of a ``hard_negative_pool`` times larger draw.
    ``sites`` (from :func:`negative_sites`) saves recomputing them. Each
    patch gets a random flip/transpose (the 8 symmetries of the square: tissue
    has no preferred orientation at this scale).
    """
    size = settings.size
    jitter = settings.jitter_fraction * size
    patches, patch_labels = [], []
    for index in np.flatnonzero(labels == 1):
        for row, col in lesion_centres(lesions[index]):
            for _ in range(settings.positives_per_lesion):
                shift = rng.uniform(-jitter, jitter, size=2)
                patches.append(crop(images[index], row + shift[0], col + shift[1], size))
                patch_labels.append(1)
    count = int(round(settings.negatives_per_positive * max(1, len(patches))))
    hard = int(round(settings.hard_negative_fraction * count)) if negative_scorer is not None else 0
    if sites is None:
        sites = negative_sites(images, labels, lesions, settings)
    negatives = _draw_negatives(images, sites, size, rng, count - hard)
    if hard:
        pool = _draw_negatives(images, sites, size, rng, hard * max(1, settings.hard_negative_pool))
        if len(pool):
            scores = np.asarray(negative_scorer(np.stack(pool).astype(np.float32)))
            negatives += [pool[i] for i in np.argsort(-scores, kind="stable")[:hard]]
    patches += negatives
    patch_labels += [0] * len(negatives)
    if not patches:
        return np.zeros((0, size, size, 1), np.float32), np.zeros(0, np.int32)
    batch = np.stack([_random_symmetry(p, rng) for p in patches]).astype(np.float32)
    order = rng.permutation(len(batch))
    return batch[order], np.asarray(patch_labels, np.int32)[order]


def negative_sites(images, labels, lesions, settings: PatchSettings) -> dict[int, np.ndarray]:
    """Per source image, the ``(row, col)`` centres a negative patch may take.

    Normal films offer their breast; abnormal films (with
    ``background_from_abnormal``) their lesion-free breast. Depends only on the
    images, so a training run computes it once, not once per epoch.
    """
    sources = list(np.flatnonzero(labels == 0))
    if settings.background_from_abnormal:
        sources += list(np.flatnonzero(labels == 1))
    sites = {}
    for index in sorted(int(i) for i in sources):
        pixels = breast_pixels(images[index]) if labels[index] == 0 else \
            background_pixels(images[index], lesions[index], settings.size)
        if len(pixels):
            sites[index] = pixels
    return sites


def _draw_negatives(images, sites: dict[int, np.ndarray], size: int, rng: np.random.Generator,
                    count: int) -> list[np.ndarray]:
    """``count`` patches centred on ``sites``, source images drawn evenly."""
    if count <= 0 or not sites:
        return []
    out = []
    for index in rng.choice(np.array(sorted(sites)), size=count, replace=True):
        row, col = sites[index][rng.integers(len(sites[index]))]
        out.append(crop(images[index], row, col, size))
    return out


def _random_symmetry(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    if rng.random() < 0.5:
        patch = patch[::-1]
    if rng.random() < 0.5:
        patch = np.swapaxes(patch, 0, 1)
    return patch


def train_patch_classifier(model, images: np.ndarray, labels: np.ndarray,
                           lesions: Sequence[Sequence[dict]], settings: PatchSettings, *, seed: int,
                           total_steps: int | None = None,
                           log: Callable[[str], None] | None = None,
                           history: list | None = None, initial_variables: dict | None = None) -> dict:
    """Trains ``model`` on lesion patches; returns ``{"params", "batch_stats"}``.

    AdamW with linear warmup and cosine decay over a fixed number of steps: no
    epoch is *selected* (with ~40 validation films the "best epoch" is mostly
    noise), so the model is the one at the end of the schedule. ``total_steps``
    defaults to ``settings.epochs`` epochs of these images; cross-validation
    passes one number for every fold so the optimizer, and with it the
    compiled step, is shared by all folds. ``history``, when given, receives
    one ``{"epoch", "train_loss", "patches_per_second"}`` record per epoch.
    ``initial_variables`` (e.g. converted pretrained weights, the cure for
    ~55 lesions per fold) replace the seeded random initialisation.
    """
    import time

    import jax

    steps_per_epoch = max(1, patches_per_epoch(labels, lesions, settings) // settings.batch_size)
    total_steps = int(total_steps or steps_per_epoch * settings.epochs)
    tx = make_optimizer(settings, total_steps)
    state = _create_state(model, tx, seed, settings.size, initial_variables)
    step_fn = _train_step_fn()
    sampler = np.random.default_rng([seed, PURPOSE_PATCH_SAMPLING])
    sites = negative_sites(images, labels, lesions, settings)
    step, epoch = 0, 0
    started = time.perf_counter()
    while step < total_steps:
        scorer = None
        if settings.hard_negative_fraction > 0 and step >= settings.hard_negative_start * total_steps:
            variables = {"params": state.params, "batch_stats": state.batch_stats}
            scorer = functools.partial(lesion_margins, model, variables, batch_size=settings.batch_size * 4)
        patches, patch_labels = sample_epoch(images, labels, lesions, settings, sampler, negative_scorer=scorer,
                                             sites=sites)
        if len(patches) < settings.batch_size:
            raise ValueError(f"only {len(patches)} patches per epoch; batch size is {settings.batch_size}")
        losses = []
        for start in range(0, len(patches) - settings.batch_size + 1, settings.batch_size):
            if step == total_steps:
                break
            batch = {"image": patches[start:start + settings.batch_size],
                     "label": patch_labels[start:start + settings.batch_size]}
            state, metrics = step_fn(state, batch)
            losses.append(metrics["loss"])
            step += 1
        epoch += 1
        loss = float(np.mean(jax.device_get(losses)))  # waits for the epoch's steps: honest timing
        elapsed = time.perf_counter() - started
        rate = step * settings.batch_size / elapsed
        if history is not None:
            history.append({"epoch": epoch, "train_loss": loss, "patches_per_second": rate})
        if log:
            eta = elapsed / step * (total_steps - step)
            log(f"  patch epoch {epoch}: loss {loss:.3f} (step {step}/{total_steps}, {len(patches)} patches, "
                f"{rate:.0f} patches/s, ETA {eta / 60:.1f} min)")
    return {"params": jax.device_get(state.params), "batch_stats": jax.device_get(state.batch_stats)}


def patches_per_epoch(labels, lesions, settings: PatchSettings) -> int:
    """How many patches :func:`sample_epoch` draws from these images."""
    positives = sum(len(lesion_centres(lesions[i])) for i in np.flatnonzero(np.asarray(labels) == 1))
    positives *= settings.positives_per_lesion
    return int(positives + round(settings.negatives_per_positive * max(1, positives)))


@functools.lru_cache(maxsize=8)
def make_optimizer(settings: PatchSettings, total_steps: int):
    """AdamW, warmup + cosine; cached so equal settings give the *same* object (one compile)."""
    import optax

    warmup = max(1, int(settings.warmup_epochs * total_steps / max(1, settings.epochs)))
    schedule = optax.warmup_cosine_decay_schedule(0.0, settings.lr, warmup, max(total_steps, warmup + 1))
    return optax.adamw(schedule, weight_decay=settings.weight_decay)


def _create_state(model, tx, seed: int, size: int, variables: dict | None = None):
    """The train state at ``variables``, or at the seeded random initialisation when None."""
    import jax

    from mammojax.train.state import TrainState

    key = jax.random.key(seed)
    if variables is None:
        variables = _init_fn(model, size)(jax.random.fold_in(key, PURPOSE_PATCH_INIT))
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables["batch_stats"],
                             rng=jax.random.key_data(jax.random.fold_in(key, PURPOSE_PATCH_INIT + 1)))


@functools.lru_cache(maxsize=None)
def _init_fn(model, size: int):
    """Jitted parameter initialisation, traced once per (model, patch size)."""
    import jax
    import jax.numpy as jnp

    def init(key):
        x = jnp.zeros((1, size, size, model.in_channels), jnp.float32)
        variables = model.init(key, x, train=False)
        return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}

    return jax.jit(init)


@functools.lru_cache(maxsize=None)
def _train_step_fn():
    """One jitted step shared by every fold (same shapes and optimizer: compiled once per run)."""
    import jax

    from mammojax.train.state import train_step

    return jax.jit(functools.partial(train_step, class_weights=None), donate_argnums=0)


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
    plane = image[..., 0]
    breast = plane > plane.min() + BREAST_MARGIN
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
