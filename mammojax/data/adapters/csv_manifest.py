"""A user's own dataset as a CSV manifest.

Columns: ``path,label`` and optionally ``patient_id,laterality,view`` (a
header row is required). Paths are relative to the CSV's folder (absolute
ones are kept). Labels are 0 or 1. Without ``patient_id`` every image is its
own patient (the path stem), which is only right if no woman has two images:
add the column when she does, or splits will leak.

``data_dir`` is the CSV file, or a folder holding ``manifest.csv``.
"""

from __future__ import annotations

from pathlib import Path

from mammojax.data.adapters._common import Adapter, read_csv_rows
from mammojax.data.records import DatasetRecords, Exclusion, Record
from mammojax.errors import MammojaxError

TASKS = ("default",)
LABELS = {"0": 0, "1": 1}
LATERALITIES = {"L": "L", "LEFT": "L", "R": "R", "RIGHT": "R", "": None}


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
        if side not in LATERALITIES:
            raise MammojaxError(f"{manifest}:{line}: laterality must be L or R, got {row['laterality']!r}")
        path = Path(row["path"])
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            excluded.append(Exclusion(str(path), f"{manifest.name} line {line}: file not found"))
            continue
        records.append(Record(path=str(path), label=label,
                              patient_id=row.get("patient_id") or path.stem,
                              laterality=LATERALITIES[side], view=row.get("view", "").upper() or None))
    return DatasetRecords(records, excluded)


ADAPTER = Adapter(load=load, tasks=TASKS, description="CSV manifest: path,label[,patient_id,laterality,view]")
