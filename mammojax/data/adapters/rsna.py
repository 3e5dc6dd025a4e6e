"""RSNA Screening Mammography: screening exams with a per-breast cancer label.

Two layouts are read:

* Kaggle's: ``train.csv`` (``site_id, patient_id, image_id, laterality, view,
  age, cancer, ...``) and ``train_images/<patient_id>/<image_id>.dcm``
  (``.png`` copies at the same place also work). Only ``train.csv`` has
  labels, so it is the only table read.
* an image export with ``labels.csv``: the same columns plus ``path``, the
  image file relative to the folder (e.g. the 640x640 JPEG export in
  ``benign/`` and ``malignant/``), or its ``.tar.gz``. That export stretched
  every film to a square and left about one in eight inverted (white
  background): ``data.fix_inverted`` (on by default) puts those right, and
  the aspect-preserving resize keeps the stretched square as it is given
  (the true aspect is not recoverable from the file).

The label is the ``cancer`` column (per breast: a breast's CC and MLO share
it). The other columns stay in each record (``extra``): site, machine, age,
BI-RADS, density, biopsy, invasive, implant, difficult negative; ``data
summary`` counts them, and the shortcut checks of :mod:`mammojax.evaluation.shortcuts`
fit a metadata-only model on site, machine, view, implant and age.

Besides CC and MLO, a few images are AT (axillary tail), ML, LM or LMO: they
get the view of their family (all MLO-like side views; ``_common.VIEW_FAMILIES``)
and keep the acquired one as ``extra["acquired_view"]``.
"""

from __future__ import annotations

from pathlib import Path

from mammojax.data.adapters import _archive
from mammojax.data.adapters._common import (LATERALITIES, Adapter, find_file, first_existing,
                                            read_csv_rows, view_fields)
from mammojax.data.record_types import DatasetRecords, Exclusion, Record, Task
from mammojax.errors import MammojaxError

_CANCER = Task("cancer vs no cancer (the cancer column)", ("no cancer", "cancer"))
TASKS = {"default": _CANCER, "cancer": _CANCER}
REQUIRED = ("patient_id", "image_id", "laterality", "view", "cancer")
KEPT_COLUMNS = ("site_id", "machine_id", "age", "BIRADS", "density", "biopsy", "invasive", "implant",
                "difficult_negative_case")
EXPORT_TABLE = "labels.csv"


def load(data_dir: Path, *, task: str = "default") -> DatasetRecords:
    if _archive.is_archive(data_dir):
        data_dir = _archive.resolve_folder(data_dir, marker=EXPORT_TABLE, name="rsna")
    table = find_file(data_dir, [EXPORT_TABLE, "train.csv"], max_depth=1)
    if table is None:
        raise MammojaxError(f"{data_dir}: no train.csv (Kaggle layout) or {EXPORT_TABLE} (image export) found "
                            "(RSNA screening mammography)")
    root = table.parent
    export = table.name == EXPORT_TABLE
    records, excluded = [], []
    for line, row in read_csv_rows(table, required=REQUIRED + (("path",) if export else ())):
        if export:
            path = root / row["path"]
            if not path.is_file():
                excluded.append(Exclusion(str(path), "image file not found"))
                continue
        else:
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


ADAPTER = Adapter(load=load, tasks=TASKS,
                  description="RSNA screening (train.csv + train_images/, or an export's labels.csv)")
