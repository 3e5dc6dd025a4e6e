"""VinDr-Mammo (PhysioNet): 5,000 four-view exams with BI-RADS per breast.

Layout::

    breast-level_annotations.csv   study_id, image_id, laterality, view_position,
                                   breast_birads ("BI-RADS 4"), breast_density, split
    finding_annotations.csv        the same + finding_categories, xmin..ymax (optional)
    images/<study_id>/<image_id>.dicom

There is no patient id and no biopsy label: ``study_id`` is the patient key and
labels are BI-RADS proxies (4-5 -> 1, 1-2 -> 0, 3 excluded unless
``birads3="negative"``). The official split is kept as ``extra["split"]``.
Finding categories become one of ``LESION_KINDS``: a box listed as
``['Suspicious Calcification', 'Mass']`` is a mass.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

from mammojax.data.adapters._common import (BIRADS_TASK, LATERALITIES, Adapter, find_file, first_existing,
                                            label_from_birads, lesion_kind, read_csv_rows, view_fields)
from mammojax.data.record_types import DatasetRecords, Exclusion, Lesion, Record
from mammojax.errors import MammojaxError

TASKS = {"default": BIRADS_TASK, "malignant": BIRADS_TASK}
REQUIRED = ("study_id", "image_id", "laterality", "view_position", "breast_birads")
IMAGE_SUFFIXES = (".dicom", ".dcm", ".png")


def load(data_dir: Path, *, task: str = "default", birads3: str = "exclude") -> DatasetRecords:
    table = find_file(data_dir, ["breast-level_annotations.csv"])
    if table is None:
        raise MammojaxError(f"{data_dir}: no breast-level_annotations.csv found")
    root = table.parent
    findings = _read_findings(root / "finding_annotations.csv")
    records, excluded = [], []
    for line, row in read_csv_rows(table, required=REQUIRED):
        base = root / "images" / row["study_id"] / row["image_id"]
        path = first_existing(base.with_name(base.name + s) for s in IMAGE_SUFFIXES)
        if path is None:
            excluded.append(Exclusion(str(base) + ".dicom", "image file not found"))
            continue
        label, reason = label_from_birads(row["breast_birads"], birads3)
        if label is None:
            excluded.append(Exclusion(str(path), reason))
            continue
        view, view_extra = view_fields(row["view_position"])
        extra = (("split", row.get("split", "")), ("birads", row["breast_birads"]),
                 ("density", row.get("breast_density", "")), *view_extra)
        records.append(Record(path=str(path), label=label, patient_id=row["study_id"],
                              laterality=LATERALITIES.get(row["laterality"].upper()), view=view,
                              lesions=findings.get(row["image_id"], ()), extra=extra))
    return DatasetRecords(records, excluded)


def _read_findings(table: Path) -> dict[str, tuple[Lesion, ...]]:
    """image_id -> boxed findings; rows without a box ("No Finding") are skipped."""
    if not table.is_file():
        return {}
    findings: dict[str, list[Lesion]] = {}
    for _, row in read_csv_rows(table, required=("image_id", "xmin", "ymin", "xmax", "ymax")):
        try:
            xmin, ymin, xmax, ymax = (float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            continue  # empty box cells
        if any(math.isnan(v) for v in (xmin, ymin, xmax, ymax)):
            continue
        findings.setdefault(row["image_id"], []).append(Lesion(
            kind=_category(row.get("finding_categories", "")),
            row=(ymin + ymax) / 2, col=(xmin + xmax) / 2,
            radius=math.hypot(xmax - xmin, ymax - ymin) / 2,
            severity=row.get("finding_birads") or None))
    return {k: tuple(v) for k, v in findings.items()}


def _category(text: str) -> str:
    """``"['Suspicious Calcification', 'Mass']"`` -> ``"mass"`` (see ``lesion_kind``)."""
    try:
        values = ast.literal_eval(text) if text.startswith("[") else [text]
    except (ValueError, SyntaxError):
        values = [text]
    if isinstance(values, str):
        values = [values]
    names = [str(v).strip() for v in values if str(v).strip()]
    return lesion_kind(*names) if names else "other"


ADAPTER = Adapter(load=load, tasks=TASKS, options=("birads3",), lesion_circles=True,
                  description="VinDr-Mammo (PhysioNet CSVs + images/<study>/<image>.dicom), BI-RADS proxy")
