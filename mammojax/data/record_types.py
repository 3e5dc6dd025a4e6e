"""What a dataset yields: one record type for every dataset.

Each dataset adapter (``mammojax.data.adapters.*``) builds these:
:class:`Record` for an image it can use, :class:`Exclusion` for a file it had
to leave out, both inside one :class:`DatasetRecords`; :class:`Task` says what
a label means. They live below the adapters (which build them) and below
:mod:`mammojax.data.records` (which finds the adapter for a dataset name and
re-exports these types, the names the rest of the package imports).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Iterable

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
