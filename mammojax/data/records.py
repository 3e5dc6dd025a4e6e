"""One record type for every dataset, and the entry point that loads them.

Each dataset adapter (``mammojax.data.adapters.*``) reads its own layout and
label conventions and returns the same :class:`DatasetRecords`: the images it
can use as :class:`Record` and the files it had to leave out as
:class:`Exclusion`, each with a reason. Everything downstream (splits, cache,
training, evaluation) sees only these types. They are defined in
:mod:`mammojax.data.record_types`, below the adapters that build them, and
imported from here; this module finds a dataset's adapter by name.
"""

from __future__ import annotations

import os
from pathlib import Path

from mammojax.data.adapters import ADAPTERS
from mammojax.data.record_types import (LESION_KINDS, DatasetRecords, Exclusion, Lesion, Record,  # noqa: F401
                                        Task)
from mammojax.errors import MammojaxError

# Names for a checkpoint or result whose metadata has none (written by hand): what a 0/1 label says.
DEFAULT_CLASS_NAMES = ("negative", "positive")


def load_dataset(name: str, data_dir: str | os.PathLike, *, task: str = "default",
                 **opts) -> DatasetRecords:
    """Loads dataset ``name`` from ``data_dir`` through its adapter.

    ``task`` picks the label definition ("default" is each dataset's usual
    one); ``opts`` are adapter options (e.g. ``birads3="negative"``). Unknown
    names, tasks or options and a missing ``data_dir`` raise ``MammojaxError``.
    """
    adapter, path = check_dataset_request(name, data_dir, task=task, options=opts)
    return adapter.load(path, task=task, **opts)


def check_dataset_request(name: str, data_dir: str | os.PathLike, *, task: str = "default",
                          options=()) -> tuple:
    """``(adapter, data path or None)`` for a :func:`load_dataset` call, or its
    one-line error: checks names and paths only, reads no data."""
    adapter = _adapter(name)
    path = Path(os.path.expanduser(str(data_dir))) if str(data_dir) else None
    if path is None and not adapter.data_dir_optional:
        raise MammojaxError(f"dataset {name!r} needs a data directory (--data-dir / data.data_dir)")
    if path is not None and not path.exists() and not adapter.data_dir_optional:
        raise MammojaxError(f"{path}: data directory not found (dataset {name!r})")
    dataset_task(name, task)
    unknown = sorted(set(options) - set(adapter.options))
    if unknown:
        valid = ", ".join(adapter.options) or "none"
        raise MammojaxError(
            f"dataset {name!r} has no option {', '.join(unknown)}; valid options: {valid}")
    return adapter, path


def dataset_task(name: str, task: str = "default") -> Task:
    """What label 0 and 1 mean for dataset ``name`` under ``task`` (``MammojaxError`` if unknown)."""
    adapter = _adapter(name)
    if task in adapter.task_errors:
        raise MammojaxError(f"dataset {name!r}, task {task!r}: {adapter.task_errors[task]}")
    if task not in adapter.tasks:
        raise MammojaxError(
            f"dataset {name!r} has no task {task!r}; valid tasks: {', '.join(adapter.tasks)}")
    return adapter.tasks[task]


def has_lesion_circles(name: str) -> bool:
    """Whether dataset ``name``'s records place lesions as circles (centre and radius): the
    targets of explanation-guided training. Unknown names raise ``MammojaxError``."""
    return _adapter(name).lesion_circles


def datasets_with_lesion_circles() -> tuple[str, ...]:
    return tuple(name for name, adapter in ADAPTERS.items() if adapter.lesion_circles)


def class_names(name: str, task: str = "default") -> tuple[str, str]:
    """The names of label 0 and label 1 for dataset ``name`` under ``task``, e.g. mias: normal, abnormal."""
    return dataset_task(name, task).class_names


def patient_from_file_name(path: str | os.PathLike) -> str | None:
    """The patient of a file whose name follows a known dataset's layout, else None.

    The adapters' own rules (``Adapter.patient_of_file``): a MIAS film
    ``mdbNNN`` belongs to woman ``(NNN + 1) // 2``, an INbreast DICOM to the
    patient token in its name. Only the file name is read, never the file.
    """
    for adapter in ADAPTERS.values():
        found = adapter.patient_of_file(Path(path)) if adapter.patient_of_file else None
        if found:
            return found
    return None


def _adapter(name: str):
    if name not in ADAPTERS:
        raise MammojaxError(f"unknown dataset {name!r}; valid names: {', '.join(ADAPTERS)}")
    return ADAPTERS[name]
