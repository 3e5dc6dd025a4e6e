"""One record type for every dataset, and the entry point that loads them.

Each dataset adapter (``mammojax.data.adapters.*``) reads its own layout and
label conventions and returns the same :class:`DatasetRecords`: the images it
can use as :class:`Record` and the files it had to leave out as
:class:`Exclusion`, each with a reason. Everything downstream (splits, cache,
training, evaluation) sees only these types.
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from mammojax.errors import MammojaxError

# Every adapter maps its own finding names onto these (adapters/_common.py
# ``lesion_kind``): "distortion" is architectural distortion; "other" covers
# skin or nipple retraction, skin thickening, lymph nodes and unnamed marks.
LESION_KINDS = ("mass", "calcification", "distortion", "asymmetry", "other")


@dataclass(frozen=True)
class Lesion:
    """One annotated finding, in original-image pixels with a top-left origin.

    ``row``/``col`` are the centre (``None`` when the dataset gives only a mask
    or no location, e.g. CBIS-DDSM masks, MIAS ``*NOTE 3*`` calcifications);
    ``radius`` is the radius of a circle enclosing the finding, in pixels.
    """

    kind: str  # one of LESION_KINDS
    row: float | None
    col: float | None
    radius: float | None = None
    mask_path: str | None = None
    severity: str | None = None  # "benign" | "malignant" | a BI-RADS string


@dataclass(frozen=True)
class Task:
    """What a dataset's 0/1 label means under one task: the one home of class names.

    ``class_names`` are the names of label 0 and label 1 as every output shows
    them (summaries, reports, CSVs, the page, the checkpoint); ``description``
    is one line for ``mammojax data summary``.
    """

    description: str
    class_names: tuple[str, str]


@dataclass(frozen=True)
class Record:
    """One image with its label and the patient it belongs to.

    ``label`` is 0/1 for the dataset's task; ``patient_id`` groups images that
    must stay in the same split; ``extra`` holds dataset-specific facts as
    ``(key, value)`` pairs (tissue, BI-RADS, official split...).
    """

    path: str
    label: int
    patient_id: str
    laterality: str | None = None  # "L" | "R"
    view: str | None = None  # "CC" | "MLO" (the family; extra "acquired_view" keeps ML, LM, AT...)
    lesions: tuple[Lesion, ...] = ()
    extra: tuple[tuple[str, Any], ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` in :attr:`extra`, or ``default``."""
        for name, value in self.extra:
            if name == key:
                return value
        return default


@dataclass(frozen=True)
class Exclusion:
    """A file that was left out, and why.

    ``reason`` is one short phrase shared by every file left out for the same
    cause (summaries count by it); ``source`` says where the decision came
    from for the per-file report, e.g. ``"INbreast.csv line 379"``.
    """

    path: str
    reason: str
    source: str = ""


# data summary lists a column's values one by one up to this many (site, machine, BI-RADS, ...).
MAX_LISTED_VALUES = 16


@dataclass(frozen=True)
class DatasetRecords:
    """What an adapter returns: usable records and excluded files.

    ``notes`` are counts an adapter wants in the summary beyond the generic
    ones, as ``(what, number)`` pairs (CBIS-DDSM: films merged from a Mass
    and a Calc CSV).
    """

    records: tuple[Record, ...]
    excluded: tuple[Exclusion, ...] = field(default=())
    notes: tuple[tuple[str, int], ...] = field(default=())

    def __post_init__(self):
        # Accept lists from adapters but keep the object immutable.
        object.__setattr__(self, "records", tuple(self.records))
        object.__setattr__(self, "excluded", tuple(self.excluded))
        object.__setattr__(self, "notes", tuple(self.notes))

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_patients(self) -> int:
        return len({r.patient_id for r in self.records})

    def label_counts(self) -> dict[int, int]:
        return dict(sorted(collections.Counter(r.label for r in self.records).items()))

    def view_counts(self) -> dict[str, int]:
        return _count(r.view for r in self.records)

    def laterality_counts(self) -> dict[str, int]:
        return _count(r.laterality for r in self.records)

    def exclusion_counts(self) -> dict[str, int]:
        """How many files were left out for each reason."""
        return dict(collections.Counter(e.reason for e in self.excluded).most_common())

    def column_summary(self) -> dict[str, dict]:
        """The adapter's extra columns (RSNA: site, machine, age, ...), per label.

        A column with at most ``MAX_LISTED_VALUES`` values gets a count per
        value and label; a numeric one with more gets its mean per label
        (women with cancer are older in RSNA: a shortcut to know about).
        """
        columns: dict[str, dict] = {}
        keys = sorted({key for r in self.records for key, _ in r.extra})
        for key in keys:
            pairs = [(str(r.label), dict(r.extra).get(key, "")) for r in self.records]
            values = {v for _, v in pairs if v != ""}
            if not values:
                continue
            if len(values) <= MAX_LISTED_VALUES:
                counts: dict = {}
                for label, value in pairs:
                    counts.setdefault(value or "blank", {}).setdefault(label, 0)
                    counts[value or "blank"][label] += 1
                columns[key] = {"counts": dict(sorted(counts.items()))}
                continue
            try:
                numbers = [(label, float(v)) for label, v in pairs if v != ""]
            except ValueError:
                columns[key] = {"distinct": len(values)}
                continue
            means = {label: round(sum(x for lab, x in numbers if lab == label)
                                  / sum(1 for lab, _ in numbers if lab == label), 2)
                     for label in sorted({lab for lab, _ in numbers})}
            columns[key] = {"mean_by_label": means, "missing": len(pairs) - len(numbers)}
        return columns

    def summary(self) -> dict[str, Any]:
        """Counts for reports and ``mammojax data summary --json``."""
        return {
            "images": len(self.records),
            "patients": self.num_patients,
            "labels": {str(k): v for k, v in self.label_counts().items()},
            "views": self.view_counts(),
            "laterality": self.laterality_counts(),
            "excluded": len(self.excluded),
            "exclusion_reasons": self.exclusion_counts(),
            "notes": dict(self.notes),
            "columns": self.column_summary(),
        }


def _count(values: Iterable[str | None]) -> dict[str, int]:
    counts = collections.Counter("unknown" if v is None else v for v in values)
    return dict(sorted(counts.items()))


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


def class_names(name: str, task: str = "default") -> tuple[str, str]:
    """The names of label 0 and label 1 for dataset ``name`` under ``task``, e.g. mias: normal, abnormal."""
    return dataset_task(name, task).class_names


def patient_from_file_name(path: str | os.PathLike) -> str | None:
    """The patient of a file whose name follows a known dataset's layout, else None.

    The adapters' own rules (``Adapter.patient_of_file``): a MIAS film
    ``mdbNNN`` belongs to woman ``(NNN + 1) // 2``, an INbreast DICOM to the
    patient token in its name. Only the file name is read, never the file.
    """
    from mammojax.data.adapters import ADAPTERS

    for adapter in ADAPTERS.values():
        found = adapter.patient_of_file(Path(path)) if adapter.patient_of_file else None
        if found:
            return found
    return None


def _adapter(name: str):
    from mammojax.data.adapters import ADAPTERS  # adapters import this module

    if name not in ADAPTERS:
        raise MammojaxError(f"unknown dataset {name!r}; valid names: {', '.join(ADAPTERS)}")
    return ADAPTERS[name]
