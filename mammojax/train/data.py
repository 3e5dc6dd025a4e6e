"""The data a training run needs: the prepared dataset, split patient-wise into views of it."""

from __future__ import annotations

import dataclasses

import numpy as np

from mammojax.data.preparation import prepare_source
from mammojax.data.prepared import PixelOptions, open_prepared
from mammojax.data.preprocess import image_size_of, input_shape
from mammojax.data.records import load_dataset
from mammojax.data.splits import records_of_split
from mammojax.errors import MammojaxError


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The training and validation films of a run: two views of one prepared dataset."""

    train: object  # mammojax.data.prepared.PreparedDataset
    val: object

    def class_weights(self, num_classes: int) -> np.ndarray:
        from mammojax.train.losses import inverse_frequency_weights  # imports JAX and optax at the top

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


def prepared_dataset(config, *, progress: bool = True):
    """The config's whole dataset, prepared once (``data.prepared``, or prepared now under ``data.prepared_root``).

    With ``data.prepared`` the data is what that dataset holds: its dataset
    name, task, image size, orient and crop_breast are written into
    ``config.data`` so the model and the checkpoint match them. Otherwise the dataset is prepared where the
    next run with the same source and pixel options finds it; in a run of
    several processes each decodes its own share and process 0 publishes.
    """
    import jax

    if config.data.prepared:
        prepared = open_prepared(config.data.prepared)
        _adopt(config, prepared)
        return prepared
    data_dir, options = dataset_options(config)
    loaded = _load_once_per_run(lambda: load_dataset(config.data.dataset, data_dir, task=config.data.task,
                                                     **options), writes_files=config.data.dataset == "synthetic")
    barrier = None
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        barrier = multihost_utils.sync_global_devices
    prepared, _ = prepare_source(
        config.data.dataset, data_dir, task=config.data.task, adapter_options=options,
        options=PixelOptions.from_config(config.data), root=config.data.prepared_root or None, loaded=loaded,
        workers=int(config.data.prepare_workers) or None, progress=progress,
        work_share=(jax.process_index(), jax.process_count()), barrier=barrier)
    return prepared


def adopt_prepared_options(config) -> None:
    """With ``data.prepared``, the config takes that dataset's name, task and pixel options."""
    if config.data.prepared:
        _adopt(config, open_prepared(config.data.prepared))


def _adopt(config, prepared) -> None:
    options = prepared.options
    config.data.dataset = prepared.name
    config.data.task = prepared.task
    config.data.image_size = image_size_of(options.image_shape)
    config.data.orient = options.orient
    config.data.crop_breast = options.crop_breast
    config.data.fix_inverted = options.fix_inverted


def prepare_training_data(config, workdir, *, progress: bool = True) -> TrainingData:
    """The config's dataset, prepared once and split patient-wise into training and validation views."""
    prepared = prepared_dataset(config, progress=progress)
    train_records, val_records = split_records(prepared.records, config)
    if not val_records:
        raise MammojaxError(f"dataset {config.data.dataset!r}: the validation split is empty; "
                            "raise data.val_fraction or add data")
    return TrainingData(train=prepared.select(train_records), val=prepared.select(val_records))
