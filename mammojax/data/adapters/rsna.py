"""RSNA Screening Mammography (Kaggle): screening exams with a per-breast cancer label.

Layout: ``train.csv`` (``site_id, patient_id, image_id, laterality, view,
age, cancer, ...``) and ``train_images/<patient_id>/<image_id>.dcm``
(``.png`` copies at the same place also work). The label is the ``cancer``
column. Only ``train.csv`` has labels, so it is the only table read.

Besides CC and MLO, a few images are AT (axillary tail), ML, LM or LMO: they
get the view of their family (all MLO-like side views; ``_common.VIEW_FAMILIES``)
and keep the acquired one as ``extra["acquired_view"]``.
"""

from __future__ import annotations

from pathlib import Path

from mammojax.data.adapters._common import (LATERALITIES, Adapter, find_file, first_existing,
                                            read_csv_rows, view_fields)
from mammojax.data.record_types import DatasetRecords, Exclusion, Record, Task
from mammojax.errors import MammojaxError

_CANCER = Task("cancer vs no cancer (the cancer column)", ("no cancer", "cancer"))
TASKS = {"default": _CANCER, "cancer": _CANCER}
REQUIRED = ("patient_id", "image_id", "laterality", "view", "cancer")
KEPT_COLUMNS = ("site_id", "BIRADS", "density", "biopsy", "machine_id", "implant")


def load(data_dir: Path, *, task: str = "default") -> DatasetRecords:
    table = find_file(data_dir, ["train.csv"], max_depth=1)
    if table is None:
        raise MammojaxError(f"{data_dir}: no train.csv found (RSNA screening mammography)")
    root = table.parent
    records, excluded = [], []
    for line, row in read_csv_rows(table, required=REQUIRED):
        base = root / "train_images" / row["patient_id"] / row["image_id"]
        path = first_existing(base.with_name(base.name + s) for s in (".dcm", ".png"))
        if path is None:
            excluded.append(Exclusion(str(base) + ".dcm", "image file not found"))
            continue
        if row["cancer"] not in ("0", "1"):
            raise MammojaxError(f"{table}:{line}: cancer must be 0 or 1, got {row['cancer']!r}")
        view, view_extra = view_fields(row["view"])
        extra = (*((k, row[k]) for k in KEPT_COLUMNS if k in row), *view_extra)
        records.append(Record(path=str(path), label=int(row["cancer"]), patient_id=row["patient_id"],
                              laterality=LATERALITIES.get(row["laterality"].upper()), view=view, extra=extra))
    return DatasetRecords(records, excluded)


ADAPTER = Adapter(load=load, tasks=TASKS, description="RSNA screening (train.csv + train_images/)")
