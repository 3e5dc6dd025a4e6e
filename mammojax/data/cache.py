"""Decode every image once: a fingerprinted cache of preprocessed images.

Reading a mammogram (a 30 MB DICOM, a 1024x1024 PGM) and resizing it costs far
more than a training step needs to wait for, and the same images are read
every epoch. :func:`prepare_cache` runs ``read_image -> preprocess_image``
once per record and stores the model-ready ``(S, S, 1)`` images; the training
and evaluation pipelines (:mod:`mammojax.data.pipeline`) only read the cache.

Layout of one cache, ``<cache_dir>/<fingerprint>/``::

    index.json              options, one entry per example, the exclusions
    images-00000.f16        raw little-endian float16, (count, S, S, 1) C order
    images-00001.f16        ... (shards of at most ``SHARD_BYTES``)

Why raw fixed-size records rather than TFRecord: every example has the same
byte size, so example ``i`` is at a known offset. NumPy memory-maps the shards
(evaluation and ``load_arrays`` need no TensorFlow, whose import alone takes
~9 s), and the training pipeline can read examples in any order, which makes
an exact per-epoch shuffle and a cheap ``start_step`` skip possible. TFRecord
only reads sequentially, which forces an approximate shuffle buffer.

Precision: images are the z-scored float32 output of ``preprocess_image``
stored as float16, a relative error of at most 2**-11 (about 0.05%); z-scores
of mammograms stay within a few tens, far inside float16's range.

The directory name is a fingerprint of the preprocessing options and of every
record (path, file size, modification time, label and annotations), so the same
inputs reuse the cache instantly and anything that changes them makes a new
one. A cache is written under a temporary name and renamed into place only
when complete: a killed ``prepare`` never leaves a half cache that is reused.
(A process killed outright may leave a ``.tmp-*`` folder behind; it is never
read and can be deleted.)
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from mammojax.errors import MammojaxError
from mammojax.progress import progress_bar

CACHE_FORMAT_VERSION = 1
INDEX_NAME = "index.json"
STORAGE_DTYPE = np.dtype("<f2")
SHARD_BYTES = 1 << 30  # 1 GiB: small enough for any filesystem, few files for big datasets
DECODE_WORKERS = 2  # the project machines have 2 cores; decoding is the only heavy part
_TMP_PREFIX = ".tmp-"


@dataclasses.dataclass(frozen=True, eq=False)
class Cache:
    """A prepared cache: metadata in memory, images memory-mapped on demand.

    ``records[i]``, ``labels[i]`` and ``patient_ids[i]`` describe example ``i``;
    ``lesions_input[i]`` lists its lesions in model-input pixel coordinates
    (dicts with ``kind``, ``row``, ``col``, ``radius`` (or None), ``severity``).
    """

    path: Path
    image_size: int
    records: tuple
    labels: np.ndarray
    patient_ids: tuple[str, ...]
    lesions_input: tuple[tuple[dict, ...], ...]
    excluded: tuple
    shards: tuple[tuple[str, int], ...]  # (file name, example count), in order
    fingerprint: str
    # A view of some of the stored examples (subset): example i is stored row rows[i].
    rows: np.ndarray | None = None

    @property
    def num_examples(self) -> int:
        return len(self.records)

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of every stored image."""
        return (self.image_size, self.image_size)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "Cache":
        """Examples ``indices``, in that order, as a cache of their own over the same files.

        Nothing is copied or decoded again: cross-validation cuts every fold's
        training and validation films out of one prepared cache this way.
        """
        indices = np.asarray(indices, np.int64).reshape(-1)
        rows = indices if self.rows is None else self.rows[indices]
        return dataclasses.replace(
            self, records=tuple(self.records[i] for i in indices), labels=self.labels[indices],
            patient_ids=tuple(self.patient_ids[i] for i in indices),
            lesions_input=tuple(self.lesions_input[i] for i in indices), rows=rows)

    def __len__(self) -> int:
        return self.num_examples

    def shard_arrays(self) -> list[np.ndarray]:
        """Read-only memory maps, one ``(count, S, S, 1)`` float16 array per shard."""
        shape = (self.image_size, self.image_size, 1)
        arrays = []
        for name, count in self.shards:
            try:
                arrays.append(np.memmap(self.path / name, dtype=STORAGE_DTYPE, mode="r",
                                        shape=(count, *shape)))
            except (OSError, ValueError) as err:  # missing or truncated shard
                raise MammojaxError(f"{self.path / name}: damaged cache shard ({err}); "
                                    "delete the cache directory and prepare again") from None
        return arrays

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Examples ``indices`` as float32 ``(len(indices), S, S, 1)``."""
        reader = ExampleReader(self)
        out = np.zeros((len(indices), self.image_size, self.image_size, 1), np.float32)
        for row, index in enumerate(indices):
            out[row] = reader.get(int(index))
        return out

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Every image and label in memory: ``(N, S, S, 1)`` float32, ``(N,)`` int32.

        For small datasets and tests; large ones should stream through
        :mod:`mammojax.data.pipeline` instead.
        """
        if self.rows is not None:
            return self.read(np.arange(self.num_examples)), self.labels.copy()
        parts = [np.asarray(a, dtype=np.float32) for a in self.shard_arrays()]
        if parts:
            images = np.concatenate(parts)
        else:
            images = np.zeros((0, self.image_size, self.image_size, 1), np.float32)
        return images, self.labels.copy()


class ExampleReader:
    """Random access to one cache's images by example index (float16)."""

    def __init__(self, cache: Cache):
        self._arrays = cache.shard_arrays()
        self._starts = np.cumsum([0] + [len(a) for a in self._arrays])
        self._rows = cache.rows
        self._count = cache.num_examples

    def get(self, index: int) -> np.ndarray:
        if self._rows is not None:
            if not 0 <= index < self._count:
                raise IndexError(f"example {index} is outside the cache")
            index = int(self._rows[index])
        shard = int(np.searchsorted(self._starts, index, side="right")) - 1
        if index < 0 or shard >= len(self._arrays):
            raise IndexError(f"example {index} is outside the cache")
        return np.array(self._arrays[shard][index - self._starts[shard]])

    def get_slice(self, start: int, stop: int) -> np.ndarray:
        """Examples ``start:stop`` (contiguous reads, possibly across shards)."""
        if self._rows is not None:  # a subset's rows need not be contiguous on disk
            shape = (0, *self._arrays[0].shape[1:]) if self._arrays else (0,)
            return np.stack([self.get(i) for i in range(start, stop)]) if stop > start else \
                np.zeros(shape, STORAGE_DTYPE)
        pieces = []
        for shard, array in enumerate(self._arrays):
            lo, hi = self._starts[shard], self._starts[shard + 1]
            a, b = max(start, lo), min(stop, hi)
            if a < b:
                pieces.append(np.asarray(array[a - lo:b - lo]))
        if not pieces:
            return np.zeros((0, *self._arrays[0].shape[1:]) if self._arrays else (0,), STORAGE_DTYPE)
        return np.concatenate(pieces)


# ---------------------------------------------------------------------------
# Building a cache


def prepare_cache(records: Iterable, *, cache_dir: str | os.PathLike, image_size: int,
                  orient: bool = False, crop_breast: bool = False,
                  max_pixels: int = 80_000_000, progress: bool = True,
                  workers: int = DECODE_WORKERS) -> Cache:
    """Decodes every record once into a cache under ``cache_dir`` (or reuses it).

    Files that cannot be read or fail screening are skipped, each with an
    ``Exclusion(path, reason)`` in ``Cache.excluded``; one bad file never stops
    the run. Progress (images/s, ETA) goes to stderr when ``progress``.
    """
    records = list(records)
    if image_size < 8:
        raise MammojaxError(f"image_size must be at least 8 pixels, got {image_size}")
    options = {"image_size": int(image_size), "orient": bool(orient),
               "crop_breast": bool(crop_breast), "max_pixels": int(max_pixels)}
    fingerprint = cache_fingerprint(records, options)
    root = Path(cache_dir)
    final = root / fingerprint
    if (final / INDEX_NAME).is_file():
        return open_cache(final)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{_TMP_PREFIX}{fingerprint}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write_cache(tmp, records, options, fingerprint, progress=progress, workers=workers)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished the same cache first: theirs is as good as ours.
            if not (final / INDEX_NAME).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return open_cache(final)


def cache_fingerprint(records: Sequence, options: dict) -> str:
    """A short hash of the options and of every record and its file's size/mtime."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": CACHE_FORMAT_VERSION, "options": options},
                             sort_keys=True).encode())
    for record in records:
        try:
            stat = os.stat(record.path)
            file_state = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            file_state = None  # missing now: excluded while decoding, and hashed as such
        entry = {"record": _record_to_json(record), "file": file_state}
        digest.update(json.dumps(entry, sort_keys=True, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:20]


def open_cache(path: str | os.PathLike) -> Cache:
    """Opens a finished cache directory (as returned in ``Cache.path``)."""
    path = Path(path)
    index_path = path / INDEX_NAME
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as err:
        raise MammojaxError(f"{index_path}: not a readable mammojax cache index ({err})") from None
    if index.get("version") != CACHE_FORMAT_VERSION:
        raise MammojaxError(f"{index_path}: cache format {index.get('version')} is not "
                            f"{CACHE_FORMAT_VERSION}; delete the directory and prepare again")
    from mammojax.data.records import Exclusion

    examples = index["examples"]
    records = tuple(_record_from_json(e["record"]) for e in examples)
    return Cache(
        path=path,
        image_size=int(index["options"]["image_size"]),
        records=records,
        labels=np.array([r.label for r in records], dtype=np.int32),
        patient_ids=tuple(str(r.patient_id) for r in records),
        lesions_input=tuple(tuple(e["lesions_input"]) for e in examples),
        excluded=tuple(Exclusion(x["path"], x["reason"]) for x in index["excluded"]),
        shards=tuple((s["file"], int(s["count"])) for s in index["shards"]),
        fingerprint=index["fingerprint"],
    )


def _write_cache(directory: Path, records: list, options: dict, fingerprint: str, *,
                 progress: bool, workers: int) -> None:
    size = options["image_size"]
    example_bytes = size * size * STORAGE_DTYPE.itemsize
    per_shard = max(1, SHARD_BYTES // example_bytes)
    writer = _ShardWriter(directory, per_shard)
    examples, excluded = [], []
    bar = progress_bar(len(records), desc="decoding", enabled=progress)
    try:
        for record, outcome in _decode_all(records, options, workers):
            if isinstance(outcome, str):
                excluded.append({"path": str(record.path), "reason": outcome})
            else:
                image, lesions_input = outcome
                writer.append(image)
                examples.append({"record": _record_to_json(record), "lesions_input": lesions_input})
            bar.update(1)
            if excluded:
                bar.set_postfix(excluded=len(excluded), refresh=False)
    finally:
        bar.close()
        writer.close()
    index = {"version": CACHE_FORMAT_VERSION, "fingerprint": fingerprint, "options": options,
             "dtype": STORAGE_DTYPE.str, "layout": "NHWC, C order", "shards": writer.shards,
             "examples": examples, "excluded": excluded}
    # The index is the last file written; the directory rename publishes it.
    (directory / INDEX_NAME).write_text(json.dumps(index, indent=1, default=str))


class _ShardWriter:
    """Appends float16 images to numbered shard files of at most ``per_shard`` examples."""

    def __init__(self, directory: Path, per_shard: int):
        self.directory, self.per_shard = directory, per_shard
        self.shards: list[dict] = []
        self._file = None

    def append(self, image: np.ndarray) -> None:
        if self._file is None or self.shards[-1]["count"] == self.per_shard:
            self._open_next()
        self._file.write(np.ascontiguousarray(image, dtype=STORAGE_DTYPE).tobytes())
        self.shards[-1]["count"] += 1

    def _open_next(self) -> None:
        self.close()
        name = f"images-{len(self.shards):05d}.f16"
        self._file = open(self.directory / name, "wb")
        self.shards.append({"file": name, "count": 0})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _decode_all(records: list, options: dict, workers: int):
    """Yields ``(record, (image, lesions_input) | reason)`` in record order.

    Threads, not processes: the decoders (Pillow, pydicom's codecs, NumPy)
    release the GIL for their heavy parts, and threads need no pickling. At
    most ``2 * workers`` images are in flight, so memory stays bounded.
    """
    if workers <= 1:
        for record in records:
            yield record, _decode_one(record, options)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers,
                                               thread_name_prefix="mammojax-decode") as pool:
        pending = collections.deque()
        items = iter(records)
        for record in items:
            pending.append((record, pool.submit(_decode_one, record, options)))
            if len(pending) >= 2 * workers:
                done_record, future = pending.popleft()
                yield done_record, future.result()
        while pending:
            done_record, future = pending.popleft()
            yield done_record, future.result()


def _decode_one(record, options: dict):
    """Reads, screens and preprocesses one record; any failure becomes its reason.

    Like :func:`mammojax.data.screening.screen_files`, an unexpected decoder
    error costs one file, never the whole run.
    """
    from mammojax.data.preprocess import preprocess_image
    from mammojax.data.screening import screen_image

    try:
        loaded = screen_image(record.path, max_pixels=options["max_pixels"])
        result = preprocess_image(loaded.pixels, image_size=options["image_size"],
                                  orient=options["orient"],
                                  laterality=record.laterality or loaded.meta.laterality,
                                  crop_breast=options["crop_breast"])
    except MammojaxError as err:
        return getattr(err, "reason", None) or str(err)
    except MemoryError:
        return "oversized image: out of memory while decoding"
    except Exception as err:  # noqa: BLE001 - one broken file must not stop the cache
        return f"unreadable or corrupt file ({type(err).__name__})"
    image = np.asarray(result.image, dtype=np.float32)
    expected = (options["image_size"], options["image_size"], 1)
    if image.shape != expected:
        return f"preprocessing gave shape {image.shape}, expected {expected}"
    return image, [_lesion_to_input(lesion, result.geometry) for lesion in record.lesions]


def _lesion_to_input(lesion, geometry) -> dict:
    """A lesion's centre and radius in model-input pixels (None where unknown)."""
    row = col = None
    if lesion.row is not None and lesion.col is not None:
        row, col = (float(v) for v in geometry.to_input(lesion.row, lesion.col))
    radius = None if lesion.radius is None else float(geometry.radius_to_input(lesion.radius))
    return {"kind": lesion.kind, "row": row, "col": col, "radius": radius,
            "severity": lesion.severity}


def _record_to_json(record) -> dict:
    return {
        "path": str(record.path),
        "label": int(record.label),
        "patient_id": str(record.patient_id),
        "laterality": record.laterality,
        "view": record.view,
        "lesions": [dataclasses.asdict(lesion) for lesion in record.lesions],
        "extra": [list(item) for item in record.extra],
    }


def _record_from_json(data: dict):
    from mammojax.data.records import Lesion, Record

    return Record(path=data["path"], label=data["label"], patient_id=data["patient_id"],
                  laterality=data["laterality"], view=data["view"],
                  lesions=tuple(Lesion(**lesion) for lesion in data["lesions"]),
                  extra=tuple(tuple(item) for item in data["extra"]))
