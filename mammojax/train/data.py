"""The data a training run needs: records -> patient-wise split -> decoded caches."""

from __future__ import annotations

import dataclasses

import numpy as np

from mammojax.data.preprocess import image_size_of, input_shape
from mammojax.errors import MammojaxError


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The training and validation films of a run, decoded (two caches, or views of one)."""

    train: object  # mammojax.data.cache.Cache
    val: object

    def class_weights(self, num_classes: int) -> np.ndarray:
        from mammojax.train.losses import inverse_frequency_weights

        return inverse_frequency_weights(self.train.labels, num_classes)


def dataset_options(config) -> tuple[str, dict]:
    """``(data_dir, adapter options)`` for ``load_dataset``."""
    options = {}
    if config.data.dataset == "synthetic":
        # Phantoms (square) come from the seed. Drawn at twice the input's longer
        # side (at least 64 px) so resizing still smooths them as it would a real
        # mammogram; without a data_dir they go to the user cache and are reused.
        options.update(count=int(config.data.synthetic_count), seed=int(config.seed),
                       size=max(64, 2 * max(input_shape(config.data.image_size))))
    return config.data.data_dir, options


def split_records(records, config):
    """The (train, val) record lists of a fixed split or of the configured k-fold."""
    from mammojax.data.splits import records_of_split

    return tuple(records_of_split(records, config.data, part, seed=int(config.seed)) for part in ("train", "val"))


def _load_once_per_run(load, *, writes_files: bool):
    """``load()``; when it writes files (synthetic phantoms) and several processes
    share the run, process 0 writes them first and the others read what it wrote,
    instead of all writing the same files at once."""
    import jax

    if not writes_files or jax.process_count() == 1:
        return load()
    from jax.experimental import multihost_utils

    loaded = load() if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices("mammojax: dataset files written")
    return loaded if loaded is not None else load()


def prepare_training_data(config, workdir, *, progress: bool = True) -> TrainingData:
    """The config's dataset, split patient-wise, decoded into the workdir's cache (or ``data.cache_dir``)."""
    from mammojax.data.cache import prepare_cache
    from mammojax.data.records import load_dataset
    from mammojax.workdir import Workdir

    data_dir, options = dataset_options(config)
    loaded = _load_once_per_run(lambda: load_dataset(config.data.dataset, data_dir, task=config.data.task,
                                                     **options), writes_files=config.data.dataset == "synthetic")
    train_records, val_records = split_records(loaded.records, config)
    if not val_records:
        raise MammojaxError(f"dataset {config.data.dataset!r}: the validation split is empty; "
                            "raise data.val_fraction or add data")
    # Canonical: any spelling of a square is the int S the cache (and its fingerprint) knows.
    cache_options = dict(cache_dir=str(Workdir(workdir).cache_dir(config)),
                         image_size=image_size_of(config.data.image_size),
                         orient=bool(config.data.orient), crop_breast=bool(config.data.crop_breast),
                         max_pixels=int(config.data.max_pixels), progress=progress)
    train = prepare_cache(train_records, **cache_options)
    val = prepare_cache(val_records, **cache_options)
    return TrainingData(train=train, val=val)
