"""Training and evaluation batches from a prepared dataset (:mod:`mammojax.data.prepared`).

Training (:func:`train_batches`) is a tf.data pipeline kept on the CPU; every
batch is a pure function of ``(config.seed, epoch)``:

* the epoch's order (a permutation, or a class-balanced draw) is computed up
  front in NumPy from ``(seed, epoch)``, so it is exact over the whole dataset
  (no shuffle buffer) and ``start_step`` skips batches by slicing an index
  array, without reading a single image;
* each example's augmentation seed is derived from ``(seed, epoch, position in
  the epoch)`` and fed to stateless TF random ops, so results do not depend on
  thread timing, on how many examples were skipped, or on how many hosts share
  the global batch.

With explanation-guided training (``train.cam_loss_weight > 0``) each
training example also carries ``lesion_mask``: its lesion circles drawn in
model-input pixels (:func:`lesion_target`) and moved by the same augmentation
as the image; an example without a usable outline gets an all-zero mask, and
the guided loss leaves it out.

Both read examples by index, so a host of a multi-host run reads only the
examples of its own rows of each global batch.

Evaluation (:func:`eval_batches`) needs no augmentation, so it reads the
dataset without tf.data, one batch ahead on a thread, and pads the last batch
with a mask, so every example counts exactly once.

Importing this module does not import TensorFlow.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from mammojax.data.augment import train_augmentation
from mammojax.data.prepared import ExampleReader, PreparedDataset
from mammojax.data.preprocess import disc_mask
from mammojax.errors import ConfigError, MammojaxError
from mammojax.runtime import import_tensorflow

# Purpose ids keep the random streams for order and augmentation independent.
_ORDER_STREAM = 201
_AUGMENT_STREAM = 202
_PREFETCH_BATCHES = 2


def steps_per_epoch(cache: PreparedDataset, config) -> int:
    """Full training batches per epoch (the incomplete last batch is dropped)."""
    batch_size = int(config.train.batch_size)
    if batch_size < 1:
        raise ConfigError(f"train.batch_size must be positive, got {batch_size}")
    steps = cache.num_examples // batch_size
    if steps == 0:
        raise MammojaxError(f"{cache.path}: {cache.num_examples} training images are fewer than "
                            f"one batch of train.batch_size={batch_size}")
    return steps


def lesion_target(lesions_input, label: int, shape: tuple[int, int]) -> np.ndarray:
    """The guided loss's target of one training film: bool ``(H, W)`` in model-input pixels.

    The union of its lesion circles when the film is positive (label 1) and
    every one of its lesions has a centre and a radius; otherwise all False
    (no target: a negative film, a lesion given without a place or extent such
    as MIAS ``*NOTE 3*`` rows or CBIS-DDSM outlines, which the prepared dataset
    does not carry). An incomplete outline would count a real lesion's
    evidence as outside.
    """
    mask = np.zeros(shape, bool)
    if int(label) != 1 or not lesions_input:
        return mask
    for lesion in lesions_input:
        values = [lesion.get(k) for k in ("row", "col", "radius")]
        if any(v is None or not np.isfinite(float(v)) for v in values) or float(values[2]) <= 0:
            return np.zeros(shape, bool)
        mask |= disc_mask(shape, *values)
    return mask


def annotated_count(cache: PreparedDataset) -> int:
    """How many examples have a guided-loss target (:func:`lesion_target`); reads no image."""
    return sum(bool(lesion_target(lesions, label, cache.image_shape).any())
               for lesions, label in zip(cache.lesions_input, cache.labels))


def guided(config) -> bool:
    """Whether training batches carry lesion masks: ``train.cam_loss_weight > 0``."""
    return float(config.train.cam_loss_weight) > 0


def epoch_plan(cache: PreparedDataset, config, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The epoch's global example order and one augmentation seed per position.

    Returns ``indices`` ``(steps * B,)`` int64 (positions in the cache) and
    ``seeds`` ``(steps * B, 2)`` int64. With ``config.data.balanced_sampling``
    the indices are drawn with replacement so that each class is equally likely
    (the epoch keeps the usual length); otherwise they are a permutation.
    """
    steps = steps_per_epoch(cache, config)
    count = steps * int(config.train.batch_size)
    seed, epoch = int(config.seed), int(epoch)
    rng = np.random.default_rng([seed, _ORDER_STREAM, epoch])
    if bool(config.data.balanced_sampling):
        labels = cache.labels
        classes, class_counts = np.unique(labels, return_counts=True)
        weight_of_class = dict(zip(classes.tolist(), (1.0 / (len(classes) * class_counts)).tolist()))
        weights = np.array([weight_of_class[int(label)] for label in labels])
        indices = rng.choice(cache.num_examples, size=count, replace=True, p=weights / weights.sum())
    else:
        # Dropping the tail of a fresh permutation drops different examples each epoch.
        indices = rng.permutation(cache.num_examples)[:count]
    stream = int(np.random.default_rng([seed, _AUGMENT_STREAM, epoch]).integers(0, 2**62))
    seeds = np.stack([np.full(count, stream, np.int64), np.arange(count, dtype=np.int64)], axis=1)
    return indices.astype(np.int64), seeds


def train_batches(cache: PreparedDataset, config, *, epoch: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
    """One epoch of augmented training batches as NumPy dicts.

    Yields ``{"image": (b, S, S, 1) float32, "label": (b,) int32}`` (and, when
    :func:`guided`, ``"lesion_mask": (b, S, S) bool``, augmented with the image) where
    ``b = config.train.batch_size // process_count``: host ``process_index``
    gets its contiguous slice of each global batch, and the global batches are
    the same for any ``process_count``. The last incomplete batch is dropped so
    every batch has the same static shape (one jit compilation, even sharding
    over devices); a fresh permutation each epoch drops different examples.
    ``start_step`` resumes mid-epoch: batch ``k`` of the result equals batch
    ``start_step + k`` of the full epoch.
    """
    batch_size = int(config.train.batch_size)
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} is not in [0, {process_count})")
    if batch_size % process_count:
        raise ConfigError(f"train.batch_size={batch_size} is not divisible by the "
                          f"{process_count} processes")
    local = batch_size // process_count
    indices, seeds = epoch_plan(cache, config, epoch)
    steps = len(indices) // batch_size
    if not 0 <= start_step <= steps:
        raise ValueError(f"start_step={start_step} is outside the epoch's {steps} steps")
    lo, hi = process_index * local, (process_index + 1) * local
    indices = indices.reshape(steps, batch_size)[start_step:, lo:hi].reshape(-1)
    seeds = seeds.reshape(steps, batch_size, 2)[start_step:, lo:hi].reshape(-1, 2)
    if len(indices) == 0:
        return iter(())
    dataset = _train_dataset(cache, config, indices, seeds, local)
    return dataset.as_numpy_iterator()


def _train_dataset(cache: PreparedDataset, config, indices: np.ndarray, seeds: np.ndarray, batch_size: int):
    tf = import_tensorflow()
    height, width = cache.image_shape
    reader = ExampleReader(cache)
    augment = train_augmentation(config.augment)
    labels = cache.labels[indices].astype(np.int32)

    def read(index):
        return reader.get(int(index))

    def load_and_augment(index, seed, label):
        image = tf.numpy_function(read, [index], tf.float16, stateful=False)
        image = tf.cast(tf.ensure_shape(image, (height, width, 1)), tf.float32)
        return {"image": augment(image, seed), "label": label}

    if guided(config):
        def read_mask(index):
            i = int(index)
            return lesion_target(cache.lesions_input[i], int(cache.labels[i]), (height, width))[..., None] \
                .astype(np.float32)

        def load_and_augment(index, seed, label):  # noqa: F811 - the guided variant: the mask moves with the image
            image = tf.numpy_function(read, [index], tf.float16, stateful=False)
            image = tf.cast(tf.ensure_shape(image, (height, width, 1)), tf.float32)
            mask = tf.ensure_shape(tf.numpy_function(read_mask, [index], tf.float32, stateful=False),
                                   (height, width, 1))
            image, mask = augment(image, seed, mask=mask)
            return {"image": image, "label": label, "lesion_mask": mask[..., 0] > 0.5}

    # Order: shuffle -> map -> batch -> prefetch. The shuffle is the
    # precomputed index order (exact, and skippable without reading images);
    # map then runs per example in parallel (augmentation is per image, and
    # deterministic=True keeps the order); batch after map so each image gets
    # its own random parameters; prefetch last so whole batches are ready
    # while the accelerator runs the previous step.
    dataset = tf.data.Dataset.from_tensor_slices((indices, seeds, labels))
    # No Python control flow depends on tensors here: skip AutoGraph's rewrite.
    load_and_augment = tf.autograph.experimental.do_not_convert(load_and_augment)
    dataset = dataset.map(load_and_augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    return dataset.prefetch(_PREFETCH_BATCHES)


def eval_batches(cache: PreparedDataset, batch_size: int, *, prefetch: int = _PREFETCH_BATCHES) -> Iterator[dict]:
    """Every example once, in dataset order, in batches of exactly ``batch_size``.

    Yields ``{"image": (B, H, W, 1) float32, "label": (B,) int32, "mask": (B,)
    bool, "index": (B,) int32}``. The last batch is padded with zero images,
    label 0 and index -1, with ``mask`` False there, so shapes stay static and
    metrics that honour the mask count every example exactly once. A thread
    reads up to ``prefetch`` batches ahead while the caller scores.
    """
    if batch_size < 1:
        raise ConfigError(f"eval batch size must be positive, got {batch_size}")
    batches = _eval_batches(cache, batch_size)
    if prefetch < 1:
        return batches
    return _read_ahead(batches, prefetch)


def _eval_batches(cache: PreparedDataset, batch_size: int) -> Iterator[dict]:
    reader = ExampleReader(cache)
    height, width = cache.image_shape
    for start in range(0, cache.num_examples, batch_size):
        stop = min(start + batch_size, cache.num_examples)
        real = stop - start
        image = np.zeros((batch_size, height, width, 1), np.float32)
        image[:real] = reader.get_slice(start, stop)
        label = np.zeros(batch_size, np.int32)
        label[:real] = cache.labels[start:stop]
        index = np.full(batch_size, -1, np.int32)
        index[:real] = np.arange(start, stop, dtype=np.int32)
        yield {"image": image, "label": label, "mask": index >= 0, "index": index}


def _read_ahead(items: Iterator, depth: int) -> Iterator:
    """``items``, produced on a thread up to ``depth`` ahead; the producer's errors reach the consumer."""
    import queue
    import threading

    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(("done", done))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            buffer.put(("error", err))

    thread = threading.Thread(target=produce, name="mammojax-eval-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = buffer.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
