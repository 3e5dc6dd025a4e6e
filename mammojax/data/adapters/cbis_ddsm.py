"""CBIS-DDSM (TCIA): scanned-film mammograms with biopsy-proven findings.

``data_dir`` holds the four description CSVs (``mass_case_description_train_set.csv``,
``..._test_set.csv``, ``calc_case_description_{train,test}_set.csv``; any
subset works) and the images at the CSV's ``image file path``, either as the
original ``.dcm`` or converted to ``.png`` at the same path (the TFDS layout).

CBIS-DDSM keeps only abnormal cases: it has **no normal images**, so its only
task is benign vs malignant (``BENIGN_WITHOUT_CALLBACK`` counts as benign).
One CSV row is one finding; rows are aggregated per image, and an image is
malignant if any of its findings is. ROI masks become ``Lesion(mask_path=...)``
without a centre (read the mask to get one).
"""

from __future__ import annotations

from pathlib import Path

from mammojax.data.adapters._common import Adapter, first_existing, read_csv_rows
from mammojax.data.records import DatasetRecords, Exclusion, Lesion, Record
from mammojax.errors import MammojaxError

TASKS = ("default", "malignant")
CSV_FILES = (
    ("mass", "train", "mass_case_description_train_set.csv"),
    ("mass", "test", "mass_case_description_test_set.csv"),
    ("calc", "train", "calc_case_description_train_set.csv"),
    ("calc", "test", "calc_case_description_test_set.csv"),
)
KINDS = {"mass": "mass", "calc": "calcification"}
PATHOLOGY_LABELS = {"MALIGNANT": 1, "BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0}
REQUIRED = ("patient_id", "left or right breast", "image view", "pathology", "image file path")
NO_NORMALS = ("CBIS-DDSM has no normal images (only biopsied findings), so cancer-vs-normal "
              "cannot be learned from it; use task 'malignant' (benign vs malignant)")


def load(data_dir: Path, *, task: str = "default") -> DatasetRecords:
    tables = [(kind, split, data_dir / name) for kind, split, name in CSV_FILES if (data_dir / name).is_file()]
    if not tables:
        names = ", ".join(name for _, _, name in CSV_FILES)
        raise MammojaxError(f"{data_dir}: none of the CBIS-DDSM description CSVs found ({names})")
    images: dict[str, dict] = {}  # image file path -> aggregated findings, in CSV order
    excluded = []
    for kind, split, table in tables:
        for line, row in read_csv_rows(table, required=REQUIRED):
            pathology = row["pathology"].upper()
            if pathology not in PATHOLOGY_LABELS:
                excluded.append(Exclusion(row["image file path"],
                                          f"{table.name} line {line}: unknown pathology {row['pathology']!r}"))
                continue
            entry = images.setdefault(row["image file path"], {
                "row": row, "split": split, "kinds": [], "labels": [], "lesions": []})
            entry["kinds"].append(kind)
            entry["labels"].append(PATHOLOGY_LABELS[pathology])
            mask = _resolve(data_dir, row.get("ROI mask file path", ""))
            entry["lesions"].append(Lesion(kind=KINDS[kind], row=None, col=None,
                                           mask_path=str(mask) if mask else None,
                                           severity="malignant" if PATHOLOGY_LABELS[pathology] else "benign"))
    records = []
    for csv_path, entry in images.items():
        path = _resolve(data_dir, csv_path)
        if path is None:
            excluded.append(Exclusion(str(data_dir / csv_path), "image file not found (.dcm or .png)"))
            continue
        row = entry["row"]
        side = row["left or right breast"].upper()
        density = row.get("breast_density") or row.get("breast density") or ""
        extra = (("split", entry["split"]), ("density", density),
                 ("abnormality", ",".join(dict.fromkeys(entry["kinds"]))))
        records.append(Record(path=str(path), label=max(entry["labels"]), patient_id=row["patient_id"],
                              laterality={"LEFT": "L", "RIGHT": "R"}.get(side, side or None),
                              view=row["image view"].upper() or None,
                              lesions=tuple(entry["lesions"]), extra=extra))
    return DatasetRecords(records, excluded)


def _resolve(data_dir: Path, csv_path: str) -> Path | None:
    """The file a CSV path names: as written, or converted to PNG."""
    if not csv_path:
        return None
    relative = Path(csv_path.replace("\\", "/"))
    candidates = [data_dir / relative]
    if relative.suffix.lower() == ".dcm":
        candidates.append(data_dir / relative.with_suffix(".png"))
    return first_existing(candidates)


ADAPTER = Adapter(load=load, tasks=TASKS, description="CBIS-DDSM (TCIA CSVs), benign vs malignant",
                  task_errors={"abnormal": NO_NORMALS})
