"""Preparing a dataset: every file decoded once, in parallel, restartably, incrementally.

:func:`prepare_dataset` turns an adapter's records into a prepared dataset
(:mod:`mammojax.data.prepared`, a TFDS dataset in ArrayRecord format).

The work is cut into *chunks* of files. A chunk is decoded by one worker into
one ArrayRecord file in ``OUT/.chunks/`` and becomes final only when its
metadata file is renamed into place, so:

* a preparation killed at any moment keeps every finished chunk; the rerun
  decodes only the files of unfinished chunks (it reports how many of them an
  earlier run had started: ``redone``);
* files added to the raw folder later form new chunks; nothing finished is
  decoded again. A file is known by its record and its size and modification
  time, so an edited or replaced file is decoded again and its old example
  dropped;
* the dataset's shards are hard links to the chunk files, renamed for TFDS at
  the end of every run (cheap; a copy where the filesystem has no hard links);
* one preparation writes a dataset at a time (an flock on ``OUT/.chunks/lock``).
  Jobs started together on the same data (a sweep, a scheduler's batch) wait
  for the one that got the lock, showing its progress, then find the dataset
  finished and decode nothing. The kernel releases a dead owner's lock, so
  the next waiter takes over and decodes only the unfinished chunks.

Runners: ``local`` decodes chunks in ``workers`` processes (default: every
core); ``beam`` runs the same chunk function as an Apache Beam pipeline
(``pip install 'mammojax[beam]'``), locally on the DirectRunner or on a
cluster runner (Flink, Spark, Dataflow) given through ``beam_options``; then
``OUT`` must be on storage that every Beam worker can write (a shared
filesystem mounted at the same path). In a multi-host training run every
process decodes its own share of the chunks (``work_share``) and process 0
publishes the result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mammojax import runtime
from mammojax.data import screening
from mammojax.data.preparation_beam import require_beam, run_beam
from mammojax.data.prepared import (FORMAT_VERSION, METADATA_NAME, SPLIT, TFDS_VERSION, PixelOptions,
                                    PreparedDataset, example_features, open_prepared, read_metadata,
                                    record_from_json, record_to_json)
from mammojax.data.preprocess import preprocess_image
from mammojax.data.records import DatasetRecords, class_names, load_dataset
from mammojax.errors import MammojaxError
from mammojax.jsonio import write_json
from mammojax.progress import progress_bar

WORK_DIR = ".chunks"
CHUNK_BYTES = 64 << 20  # about 38 films at 1024x832: fine-grained restarts, few files
LOCAL_RUNNER, BEAM_RUNNER = "local", "beam"
_OPTIONS_NAME = "options.json"


@dataclasses.dataclass(frozen=True)
class PrepareReport:
    """What one :func:`prepare_dataset` call did."""

    path: Path
    examples: int  # in the finished dataset
    decoded: int  # files decoded by this call (new, changed or redone)
    reused: int  # files already prepared by an earlier call
    redone: int  # of ``decoded``: files an interrupted earlier call had started
    excluded: int  # files left out (by the adapter or while decoding)
    dropped: int  # examples of files no longer in the dataset (removed or changed)
    seconds: float

    def line(self) -> str:
        rate = self.decoded / self.seconds if self.seconds > 0 else 0.0
        return (f"prepared {self.path}: {self.examples} examples ({self.decoded} decoded, {self.reused} reused, "
                f"{self.redone} redone after an interrupted run, {self.dropped} dropped), "
                f"{self.excluded} excluded; {self.seconds:.1f} s, {rate:.2f} decoded images/s")


def default_workers() -> int:
    """Every core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def prepare_dataset(loaded, out: str | os.PathLike, *, dataset: str, class_names: Sequence[str],
                    options: PixelOptions, task: str = "default", workers: int | None = None, runner: str = LOCAL_RUNNER,
                    beam_options: Sequence[str] = (), progress: bool = True,
                    work_share: tuple[int, int] = (0, 1),
                    barrier: Callable[[str], None] | None = None) -> tuple[PreparedDataset, PrepareReport]:
    """Prepares ``loaded`` (an adapter's :class:`DatasetRecords`) into ``out``; returns it opened.

    ``out`` must be empty, missing, or a dataset prepared earlier from the
    same dataset with the same ``options`` (then only what is not prepared yet
    is decoded). Files that cannot be read or fail screening are excluded with
    their reason; one bad file never stops the run. With ``work_share=(i, n)``
    this process decodes every n-th chunk from i and ``barrier`` (called with a
    name by every process) separates planning, decoding and publishing;
    process 0 publishes.
    """
    started = time.time()
    out = Path(os.path.expanduser(str(out)))
    index, count = work_share
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise MammojaxError(f"--workers must be at least 1, got {workers}")
    if runner not in (LOCAL_RUNNER, BEAM_RUNNER):
        raise MammojaxError(f"unknown runner {runner!r}; valid: {LOCAL_RUNNER}, {BEAM_RUNNER}")
    if runner == BEAM_RUNNER:
        require_beam()  # before anything is written to ``out``
    if not hasattr(loaded, "records"):  # a plain list of records
        loaded = DatasetRecords(records=tuple(loaded))
    records = list(loaded.records)
    wanted = _store_options(dataset=dataset, task=task, class_names=class_names, options=options)
    store = _open_store(out, create=index == 0)
    # One process of a multi-host run writes the options before the barrier; unrelated
    # processes take the lock first, so none of them sees the store half-created.
    if count > 1:
        _check_options(out, store, wanted, write=index == 0)
    if barrier is not None:
        barrier("mammojax: prepared-dataset store ready")
    with _exclusive(store, enabled=count == 1, progress=progress):
        if count == 1:
            _check_options(out, store, wanted, write=True)
        keys = [record_key(record) for record in records]
        state = _StoreState.scan(store, clean=count == 1)
        if barrier is not None:
            barrier("mammojax: prepared-dataset store scanned")  # nobody writes before everyone has planned
        pending = [(key, record) for key, record in zip(keys, records) if key not in state.done]
        redone = sum(1 for key, _ in pending if key in state.interrupted)
        chunks = plan_chunks(pending, options=options, class_names=class_names, store=store,
                             workers=max(workers, count))
        mine = chunks[index::count]
        if count == 1:
            _write_plan(store, chunks)  # what processes waiting for this one show as progress
        _run_chunks(mine, runner=runner, workers=workers, beam_options=beam_options,
                    progress=progress and index == 0, total=len(pending))
        if barrier is not None:
            barrier("mammojax: prepared-dataset chunks written")
        if index == 0:
            dropped = _publish(out, store, keys, records, loaded, dataset=dataset, task=task,
                               class_names=class_names, options=options)
    if barrier is not None:
        barrier("mammojax: prepared dataset published")
    prepared = open_prepared(out)
    report = PrepareReport(path=out, examples=prepared.num_examples, decoded=len(pending),
                           reused=len(records) - len(pending), redone=redone,
                           excluded=len(prepared.excluded), dropped=dropped if index == 0 else 0,
                           seconds=time.time() - started)
    return prepared, report


def record_key(record) -> str:
    """Identifies a file's prepared example: its record and the file's size and modification time."""
    try:
        stat = os.stat(record.path)
        file_state = [stat.st_size, stat.st_mtime_ns]
    except OSError:
        file_state = None  # missing now: excluded while decoding, and known as such
    text = json.dumps({"record": record_to_json(record), "file": file_state}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _chunk_id(keys: Sequence[str]) -> str:
    """A chunk's name: a hash of the keys of the files it holds, in order."""
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def plan_chunks(pending: Sequence[tuple[str, object]], *, options: PixelOptions, class_names, store: Path,
                workers: int) -> list[dict]:
    """The pending files cut into chunk specs (plain JSON-able dicts, so Beam and process pools can ship them).

    Chunks hold at most ``CHUNK_BYTES`` of images and are small enough that
    every worker gets several, so no worker idles at the end.
    """
    if not pending:
        return []
    image_bytes = options.image_shape[0] * options.image_shape[1] * 2
    size = max(1, min(CHUNK_BYTES // image_bytes, math.ceil(len(pending) / (4 * workers))))
    chunks = []
    for start in range(0, len(pending), size):
        part = pending[start:start + size]
        keys = [key for key, _ in part]
        chunk_id = _chunk_id(keys)
        chunks.append({"id": chunk_id, "store": str(store), "keys": keys,
                       "records": [record_to_json(record) for _, record in part],
                       "options": options.to_json(), "class_names": list(class_names)})
    return chunks


def write_chunk(spec: dict, progress_queue=None) -> dict:
    """Decodes one chunk into ``<store>/chunk-<id>.array_record`` (+ its ``.json``); returns the counts.

    A pure function of its spec: a process pool and a Beam worker call it the
    same way. The metadata file is renamed into place last, so a chunk exists
    only when it is whole.
    """
    store, chunk_id = Path(spec["store"]), spec["id"]
    options = PixelOptions.from_json(spec["options"])
    started = store / f"started-{chunk_id}.json"
    started.write_text(json.dumps(spec["keys"]))

    def decoded():
        for key, data in zip(spec["keys"], spec["records"]):
            record = record_from_json(data)
            yield key, record, decode_record(record, options)
            if progress_queue is not None:
                progress_queue.put(1)

    counts = _write_chunk_file(store, chunk_id, decoded(), options=options, class_names=spec["class_names"])
    started.unlink(missing_ok=True)
    return counts


def _write_chunk_file(store: Path, chunk_id: str, outcomes, *, options: PixelOptions, class_names) -> dict:
    """Writes ``(key, record, (image, lesions_input) | reason)`` items as chunk ``chunk_id``."""
    from array_record.python.array_record_module import ArrayRecordWriter

    features = example_features(options.image_shape, class_names)
    tmp_data = store / f"tmp-{chunk_id}-{os.getpid()}-{uuid.uuid4().hex[:6]}.array_record"
    examples, excluded = [], []
    # group_size:1: every example is its own compressed group, so reading one by index reads only it.
    writer = ArrayRecordWriter(str(tmp_data), "group_size:1")
    try:
        for key, record, outcome in outcomes:
            if isinstance(outcome, str):
                excluded.append({"key": key, "path": record.path, "reason": str(outcome),
                                 "retry": isinstance(outcome, Unexpected)})
            else:
                image, lesions_input = outcome
                writer.write(features.serialize_example(_example(record, image, lesions_input)))
                examples.append({"key": key, "record": record_to_json(record), "lesions_input": lesions_input})
    finally:
        writer.close()
    if examples:
        os.replace(tmp_data, store / f"chunk-{chunk_id}.array_record")
    else:
        tmp_data.unlink()
    meta = {"id": chunk_id, "examples": examples, "excluded": excluded}
    write_json(store / f"chunk-{chunk_id}.json", meta, indent=None, atomic=True)  # last: the chunk now exists
    return {"examples": len(examples), "excluded": len(excluded)}


def write_arrays(out: str | os.PathLike, records: Sequence, images: np.ndarray, lesions_input: Sequence, *,
                 dataset: str, class_names: Sequence[str]) -> PreparedDataset:
    """A prepared dataset from images that are already model input (``(N, H, W, 1)``), without decoding.

    For data made in memory (tests, simulations): the result is the same
    kind of TFDS dataset :func:`prepare_dataset` writes.
    """
    out = Path(out)
    images = np.asarray(images, np.float32)
    options = PixelOptions(image_shape=tuple(images.shape[1:3]))
    store = _open_store(out, create=True)
    _check_options(out, store, _store_options(dataset=dataset, task="default", class_names=class_names,
                                              options=options), write=True)
    keys = [record_key(record) for record in records]
    items = ((key, record, (image, list(lesions)))
             for key, record, image, lesions in zip(keys, records, images, lesions_input))
    chunk_id = _chunk_id(keys)
    _write_chunk_file(store, chunk_id, items, options=options, class_names=class_names)

    _publish(out, store, keys, list(records), DatasetRecords(records=tuple(records)), dataset=dataset,
             task="default", class_names=class_names, options=options)
    return open_prepared(out)


class Unexpected(str):
    """A reason for leaving a file out that may not hold next time (memory, a decoder's or our bug):
    the file is excluded from this run but decoded again by the next one."""


def decode_record(record, options: PixelOptions):
    """``(image (H, W, 1) float32, lesions in input pixels)``, or the reason the file is left out.

    Like :func:`mammojax.data.screening.screen_files`, an unexpected decoder
    error costs one file, never the whole run.
    """
    try:
        loaded = screening.screen_image(record.path, max_pixels=options.max_pixels)
        result = preprocess_image(loaded.pixels, laterality=record.laterality or loaded.meta.laterality,
                                  **options.preprocess_kwargs())
    except MammojaxError as err:
        return getattr(err, "reason", None) or str(err)
    except MemoryError:
        return Unexpected("oversized image: out of memory while decoding")
    except Exception as err:  # noqa: BLE001 - one broken file must not stop the preparation
        return Unexpected(f"unreadable or corrupt file ({type(err).__name__})")
    image = np.asarray(result.image, dtype=np.float32)
    expected = (*options.image_shape, 1)
    if image.shape != expected:
        return f"preprocessing gave shape {image.shape}, expected {expected}"
    return image, [_lesion_to_input(lesion, result.geometry) for lesion in record.lesions]


def _lesion_to_input(lesion, geometry) -> dict:
    """A lesion's centre and radius in model-input pixels (None where unknown)."""
    row = col = None
    if lesion.row is not None and lesion.col is not None:
        row, col = (float(v) for v in geometry.to_input(lesion.row, lesion.col))
    radius = None if lesion.radius is None else float(geometry.radius_to_input(lesion.radius))
    return {"kind": lesion.kind, "row": row, "col": col, "radius": radius, "severity": lesion.severity}


def _example(record, image: np.ndarray, lesions_input: list[dict]) -> dict:
    nan = float("nan")
    return {
        "image": image.astype(np.float16),
        "label": int(record.label),
        "patient_id": str(record.patient_id),
        "laterality": record.laterality or "",
        "view": record.view or "",
        "path": str(record.path),
        "lesions": {
            "kind": [lesion["kind"] or "" for lesion in lesions_input],
            "severity": [lesion["severity"] or "" for lesion in lesions_input],
            "row": np.array([nan if v["row"] is None else v["row"] for v in lesions_input], np.float32),
            "col": np.array([nan if v["col"] is None else v["col"] for v in lesions_input], np.float32),
            "radius": np.array([nan if v["radius"] is None else v["radius"] for v in lesions_input], np.float32),
        },
        "record": json.dumps(record_to_json(record), default=str),
    }


# ---------------------------------------------------------------------------
# The work store


@dataclasses.dataclass
class _StoreState:
    done: dict  # key -> chunk id, for every finished file (prepared or excluded)
    interrupted: set  # keys of chunks an earlier run started and never finished
    chunks: dict  # chunk id -> its metadata

    @classmethod
    def scan(cls, store: Path, *, clean: bool) -> "_StoreState":
        done, chunks, interrupted = {}, {}, set()
        for meta_path in sorted(store.glob("chunk-*.json")):
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                continue  # unreadable: its files are decoded again
            chunks[meta["id"]] = meta
            for entry in meta["examples"] + meta["excluded"]:
                if not entry.get("retry"):
                    done[entry["key"]] = meta["id"]
        for marker in store.glob("started-*.json"):
            with contextlib.suppress(OSError, ValueError):
                interrupted.update(json.loads(marker.read_text()))
            if clean:
                marker.unlink(missing_ok=True)
        if clean:  # leftovers of killed runs; only a lone preparer may remove them
            for leftover in [*store.glob("tmp-*"), *store.glob(".*.tmp-*")]:
                leftover.unlink(missing_ok=True)
        return cls(done=done, interrupted=interrupted - set(done), chunks=chunks)


def _store_options(*, dataset: str, task: str, class_names, options: PixelOptions) -> dict:
    """What a store records about how its examples were made; a later run must want the same."""
    return {"format": FORMAT_VERSION, "dataset": dataset, "task": task, "class_names": list(class_names),
            "options": options.to_json()}


def _open_store(out: Path, *, create: bool) -> Path:
    """``out/.chunks``, created if ``create``; a folder that holds anything else of the user's is refused."""
    store = out / WORK_DIR
    if out.exists() and not out.is_dir():
        raise MammojaxError(f"{out}: exists and is not a directory")
    existing = [p.name for p in out.iterdir()] if out.is_dir() else []
    # Only ``.chunks`` and no options yet: a store another process is creating right now.
    if any(name != WORK_DIR for name in existing) and not (store / _OPTIONS_NAME).is_file():
        raise MammojaxError(f"{out}: not empty and not a mammojax prepared dataset; choose another --out")
    if create:
        store.mkdir(parents=True, exist_ok=True)
    return store


def _check_options(out: Path, store: Path, wanted: dict, *, write: bool) -> None:
    """Refuses a store prepared with other options: nothing the user had is overwritten."""
    path = store / _OPTIONS_NAME
    if not path.is_file():
        if write:
            write_json(path, wanted, atomic=True)
        return
    try:
        have = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise MammojaxError(f"{path}: unreadable ({err})") from None
    if have != wanted:
        differences = ", ".join(f"{k}: {have.get(k)} (wanted {v})" for k, v in wanted.items() if have.get(k) != v)
        raise MammojaxError(f"{out}: holds a dataset prepared differently ({differences}); choose another --out")


_PLAN_NAME = "plan.json"
WAIT_POLL_SECONDS = 0.5


def _write_plan(store: Path, chunks: list[dict]) -> None:
    plan = {"pid": os.getpid(), "chunks": {spec["id"]: len(spec["keys"]) for spec in chunks}}
    write_json(store / _PLAN_NAME, plan, indent=None, atomic=True)


def _planned_progress(store: Path) -> tuple[int | None, int, int]:
    """``(owner pid, files of its plan in finished chunks, files planned)``, from the owner's ``plan.json``."""
    try:
        plan = json.loads((store / _PLAN_NAME).read_text())
    except (OSError, ValueError):
        return None, 0, 0
    planned = plan.get("chunks", {})
    done = sum(n for chunk_id, n in planned.items() if (store / f"chunk-{chunk_id}.json").is_file())
    return plan.get("pid"), done, sum(planned.values())


@contextlib.contextmanager
def _exclusive(store: Path, *, enabled: bool, progress: bool = True):
    """Only one preparation writes a store at a time; the others wait for it (showing its progress).

    The lock is an flock, so it dies with its process: a waiter then gets it,
    scans the store and finishes what the dead owner left.
    """
    if not enabled:
        yield
        return
    import fcntl
    import sys

    with open(store / "lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            _wait_for_lock(handle, store, progress=progress, stream=sys.stderr)
        try:
            yield
        finally:
            (store / _PLAN_NAME).unlink(missing_ok=True)


def _wait_for_lock(handle, store: Path, *, progress: bool, stream) -> None:
    import fcntl


    pid, done, total = _planned_progress(store)
    owner = f"process {pid}" if pid else "another process"
    print(f"mammojax: {store.parent}: {owner} is preparing it; waiting for it to finish "
          f"({done} of {total} files so far)", file=stream, flush=True)
    bar = progress_bar(total, desc="waiting for the preparation", initial=done,
                       enabled=None if progress else False)
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                time.sleep(WAIT_POLL_SECONDS)
            _, done, total = _planned_progress(store)
            if total != bar.total:
                bar.reset(total=total)
            bar.n = done
            bar.refresh()
    finally:
        bar.close()
    print(f"mammojax: {store.parent}: the other preparation ended; going on", file=stream, flush=True)


def _run_chunks(chunks: list[dict], *, runner: str, workers: int, beam_options: Sequence[str],
                progress: bool, total: int) -> None:
    if not chunks:
        return
    if runner == BEAM_RUNNER:
        run_beam(write_chunk, chunks, workers=workers, beam_options=beam_options)
        return
    bar = progress_bar(total, desc="preparing", enabled=None if progress else False)
    try:
        if workers == 1 or len(chunks) == 1:
            queue = _CountingQueue(bar)
            for spec in chunks:
                write_chunk(spec, queue)
            return
        _run_in_processes(chunks, workers, bar)
    finally:
        bar.close()


class _CountingQueue:
    def __init__(self, bar):
        self.bar = bar

    def put(self, n: int) -> None:
        self.bar.update(n)


def _run_in_processes(chunks: list[dict], workers: int, bar) -> None:
    """Chunks over ``workers`` spawned processes; per-image progress comes back through a queue.

    Spawned, not forked: the caller may already run JAX or TensorFlow
    threads, which a fork would copy half-locked.
    """
    import concurrent.futures
    import multiprocessing
    import queue as queue_module

    context = multiprocessing.get_context("spawn")
    manager = context.Manager()
    try:
        progress_queue = manager.Queue()
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(write_chunk, spec, progress_queue) for spec in chunks]
            pending = set(futures)
            while pending:
                done, pending = concurrent.futures.wait(pending, timeout=0.5)
                for future in done:
                    future.result()  # a worker's crash is the run's error
                with contextlib.suppress(queue_module.Empty):
                    while True:
                        bar.update(progress_queue.get_nowait())
    finally:
        manager.shutdown()


# ---------------------------------------------------------------------------
# Publishing the TFDS dataset


def _publish(out: Path, store: Path, keys: list[str], records: list, loaded, *, dataset: str, task: str,
             class_names, options: PixelOptions) -> int:
    """Makes the current chunks the dataset: shards, TFDS metadata, ``mammojax.json``. Returns examples dropped."""
    state = _StoreState.scan(store, clean=False)
    position = {key: i for i, key in enumerate(keys)}
    live_chunks, dropped = [], 0
    for chunk_id, meta in state.chunks.items():
        stale = [e for e in meta["examples"] if e["key"] not in position]
        if stale:
            meta = _compact(store, meta, position)
            dropped += len(stale)
        live = [e for e in meta["examples"] + meta["excluded"] if e["key"] in position]
        if live:
            live_chunks.append((min(position[e["key"]] for e in live), meta))
    live_chunks.sort(key=lambda item: item[0])
    examples, excluded, shard_files = [], {}, []
    for _, meta in live_chunks:
        if meta["examples"]:
            shard_files.append(store / f"chunk-{meta['id']}.array_record")
            examples.extend(meta["examples"])
        for entry in meta["excluded"]:  # a retried file's latest outcome wins
            if entry["key"] in position and (entry["key"] not in excluded or not entry.get("retry")):
                excluded[entry["key"]] = entry
    prepared_keys = {e["key"] for e in examples}
    excluded = sorted((e for key, e in excluded.items() if key not in prepared_keys),
                      key=lambda e: position[e["key"]])
    if not examples:
        first = excluded[0] if excluded else None
        why = f" (first: {first['path']}: {first['reason']})" if first else ""
        raise MammojaxError(f"could not read any of the {len(records)} images{why}; nothing to prepare in {out}")
    tfds_name = f"mammojax_{dataset}".replace("-", "_")
    adapter_excluded = [{"path": e.path, "reason": e.reason, "source": e.source} for e in loaded.excluded]
    all_excluded = adapter_excluded + [{"path": e["path"], "reason": e["reason"], "source": "decoding"}
                                       for e in excluded]
    previous = read_metadata(out)
    if ([e.get("key") for e in previous.get("examples", ())] == [e["key"] for e in examples]
            and previous.get("excluded") == all_excluded and not dropped):
        return 0  # already published exactly so: leave the files readers may hold open alone
    shard_lengths = [len(meta["examples"]) for _, meta in live_chunks if meta["examples"]]
    _link_shards(out, tfds_name, shard_files)
    _write_tfds_metadata(out, tfds_name, shard_lengths, options=options, class_names=class_names,
                         dataset=dataset)
    metadata = {
        "format": FORMAT_VERSION, "dataset": dataset, "task": task, "tfds_name": tfds_name, "split": SPLIT,
        "class_names": list(class_names), "options": options.to_json(),
        "examples": [{"key": e["key"], "record": e["record"], "lesions_input": e["lesions_input"]}
                     for e in examples],
        "excluded": all_excluded,
    }
    write_json(out / METADATA_NAME, metadata, indent=None, atomic=True)  # last: readers see old or new
    return dropped


def _compact(store: Path, meta: dict, position: dict) -> dict:
    """Rewrites a chunk without the examples of files that left the dataset (no decoding)."""
    from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

    keep = [i for i, e in enumerate(meta["examples"]) if e["key"] in position]
    old_data = store / f"chunk-{meta['id']}.array_record"
    kept_examples = [meta["examples"][i] for i in keep]
    excluded = [e for e in meta["excluded"] if e["key"] in position]
    new_id = _chunk_id([e["key"] for e in kept_examples + excluded])
    if kept_examples:
        reader = ArrayRecordReader(str(old_data))
        try:
            payloads = reader.read(keep)
        finally:
            reader.close()
        tmp = store / f"tmp-{new_id}-{os.getpid()}.array_record"
        writer = ArrayRecordWriter(str(tmp), "group_size:1")
        try:
            for payload in payloads:
                writer.write(payload)
        finally:
            writer.close()
        os.replace(tmp, store / f"chunk-{new_id}.array_record")
    new_meta = {"id": new_id, "examples": kept_examples, "excluded": excluded}
    write_json(store / f"chunk-{new_id}.json", new_meta, indent=None, atomic=True)
    if new_id != meta["id"]:
        (store / f"chunk-{meta['id']}.json").unlink(missing_ok=True)
        old_data.unlink(missing_ok=True)
    return new_meta


def _link_shards(out: Path, tfds_name: str, shard_files: list[Path]) -> None:
    """Hard-links the chunk files under TFDS's shard names (replacing the previous run's names)."""
    for old in out.glob(f"{tfds_name}-{SPLIT}.array_record-*"):
        old.unlink()
    total = len(shard_files)
    for i, source in enumerate(shard_files):
        target = out / f"{tfds_name}-{SPLIT}.array_record-{i:05d}-of-{total:05d}"
        try:
            os.link(source, target)
        except OSError:  # no hard links on this filesystem: a copy costs space, not correctness
            shutil.copyfile(source, target)


def _write_tfds_metadata(out: Path, tfds_name: str, shard_lengths: list[int], *, options: PixelOptions,
                         class_names, dataset: str) -> None:
    import tensorflow_datasets as tfds

    template = tfds.core.ShardedFileTemplate(
        data_dir=tfds.core.Path(out), template=tfds.core.naming.DEFAULT_FILENAME_TEMPLATE,
        dataset_name=tfds_name, split=SPLIT, filetype_suffix="array_record")
    num_bytes = sum(p.stat().st_size for p in out.glob(f"{tfds_name}-{SPLIT}.array_record-*"))
    split = tfds.core.SplitInfo(name=SPLIT, shard_lengths=shard_lengths, num_bytes=num_bytes,
                                filename_template=template)
    height, width = options.image_shape
    description = (f"{dataset} prepared by mammojax: {height}x{width} float16 z-scored images "
                   f"(orient={options.orient}, crop_breast={options.crop_breast}); "
                   f"labels {', '.join(class_names)}. Read with tfds.builder_from_directory(DIR)"
                   f".as_data_source('{SPLIT}').")
    tfds.folder_dataset.write_metadata(
        data_dir=str(out), features=example_features(options.image_shape, class_names), split_infos=[split],
        filename_template=template, version=TFDS_VERSION, description=description, check_data=False)


def default_location(root: str | os.PathLike | None, *, dataset: str, data_dir, task: str, adapter_options: dict,
                     options: PixelOptions) -> Path:
    """Where a dataset is prepared when the user names no directory: one folder per source and pixel options.

    Keyed by what decides the examples (dataset, task, the data directory's
    absolute path, adapter options, pixel options) and not by the file list,
    so a grown data directory updates the same prepared dataset incrementally.
    """
    root = Path(os.path.expanduser(str(root))) if root else runtime.default_cache_dir() / "prepared"
    source = os.path.abspath(os.path.expanduser(str(data_dir))) if data_dir else ""
    text = json.dumps({"format": FORMAT_VERSION, "dataset": dataset, "task": task, "data_dir": source,
                       "adapter_options": adapter_options, "options": options.to_json()},
                      sort_keys=True, default=str)
    height, width = options.image_shape
    return root / f"{dataset}-{height}x{width}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def prepare_source(dataset: str, data_dir, *, task: str = "default", adapter_options: dict | None = None,
                   options: PixelOptions, out: str | os.PathLike | None = None,
                   root: str | os.PathLike | None = None, loaded=None,
                   **prepare_kwargs) -> tuple[PreparedDataset, PrepareReport]:
    """Loads dataset ``dataset`` through its adapter and prepares it into ``out``.

    Without ``out`` it goes to :func:`default_location` under ``root`` (default:
    the user cache), where the next call with the same source finds it.
    ``loaded`` skips the adapter when the caller has the records already.
    ``prepare_kwargs`` go to :func:`prepare_dataset` (workers, runner, progress, ...).
    """
    adapter_options = dict(adapter_options or {})
    if loaded is None:
        loaded = load_dataset(dataset, data_dir, task=task, **adapter_options)
    if out is None:
        out = default_location(root, dataset=dataset, data_dir=data_dir, task=task,
                               adapter_options=adapter_options, options=options)
    return prepare_dataset(loaded, out, dataset=dataset, task=task, class_names=class_names(dataset, task),
                           options=options, **prepare_kwargs)
