"""Prepared datasets: every film decoded once, stored as a standard TFDS dataset.

Reading a mammogram (a 30 MB DICOM, a JPEG 2000 that takes a second to
decode) and resizing it costs far more than a training step waits for, and
every stage (training, validation, ``eval``, cross-validation folds) reads
the same films. :mod:`mammojax.data.preparation` runs ``read_image ->
preprocess_image`` once per file and writes the model-ready images here;
everything downstream reads this one dataset, and splits and folds are index
lists over it (:meth:`PreparedDataset.subset`), never new copies.

A prepared directory is a TFDS dataset in ArrayRecord format that any JAX or
TF code opens without mammojax::

    builder = tfds.builder_from_directory(DIR)
    source = builder.as_data_source("full")      # random access by index
    example = source[0]                          # {"image": (H, W, 1) float16, "label": ..., ...}

Layout of ``DIR``::

    dataset_info.json, features.json, label.labels.txt   TFDS metadata
    mammojax_<dataset>-full.array_record-0000i-of-0000n  the examples (hard links into .chunks/)
    mammojax.json                                       what mammojax needs without reading images:
                                                        pixel options, class names, every example's
                                                        record and lesions in input pixels, exclusions
    .chunks/                                            the restartable work store (preparation.py)

Features of one example (``example_features``): ``image`` (H, W, 1) float16,
the z-scored output of ``preprocess_image`` (a relative error of at most
2**-11, and ``preprocess_image`` already rounds to it); ``label`` (ClassLabel
with the task's class names); ``patient_id``, ``laterality``, ``view``,
``path`` (the source file, relative to the data directory when inside it);
``lesions`` (kind, severity and centre/radius in model-input pixels, NaN where
the source gives no location); ``record`` (the full record as JSON, original
coordinates and dataset-specific facts included).

Why ArrayRecord rather than TFRecord: it reads any example by index, so the
training pipeline shuffles exactly over the whole dataset and skips to a
resume point without reading images, and every host of a multi-host run reads
only the examples of its own rows.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from mammojax.data.preprocess import input_shape
from mammojax.data.records import Exclusion, Lesion, Record
from mammojax.errors import MammojaxError

FORMAT_VERSION = 2  # 2: the task is stored and checked
SPLIT = "full"  # one split: mammojax splits patient-wise itself ("all" means something else to TFDS)
METADATA_NAME = "mammojax.json"
TFDS_VERSION = "1.0.0"
STORAGE_DTYPE = np.dtype("<f2")


@dataclasses.dataclass(frozen=True)
class PixelOptions:
    """Everything that decides a prepared image's pixels; nothing else does.

    A config change outside these (seed, split fractions, folds, training
    settings) reuses the prepared dataset as it is.
    """

    image_shape: tuple[int, int]
    orient: bool = False
    crop_breast: bool = False
    max_pixels: int = 80_000_000
    fix_inverted: bool = False

    def to_json(self) -> dict:
        data = {"image_shape": list(self.image_shape), "orient": self.orient,
                "crop_breast": self.crop_breast, "max_pixels": self.max_pixels}
        if self.fix_inverted:  # only when on: datasets prepared before the option keep their identity
            data["fix_inverted"] = True
        return data

    @classmethod
    def from_json(cls, data: dict) -> "PixelOptions":
        return cls(image_shape=tuple(int(v) for v in data["image_shape"]), orient=bool(data["orient"]),
                   crop_breast=bool(data["crop_breast"]), max_pixels=int(data["max_pixels"]),
                   fix_inverted=bool(data.get("fix_inverted", False)))

    def preprocess_kwargs(self) -> dict:
        """The keyword arguments of :func:`mammojax.data.preprocess.preprocess_image` these options set."""
        return {"image_size": self.image_shape, "orient": self.orient, "crop_breast": self.crop_breast,
                "fix_inverted": self.fix_inverted}

    @classmethod
    def from_config(cls, data_config) -> "PixelOptions":
        """From a config's ``data`` block (a ConfigDict or the dict a checkpoint stores)."""
        get = data_config.get
        return cls(image_shape=input_shape(get("image_size")), orient=bool(get("orient", False)),
                   crop_breast=bool(get("crop_breast", False)),
                   max_pixels=int(get("max_pixels", 80_000_000) or 80_000_000),
                   fix_inverted=bool(get("fix_inverted", False)))


def example_features(image_shape: tuple[int, int], class_names: Sequence[str]):
    """The TFDS ``FeaturesDict`` of one prepared example (see the module docstring)."""
    import tensorflow_datasets as tfds

    features = tfds.features
    return features.FeaturesDict({
        "image": features.Tensor(shape=(*image_shape, 1), dtype=np.float16,
                                 encoding=features.Encoding.BYTES),
        "label": features.ClassLabel(names=list(class_names)),
        "patient_id": features.Text(),
        "laterality": features.Text(),
        "view": features.Text(),
        "path": features.Text(),
        "lesions": features.Sequence({
            "kind": features.Text(), "severity": features.Text(),
            "row": np.float32, "col": np.float32, "radius": np.float32}),
        "record": features.Text(),
    })


@dataclasses.dataclass(frozen=True, eq=False)
class PreparedDataset:
    """A prepared dataset (or a view of some of its examples): metadata in memory, images read on demand.

    ``records[i]``, ``labels[i]`` and ``patient_ids[i]`` describe example ``i``;
    ``lesions_input[i]`` lists its lesions in model-input pixel coordinates
    (dicts with ``kind``, ``row``, ``col``, ``radius`` (or None), ``severity``).
    """

    path: Path
    name: str
    task: str
    options: PixelOptions
    class_names: tuple[str, ...]
    records: tuple
    labels: np.ndarray
    patient_ids: tuple[str, ...]
    lesions_input: tuple[tuple[dict, ...], ...]
    excluded: tuple
    # Example i of this view is row rows[i] of the stored dataset (None: all, in order).
    rows: np.ndarray | None = None

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of every image."""
        return self.options.image_shape

    @property
    def num_examples(self) -> int:
        return len(self.records)

    def __len__(self) -> int:
        return self.num_examples

    def stored_rows(self) -> np.ndarray:
        """Row of each example in the stored dataset."""
        return np.arange(self.num_examples) if self.rows is None else self.rows

    def subset(self, indices: Sequence[int] | np.ndarray) -> "PreparedDataset":
        """Examples ``indices``, in that order, as a view over the same files.

        Nothing is copied or decoded again: splits and cross-validation folds
        are views of one prepared dataset.
        """
        indices = np.asarray(indices, np.int64).reshape(-1)
        return dataclasses.replace(
            self, records=tuple(self.records[i] for i in indices), labels=self.labels[indices],
            patient_ids=tuple(self.patient_ids[i] for i in indices),
            lesions_input=tuple(self.lesions_input[i] for i in indices),
            rows=self.stored_rows()[indices])

    def indices_of(self, records) -> np.ndarray:
        """Positions of ``records`` (records of this dataset, matched by path)."""
        position = {record.path: i for i, record in enumerate(self.records)}
        try:
            return np.asarray([position[record.path] for record in records], np.int64)
        except KeyError as err:
            raise MammojaxError(f"{self.path}: {err.args[0]} is not in this prepared dataset") from None

    def select(self, records) -> "PreparedDataset":
        """The view holding ``records``, in their order."""
        return self.subset(self.indices_of(records))

    def reader(self) -> "ExampleReader":
        return ExampleReader(self)

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Examples ``indices`` as float32 ``(len(indices), H, W, 1)``."""
        reader = self.reader()
        out = np.zeros((len(indices), *self.image_shape, 1), np.float32)
        for row, index in enumerate(indices):
            out[row] = reader.get(int(index))
        return out

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Every image and label in memory: ``(N, H, W, 1)`` float32, ``(N,)`` int32.

        For small datasets and tests; large ones stream through
        :mod:`mammojax.data.pipeline`.
        """
        return self.read(np.arange(self.num_examples)), self.labels.copy()


class ExampleReader:
    """Random access to a prepared dataset's images by example index (float16).

    Reads through TFDS's own data source, as any other reader of the dataset
    would; thread-safe, so tf.data may call it from parallel map threads.
    """

    def __init__(self, dataset: PreparedDataset):
        self._source = _data_source(dataset.path)
        self._rows = dataset.stored_rows()
        self._shape = (*dataset.image_shape, 1)

    def get(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self._rows):
            raise IndexError(f"example {index} is outside the dataset")
        image = np.asarray(self._source[int(self._rows[index])]["image"])
        if image.shape != self._shape:
            raise MammojaxError(f"prepared example {index} has shape {image.shape}, expected {self._shape}")
        return image

    def get_slice(self, start: int, stop: int) -> np.ndarray:
        """Examples ``start:stop`` as one float16 array."""
        if stop <= start:
            return np.zeros((0, *self._shape), STORAGE_DTYPE)
        return np.stack([self.get(i) for i in range(start, stop)])


_SOURCES: dict = {}


def _data_source(path: Path):
    """TFDS's data source of ``path``'s one split, opened once per process and directory state."""
    key = (str(path), os.stat(path / "dataset_info.json").st_mtime_ns)
    if key not in _SOURCES:
        import tensorflow_datasets as tfds

        try:
            builder = tfds.builder_from_directory(str(path))
            _SOURCES[key] = builder.as_data_source(SPLIT)
        except Exception as err:  # noqa: BLE001 - TFDS raises many types for a damaged directory
            raise MammojaxError(f"{path}: cannot open the prepared dataset ({type(err).__name__}: "
                                f"{str(err).splitlines()[0] if str(err) else ''}); prepare it again") from None
    return _SOURCES[key]


def is_prepared(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a finished prepared dataset."""
    return (Path(path) / METADATA_NAME).is_file() and (Path(path) / "dataset_info.json").is_file()


def open_prepared(path: str | os.PathLike) -> PreparedDataset:
    """Opens a prepared dataset directory (``MammojaxError`` naming it when it is not one)."""
    path = Path(os.path.expanduser(str(path)))
    meta_path = path / METADATA_NAME
    if not path.is_dir():
        raise MammojaxError(f"{path}: prepared dataset directory not found")
    if not meta_path.is_file():
        raise MammojaxError(f"{path}: not a mammojax prepared dataset (no {METADATA_NAME}); "
                            "make one with `mammojax data prepare --out DIR`")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise MammojaxError(f"{meta_path}: unreadable ({err}); prepare the dataset again") from None
    if meta.get("format") != FORMAT_VERSION:
        raise MammojaxError(f"{meta_path}: prepared format {meta.get('format')} is not {FORMAT_VERSION}; "
                            "prepare the dataset again")
    examples = meta["examples"]
    records = tuple(record_from_json(e["record"]) for e in examples)
    return PreparedDataset(
        path=path, name=str(meta["dataset"]), task=str(meta.get("task", "default")), options=PixelOptions.from_json(meta["options"]),
        class_names=tuple(meta["class_names"]), records=records,
        labels=np.array([r.label for r in records], dtype=np.int32),
        patient_ids=tuple(str(r.patient_id) for r in records),
        lesions_input=tuple(tuple(e["lesions_input"]) for e in examples),
        excluded=tuple(Exclusion(x["path"], x["reason"], x.get("source", "")) for x in meta["excluded"]))


def read_metadata(path: str | os.PathLike) -> dict:
    """``mammojax.json`` of a prepared dataset, as a dict (``{}`` when absent)."""
    meta_path = Path(path) / METADATA_NAME
    try:
        return json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return {}


def record_to_json(record) -> dict:
    return {
        "path": str(record.path),
        "label": int(record.label),
        "patient_id": str(record.patient_id),
        "laterality": record.laterality,
        "view": record.view,
        "lesions": [dataclasses.asdict(lesion) for lesion in record.lesions],
        "extra": [list(item) for item in record.extra],
    }


def record_from_json(data: dict):
    return Record(path=data["path"], label=data["label"], patient_id=data["patient_id"],
                  laterality=data["laterality"], view=data["view"],
                  lesions=tuple(Lesion(**lesion) for lesion in data["lesions"]),
                  extra=tuple(tuple(item) for item in data["extra"]))
