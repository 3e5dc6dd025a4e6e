"""Lesion-centred patches, planned per epoch and cut from the prepared dataset batch by batch.

Why patches: a whole-image label on ~200 films is too weak a signal to learn
mammographic features from scratch (shared/docs/QUALITY.md); a lesion covers
under 1% of the film. Patches cut around the annotated lesion centres
(positives) and from the breast of lesion-free tissue (negatives) give the
network the lesion itself to learn from. The ResNet is fully convolutional,
so the patch classifier then scores whole films through patch-sized windows
(:class:`mammojax.scoring.Scorer`).

How an epoch is drawn, and why it resumes exactly: :func:`plan_epoch` fixes
every patch of the epoch up front (source film, centre, flips, training
order) from a generator the caller seeds with ``(seed, epoch)``. The network
enters in one place only: with hard-negative mining, part of the negatives
are the top-scoring members of a planned *pool*, chosen by the network as it
is when the epoch starts (:meth:`EpochPlan.with_hard`); the trainer keeps
that choice in its checkpoints, so a run resumed mid-epoch cuts exactly the
patches the uninterrupted run cut. Patches are cut from the prepared
dataset (:class:`PatchSource`) only when their batch is due: no film stays in
memory beyond its batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from mammojax.data.prepared import ExampleReader
from mammojax.data.preprocess import image_size_of, input_breast_mask
from mammojax.errors import MammojaxError

PURPOSE_PATCH_SAMPLING = 301  # np.random.default_rng([seed, PURPOSE_PATCH_SAMPLING, epoch])


@dataclasses.dataclass(frozen=True)
class PatchSettings:
    """How patches are drawn (the ``patch`` section of the config; see ``base_config``)."""

    size: int = 64
    positives_per_lesion: int = 2
    negatives_per_positive: float = 1.0
    jitter_fraction: float = 0.25
    # Negatives also from the tissue of abnormal films, away from every lesion:
    # the classifier must call the lesion, not "a film of a woman with cancer".
    background_from_abnormal: bool = True
    # Hard-negative mining (Shen et al. 2019): once ``hard_negative_start`` of
    # the steps are done, each epoch draws ``hard_negative_pool`` times the
    # mined negatives it needs, scores them with the current network and keeps
    # the ``hard_negative_fraction`` of the negatives that look most like
    # lesions. Films are scored by their *top* windows, so those are the
    # negatives that decide the film-level AUC.
    hard_negative_fraction: float = 0.0
    hard_negative_pool: int = 4
    hard_negative_start: float = 0.5

    @classmethod
    def from_config(cls, section) -> PatchSettings:
        return cls(**{f.name: section[f.name] for f in dataclasses.fields(cls)})


def lesion_centres(lesions_input: Sequence[dict]) -> list[tuple[float, float]]:
    """Centres ``(row, col)`` of the lesions that have one (MIAS ``*NOTE 3*`` rows have none)."""
    return [(float(l["row"]), float(l["col"])) for l in lesions_input
            if l["row"] is not None and l["col"] is not None]


def crop(image: np.ndarray, row: float, col: float, size: int) -> np.ndarray:
    """The ``size`` square centred near ``(row, col)``, moved inside the image."""
    height, width = image.shape[:2]
    top = int(np.clip(round(row - size / 2), 0, height - size))
    left = int(np.clip(round(col - size / 2), 0, width - size))
    return image[top:top + size, left:left + size]


def breast_pixels(image: np.ndarray) -> np.ndarray:
    """``(n, 2)`` row/col of breast pixels; the centre pixel when the film shows none."""
    rows, cols = np.nonzero(input_breast_mask(image))
    if rows.size:
        return np.stack([rows, cols], axis=1)
    return np.array([[image.shape[0] // 2, image.shape[1] // 2]])


def background_pixels(image: np.ndarray, lesions_input: Sequence[dict], size: int) -> np.ndarray:
    """Breast pixels where a ``size`` patch centred there holds none of ``lesions_input``.

    A lesion without a radius keeps a ``size``-wide margin; a film with a
    lesion that has no centre (MIAS ``*NOTE 3*``) offers no background at all.
    """
    if any(l["row"] is None or l["col"] is None for l in lesions_input):
        return np.zeros((0, 2), np.int64)
    pixels = breast_pixels(image)
    keep = np.ones(len(pixels), bool)
    for lesion in lesions_input:
        reach = float(lesion["radius"] or size / 2) + size / 2  # patch half-diagonal would be stricter
        keep &= np.max(np.abs(pixels - [lesion["row"], lesion["col"]]), axis=1) > reach
    return pixels[keep]


class PatchSource:
    """The films of one cache that patches are cut from.

    Holds the lesion centres of the abnormal films and the negative *sites*:
    per film that offers negatives, the flat indices of the pixels a negative
    patch may be centred on (breast of normal films; with
    ``background_from_abnormal`` also the lesion-free breast of abnormal
    films). The sites depend on the films alone, so they are computed once,
    here, from each film read one at a time; they take 4 bytes per breast
    pixel (about 100 kB per 256 px film).
    """

    def __init__(self, cache, settings: PatchSettings):
        self.cache = cache
        self.settings = settings
        self.image_shape = tuple(int(v) for v in cache.image_shape)  # (H, W)
        if settings.size > min(self.image_shape):
            raise MammojaxError(f"patch.size={settings.size} is larger than the "
                                f"{image_size_of(self.image_shape)} px films")
        self._reader = ExampleReader(cache)
        labels = np.asarray(cache.labels)
        self.positives = np.array([(i, row, col) for i in np.flatnonzero(labels == 1)
                                   for row, col in lesion_centres(cache.lesions_input[i])],
                                  np.float64).reshape(-1, 3)
        sources = np.flatnonzero(labels == 0) if not settings.background_from_abnormal else np.arange(len(labels))
        sites = {}
        for index in sources:
            film = self.film(index)
            pixels = breast_pixels(film) if labels[index] == 0 else \
                background_pixels(film, cache.lesions_input[index], settings.size)
            if len(pixels):
                sites[int(index)] = (pixels[:, 0] * self.image_shape[1] + pixels[:, 1]).astype(np.int32)
        self._sites = sites
        self._site_films = np.array(sorted(sites), np.int64)
        if self.negatives_per_epoch and not len(self._site_films):
            raise MammojaxError(f"{cache.path}: no training film offers lesion-free breast for negative patches")

    @property
    def num_positives(self) -> int:
        """Lesion patches per epoch."""
        return len(self.positives) * int(self.settings.positives_per_lesion)

    @property
    def negatives_per_epoch(self) -> int:
        return int(round(self.settings.negatives_per_positive * max(1, self.num_positives)))

    @property
    def patches_per_epoch(self) -> int:
        return self.num_positives + self.negatives_per_epoch

    def film(self, index: int) -> np.ndarray:
        """Film ``index`` as float32 ``(H, W, 1)``, read from the prepared dataset."""
        return self._reader.get(int(index)).astype(np.float32)

    def draw_sites(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``count`` negative centres ``(films, rows, cols)``: films drawn evenly, then a site of each."""
        films = rng.choice(self._site_films, size=count, replace=True) if count else np.zeros(0, np.int64)
        lengths = np.array([len(self._sites[int(f)]) for f in films], np.int64)
        picks = rng.integers(0, lengths) if count else np.zeros(0, np.int64)
        flat = np.array([self._sites[int(f)][k] for f, k in zip(films, picks)], np.int64)
        width = self.image_shape[1]  # sites are flat row-major indices
        return films.astype(np.int64), (flat // width).astype(np.float64), (flat % width).astype(np.float64)

    def cut(self, films: np.ndarray, rows: np.ndarray, cols: np.ndarray,
            flips: np.ndarray | None = None) -> np.ndarray:
        """Patches ``(n, P, P, 1)`` float32 at these centres, each film read once.

        ``flips`` ``(n, 3)`` bool: mirror the columns, mirror the rows, transpose
        (together the 8 symmetries of the square: tissue has no preferred
        orientation at this scale).
        """
        size = self.settings.size
        out = np.zeros((len(films), size, size, 1), np.float32)
        for film in np.unique(films):
            image = self.film(film)
            for i in np.flatnonzero(films == film):
                patch = crop(image, rows[i], cols[i], size)
                if flips is not None:
                    if flips[i, 0]:
                        patch = patch[:, ::-1]
                    if flips[i, 1]:
                        patch = patch[::-1]
                    if flips[i, 2]:
                        patch = np.swapaxes(patch, 0, 1)
                out[i] = patch
        return out


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """Every patch of one epoch, in training order (arrays of length N).

    ``hard_slots`` are the positions that mined negatives fill, best-scoring
    first; until :meth:`with_hard` fills them their film is -1. ``pool_*``
    are the candidates they are chosen from.
    """

    film: np.ndarray
    row: np.ndarray
    col: np.ndarray
    label: np.ndarray
    flips: np.ndarray
    hard_slots: np.ndarray
    pool_film: np.ndarray
    pool_row: np.ndarray
    pool_col: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    def with_hard(self, chosen: Sequence[int]) -> EpochPlan:
        """The plan with pool members ``chosen`` (best first) in the hard slots."""
        chosen = np.asarray(chosen, np.int64)
        if len(chosen) != len(self.hard_slots):
            raise ValueError(f"{len(chosen)} mined negatives for {len(self.hard_slots)} slots")
        film, row, col = self.film.copy(), self.row.copy(), self.col.copy()
        film[self.hard_slots] = self.pool_film[chosen]
        row[self.hard_slots] = self.pool_row[chosen]
        col[self.hard_slots] = self.pool_col[chosen]
        return dataclasses.replace(self, film=film, row=row, col=col)

    def batch(self, source: PatchSource, positions: np.ndarray) -> dict:
        """``{"image": (n, P, P, 1) float32, "label": (n,) int32}`` for the plan's ``positions``."""
        if np.any(self.film[positions] < 0):
            raise ValueError("the plan's hard-negative slots are not filled (with_hard)")
        image = source.cut(self.film[positions], self.row[positions], self.col[positions], self.flips[positions])
        return {"image": image, "label": self.label[positions]}


def plan_epoch(source: PatchSource, rng: np.random.Generator, *, mine: bool) -> EpochPlan:
    """One epoch's patches: every lesion centre ``positives_per_lesion`` times with a random
    shift, then ``negatives_per_epoch`` negatives, of which (with ``mine``) the
    ``hard_negative_fraction`` come from a ``hard_negative_pool`` times larger pool.

    Draws from ``rng`` in a fixed order whatever the network does, so the plan
    is a pure function of the generator's seed.
    """
    settings = source.settings
    jitter = settings.jitter_fraction * settings.size
    positives = np.repeat(source.positives, settings.positives_per_lesion, axis=0)
    shifts = rng.uniform(-jitter, jitter, size=(len(positives), 2))
    count = source.negatives_per_epoch
    hard = int(round(settings.hard_negative_fraction * count)) if mine else 0
    films, rows, cols = source.draw_sites(rng, count - hard)
    pool = source.draw_sites(rng, hard * max(1, settings.hard_negative_pool))
    total = len(positives) + count
    flips = rng.random((total, 3)) < 0.5  # per training position
    order = rng.permutation(total)
    film = np.concatenate([positives[:, 0].astype(np.int64), films, np.full(hard, -1, np.int64)])
    row = np.concatenate([positives[:, 1] + shifts[:, 0], rows, np.zeros(hard)])
    col = np.concatenate([positives[:, 2] + shifts[:, 1], cols, np.zeros(hard)])
    label = np.concatenate([np.ones(len(positives), np.int32), np.zeros(count, np.int32)])
    position_of = np.argsort(order)  # where each planned patch lands in training order
    return EpochPlan(film=film[order], row=row[order], col=col[order], label=label[order], flips=flips,
                     hard_slots=position_of[total - hard:], pool_film=pool[0], pool_row=pool[1],
                     pool_col=pool[2])


def hardest(scores: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` highest ``scores``, highest first (ties: lower index first)."""
    return np.argsort(-np.asarray(scores), kind="stable")[:count]


def epoch_batches(source: PatchSource, plan: EpochPlan, batch_size: int, *, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
    """The plan's full batches from ``start_step`` on; process ``process_index`` gets its
    contiguous share of each global batch (the incomplete last batch is dropped)."""
    local = batch_size // process_count
    for step in range(start_step, len(plan) // batch_size):
        lo = step * batch_size + process_index * local
        yield plan.batch(source, np.arange(lo, lo + local))
