"""A user's own dataset as a CSV manifest.

Columns: ``path,label`` and optionally ``patient_id,laterality,view`` (a
header row is required). Paths are relative to the CSV's folder (absolute
ones are kept). Labels are 0 or 1. Without ``patient_id`` every image is its
own patient (the path stem), which is only right if no woman has two images:
add the column when she does, or splits will leak.

When a DICOM's row leaves ``laterality`` or ``view`` empty (or the columns
are absent), they come from its header (ImageLaterality, else Laterality;
ViewPosition, else ViewCodeSequence), read without pixel data. Views become
their family, CC or MLO (``_common.VIEW_FAMILIES``), the acquired one kept in
``extra["acquired_view"]``.

``data_dir`` is the CSV file, or a folder holding ``manifest.csv``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from mammojax.data.adapters._common import LATERALITIES, Adapter, read_csv_rows, view_fields
from mammojax.data.readers import detect_format
from mammojax.data.record_types import DatasetRecords, Exclusion, Record, Task
from mammojax.errors import ImageReadError, MammojaxError

COLUMNS = ("path", "label", "patient_id", "laterality", "view")  # what ``write_manifest`` writes
TASKS = {"default": Task("positive (label 1) vs negative (label 0), as the manifest says", ("negative", "positive"))}
LABELS = {"0": 0, "1": 1}


def load(data_dir: Path, *, task: str = "default") -> DatasetRecords:
    manifest = data_dir / "manifest.csv" if data_dir.is_dir() else data_dir
    if not manifest.is_file():
        raise MammojaxError(f"{manifest}: manifest CSV not found")
    root = manifest.parent
    records, excluded = [], []
    for line, row in read_csv_rows(manifest, required=("path", "label")):
        if not row["path"]:
            raise MammojaxError(f"{manifest}:{line}: empty path")
        label = LABELS.get(row["label"])
        if label is None:
            raise MammojaxError(f"{manifest}:{line}: label must be 0 or 1, got {row['label']!r}")
        side = row.get("laterality", "").upper()
        if side and side not in LATERALITIES:
            raise MammojaxError(f"{manifest}:{line}: laterality must be L or R, got {row['laterality']!r}")
        path = Path(row["path"])
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            excluded.append(Exclusion(str(path), "file not found", f"{manifest.name} line {line}"))
            continue
        laterality, view = LATERALITIES.get(side), row.get("view", "")
        if laterality is None or not view:
            header_side, header_view = _dicom_side_and_view(path)
            laterality, view = laterality or header_side, view or header_view
        view, view_extra = view_fields(view)
        records.append(Record(path=str(path), label=label, patient_id=row.get("patient_id") or path.stem,
                              laterality=laterality, view=view, extra=view_extra))
    return DatasetRecords(records, excluded)


def write_manifest(folder: Path, entries: list[dict]) -> Path:
    """``folder/manifest.csv`` with one row per entry (dicts keyed by ``COLUMNS``); returns its path."""
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for entry in entries:
            writer.writerow([entry[column] for column in COLUMNS])
    return path


def _dicom_side_and_view(path: Path) -> tuple[str | None, str | None]:
    """Laterality and view from a DICOM header (no pixels); (None, None) for other files."""
    try:
        if detect_format(path) != "dicom":
            return None, None
        # data.dicom imports pydicom at the top: loaded only when a DICOM header is read.
        from mammojax.data.dicom import safe_dicom_summary

        summary = safe_dicom_summary(path)
    except ImageReadError:
        return None, None  # unreadable: screening and caching report it
    return summary["laterality"], summary["view"]


ADAPTER = Adapter(load=load, tasks=TASKS, description="CSV manifest: path,label[,patient_id,laterality,view]")
