"""Inference checkpoints: the one on-disk format every command accepts.

A checkpoint is a directory::

    CKPT/
      mammojax.json   # model name, classes, preprocessing, tau, temperature, ...
                      # and the size + sha256 of every file under variables/
      variables/      # orbax StandardCheckpointer: {"params", "batch_stats"}

``mammojax train`` writes one to ``WORKDIR/best`` (and keeps its own orbax
CheckpointManager for resuming); ``mammojax convert-weights`` writes one too.
:func:`load_checkpoint` accepts either such a directory or a training workdir
(it then uses ``WORKDIR/best``). Nothing is ever unpickled: arrays go through
orbax, metadata through JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mammojax.data.preprocess import image_size_of, input_shape
from mammojax.data.records import DEFAULT_CLASS_NAMES, class_names
from mammojax.errors import CheckpointError, ConfigError
from mammojax.evaluation.operating_points import read_operating_points
from mammojax.film_scoring import film_scoring_from_config
from mammojax.jsonio import write_json
from mammojax.workdir import Workdir

META_FILE = "mammojax.json"
VARIABLES_DIR = "variables"
VARIABLES_FILES_KEY = "variables_files"  # meta: size and sha256 of each variables file
FORMAT_VERSION = 1


@dataclasses.dataclass
class Checkpoint:
    """A loaded checkpoint: the Flax module, its variables and metadata."""

    model: Any  # flax.linen.Module
    variables: dict  # {"params": ..., "batch_stats": ...}
    meta: dict
    path: Path

    @property
    def model_name(self) -> str:
        return self.meta["model"]["name"]

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of the model input (see :func:`input_shape_of`)."""
        return input_shape_of(self.meta)

    @property
    def image_size(self) -> int | str:
        """The ``data.image_size`` it was trained at: S for a square input, else "HxW"."""
        return image_size_of(self.image_shape)

    @property
    def tau(self) -> float:
        """The image-level operating point (see :attr:`operating_points`)."""
        return self.operating_points["image"].tau

    @property
    def temperature(self) -> float:
        return self.operating_points["image"].temperature

    @property
    def offset(self) -> float:
        """The image level's calibration offset (``sigmoid(margin / T + offset)``; 0 before it existed)."""
        return self.operating_points["image"].offset

    @property
    def operating_points(self) -> dict:
        """Tau, temperature and offset per level (mammojax.evaluation.operating_points, its one reader)."""
        return read_operating_points(self.meta)

    @property
    def class_names(self) -> list[str]:
        """Names of class 0 and class 1 (the positive class), as the training task defined them."""
        return list(self.meta.get("class_names") or DEFAULT_CLASS_NAMES)

    @property
    def positive_class(self) -> str:
        """The name of what the probability is the probability of (``"abnormal"``, ``"malignant"``...)."""
        return self.class_names[1]

    @property
    def patient_aggregate(self) -> str:
        """How a patient's image scores become hers (mammojax.evaluation.aggregate)."""
        return str(self.meta.get("patient_aggregate", "max"))

    @property
    def preprocess_options(self) -> dict:
        """Keyword arguments for mammojax.data.preprocess.preprocess_image (and eval's cache).

        ``image_size`` is :attr:`image_size` (the int S for a square input),
        which every consumer parses with ``input_shape``.
        """
        d = self.meta["data"]
        # Checkpoints from before fix_inverted read their films as they were trained: as given.
        return {"image_size": self.image_size, "orient": bool(d.get("orient", False)),
                "crop_breast": bool(d.get("crop_breast", False)),
                "fix_inverted": bool(d.get("fix_inverted", False))}


def input_shape_of(meta: dict) -> tuple[int, int]:
    """(H, W) of a checkpoint's model input.

    ``data.image_size`` holds S for a square input (every checkpoint written
    before non-square inputs holds an int) and "HxW" otherwise.
    """
    return input_shape(meta["data"]["image_size"], name="data.image_size")


def make_meta(config, *, tau: float = 0.5, temperature: float = 1.0, extra: dict | None = None) -> dict:
    """Metadata for a checkpoint trained with ``config`` (a ConfigDict).

    ``scoring`` says how its films are scored (:class:`mammojax.scoring.FilmScoring`):
    tau and the temperature were fitted on films scored that way. ``class_names``
    are the training task's (:func:`mammojax.data.records.class_names`), so every
    output names the classes as the data defined them ("abnormal" for MIAS).
    """
    meta = {
        "format": FORMAT_VERSION,
        "model": {"name": config.model.name, "num_classes": int(config.model.num_classes),
                  "head_pooling": config.model.head_pooling},
        "data": {"image_size": image_size_of(config.data.image_size), "orient": bool(config.data.orient),
                 "crop_breast": bool(config.data.crop_breast), "fix_inverted": bool(config.data.fix_inverted),
                 "dataset": config.data.dataset,
                 "task": config.data.task},
        "tau": float(tau),
        "temperature": float(temperature),
        "threshold_policy": config.eval.threshold_policy,
        "patient_aggregate": config.eval.patient_aggregate,
        "class_names": list(class_names(config.data.dataset, config.data.task)),
        "scoring": film_scoring_from_config(config).to_meta(),
        "config": config.to_dict(),
    }
    if extra:
        meta.update(extra)
    return meta


def training_data_warning(meta: dict, *, dataset: str | None = None) -> str | None:
    """Why the data being scored look unlike the checkpoint's training data (one line), or None.

    The one rule ``predict``, ``eval`` and the web page apply: ``dataset`` is
    the dataset ``eval`` scores, None for files (``predict``, the page). A
    checkpoint trained only on synthetic phantoms (``data.dataset ==
    "synthetic"``) says nothing about real mammograms, so scoring files or any
    other dataset with it is flagged; it once called every real MIAS film
    positive without a word. Converted weights (``converted_from``) were never
    trained here, so their ``data`` entry is no evidence either way.
    """
    if "converted_from" in meta:
        return None
    trained_on = (meta.get("data") or {}).get("dataset")
    if trained_on == "synthetic" and dataset != "synthetic":
        scored = "these files" if dataset is None else f"dataset {dataset!r}"
        return (f"this checkpoint was trained on synthetic phantoms only: its scores of {scored} mean "
                "nothing if they are real mammograms (train on real films first, e.g. configs/mias.py)")
    return None


def save_checkpoint(directory: str | os.PathLike, variables: dict, meta: dict, *,
                    overwrite: bool = False) -> Path:
    """Writes a checkpoint atomically: a crash never leaves a half-written one.

    The checkpoint is built in a temporary sibling directory and renamed into
    place. An existing checkpoint is replaced only with ``overwrite=True``.
    """
    import jax
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    if directory.exists() and not overwrite:
        raise CheckpointError(f"{directory}: already exists; choose another path or pass overwrite")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        state = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
        state = jax.device_get(state)
        # Host arrays written by the calling process alone: in a multi-host run
        # only process 0 exports, so orbax must not wait for the others.
        me = jax.process_index()
        solo = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me},
                                                  barrier_sync_key_prefix=f"mammojax_export_{me}")
        with ocp.StandardCheckpointer(multiprocessing_options=solo) as ckptr:
            ckptr.save(tmp / VARIABLES_DIR, state)
            ckptr.wait_until_finished()
        meta = {**meta, VARIABLES_FILES_KEY: variables_digests(tmp / VARIABLES_DIR)}
        write_json(tmp / META_FILE, meta)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def variables_digests(variables_dir: Path) -> dict[str, list]:
    """``{relative path: [size, sha256]}`` of every file under ``variables_dir``."""
    files = sorted(p for p in Path(variables_dir).rglob("*") if p.is_file())
    return {p.relative_to(variables_dir).as_posix(): [p.stat().st_size, _sha256(p)] for p in files}


def verify_variables(directory: Path, meta: dict) -> None:
    """Refuses a checkpoint whose variables files were truncated, lost or altered.

    Checked before orbax reads anything: orbax 0.12 restores every array
    concurrently on a private event loop that it closes as soon as one read
    fails, and the tensorstore reads still in flight then complete against the
    closed loop ("Event loop is closed" warnings at exit). A damaged checkpoint
    must not get that far. Checkpoints written before the digests existed
    carry none and are read as before. Costs about 2 ms per MB.
    """
    root = directory / VARIABLES_DIR
    for relative, (size, digest) in (meta.get(VARIABLES_FILES_KEY) or {}).items():
        path = root / relative
        if not path.is_file():
            problem = "is missing"
        elif path.stat().st_size != size:
            problem = f"has {path.stat().st_size} bytes, expected {size}"
        elif _sha256(path) != digest:
            problem = "does not match its checksum"
        else:
            continue
        raise CheckpointError(f"{directory}: checkpoint variables damaged or truncated "
                              f"({VARIABLES_DIR}/{relative} {problem})")


def resolve_checkpoint_dir(path: str | os.PathLike) -> Path:
    """A checkpoint directory, or a training workdir whose ``best`` is used."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if (path / META_FILE).is_file():
        return path
    best = Workdir(path).best
    if (best / META_FILE).is_file():
        return best
    raise CheckpointError(
        f"{path}: not a mammojax checkpoint (no {META_FILE}); pass a checkpoint directory "
        "or a training workdir, or create one with `mammojax train` or `mammojax convert-weights`")


def read_meta(path: str | os.PathLike) -> dict:
    directory = resolve_checkpoint_dir(path)
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{directory / META_FILE}: unreadable checkpoint metadata ({err})") from None
    if meta.get("format") != FORMAT_VERSION or "model" not in meta:
        raise CheckpointError(f"{directory / META_FILE}: unsupported checkpoint format")
    try:
        input_shape_of(meta)  # every reader builds its input from it: a bad one fails here, naming the file
    except (KeyError, TypeError, ConfigError) as err:
        raise CheckpointError(f"{directory / META_FILE}: no usable input size ({err})") from None
    return meta


def load_checkpoint(path: str | os.PathLike, *, expect_model: str | None = None) -> Checkpoint:
    """Loads a checkpoint; its variables are checked against the model's shapes."""
    import jax
    import orbax.checkpoint as ocp

    # The model zoo imports JAX and flax at the top: this module stays light (read_meta, make_meta).
    from mammojax import models

    directory = resolve_checkpoint_dir(path)
    meta = read_meta(directory)
    name = meta["model"]["name"]
    if expect_model is not None and name != expect_model:
        raise CheckpointError(f"{directory}: checkpoint is for model {name!r}, not {expect_model!r}")
    model = models.create_model(name, num_classes=meta["model"]["num_classes"],
                                head_pooling=meta["model"].get("head_pooling", "avg"))
    shape = input_shape_of(meta)
    abstract = jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0), shape))
    abstract = {"params": abstract["params"], "batch_stats": abstract.get("batch_stats", {})}
    verify_variables(directory, meta)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            variables = ckptr.restore((directory / VARIABLES_DIR).absolute(), abstract)
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{directory}: variables do not match model {name!r} ({str(err).splitlines()[0][:200]})") from None
    except FileNotFoundError as err:
        raise CheckpointError(f"{directory}: checkpoint variables missing or truncated ({err})") from None
    return Checkpoint(model=model, variables=variables, meta=meta, path=directory)
