"""CBIS-DDSM (TCIA): scanned-film mammograms with biopsy-proven findings.

Files: the four description CSVs (``mass_case_description_train_set.csv``,
``..._test_set.csv``, ``calc_case_description_{train,test}_set.csv``; any
subset works) and the DICOMs in one of two layouts:

- as TCIA's NBIA Data Retriever writes them (a ``CBIS-DDSM`` folder, often
  inside ``manifest-<number>/``)::

      CBIS-DDSM/Mass-Training_P_00001_LEFT_CC/07-20-2016-DDSM-NA-74994/
          1.000000-full mammogram images-24515/1-1.dcm
      CBIS-DDSM/Mass-Training_P_00001_LEFT_CC_1/08-07-2016-DDSM-NA-09887/
          1.000000-ROI mask images-18515/1-1.dcm, 1-2.dcm

  where the digits after ``DDSM-NA-`` and ``images-`` are the last five of
  the StudyInstanceUID and SeriesInstanceUID the CSV paths name;
- at the CSV's literal path (``<case>/<StudyUID>/<SeriesUID>/000000.dcm``),
  as DICOM or converted to PNG at the same path (the TFDS layout).

``data_dir`` may be the folder holding the CSVs, the ``CBIS-DDSM`` folder or
the folder above it: the CSVs are looked for in it (two levels down) and
beside it, the case folders in it, in ``CBIS-DDSM``, ``*/CBIS-DDSM`` and
beside it. Films are found by their case folder
(``Mass-Training_P_00001_LEFT_CC``); the UID digits pick one when a folder
holds several. A finding's case folder (``..._1``) holds its ROI mask and a
cropped patch in no fixed order (and the CSV's two columns are sometimes
swapped): the mask is the image with the film's size, read from the image
headers only, as TFDS's builder compares sizes.

CBIS-DDSM keeps only abnormal cases: it has **no normal images**, so its only
task is benign vs malignant (``BENIGN_WITHOUT_CALLBACK`` counts as benign).
One CSV row is one finding. **One film, one record**: a film with a mass and
calcifications is listed in a Mass CSV and in a Calc CSV (two copies of the
same scan under two case folders); its findings are merged, it is malignant
if any finding is, and the summary counts the merged films. A film listed in
both the official train and test split is put in ``test`` (no test film is
ever trained on).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mammojax.data.adapters._common import (LATERALITIES, Adapter, find_files, read_csv_rows,
                                            subdirs, view_fields)
from mammojax.data.record_types import DatasetRecords, Exclusion, Lesion, Record, Task
from mammojax.errors import ImageReadError, MammojaxError

_MALIGNANT = Task("malignant vs benign biopsied finding (no normal films)", ("benign", "malignant"))
TASKS = {"default": _MALIGNANT, "malignant": _MALIGNANT}
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
CASE_FOLDER = re.compile(r"^(Mass|Calc)-(Training|Test)_P_\d+_(LEFT|RIGHT)_(CC|MLO)(_\d+)?$")
IMAGE_SUFFIXES = (".dcm", ".png")
MERGED_NOTE = "films in both a Mass and a Calc CSV, merged into one record"
SPLIT_NOTE = "merged films listed in both the train and test CSVs, put in test"


@dataclass
class _Film:
    """One film's findings, gathered from every CSV row that names it."""

    row: dict
    sources: list = field(default_factory=list)  # (kind, split, CSV image path), in CSV order
    labels: list = field(default_factory=list)
    findings: list = field(default_factory=list)  # (kind, label, CSV mask path, CSV crop path, source)


def load(data_dir: Path, *, task: str = "default") -> DatasetRecords:
    tables = _find_tables(data_dir)
    finder = _Finder(data_dir, {path.parent for _, _, path in tables})
    films: dict[tuple[str, str, str], _Film] = {}  # (patient, side, view) -> its findings
    excluded = []
    for kind, split, table in tables:
        for line, row in read_csv_rows(table, required=REQUIRED):
            pathology = row["pathology"].upper()
            if pathology not in PATHOLOGY_LABELS:
                excluded.append(Exclusion(row["image file path"], f"unknown pathology {row['pathology']!r}",
                                          f"{table.name} line {line}"))
                continue
            key = (row["patient_id"], row["left or right breast"].upper(), row["image view"].upper())
            film = films.setdefault(key, _Film(row))
            source = (kind, split, row["image file path"])
            if source not in film.sources:
                film.sources.append(source)
            label = PATHOLOGY_LABELS[pathology]
            film.labels.append(label)
            film.findings.append((kind, label, row.get("ROI mask file path", ""),
                                  row.get("cropped image file path", ""), source))
    records = []
    merged = split_conflicts = 0
    for (patient, side, view), film in films.items():
        found = [(source, finder.film(source[2])) for source in film.sources]
        found = [(source, path) for source, path in found if path is not None]
        if not found:
            excluded.append(Exclusion(str(data_dir / film.sources[0][2]),
                                      "image file not found (CSV path or case folder)"))
            continue
        kinds = {kind for kind, _, _ in film.sources}
        splits = {split for _, split, _ in film.sources}
        merged += len(kinds) > 1
        split_conflicts += len(kinds) > 1 and len(splits) > 1
        film_paths = dict(found)
        path = found[0][1]
        lesions = []
        for kind, label, mask, crop, source in film.findings:
            reference = film_paths.get(source, path)  # the mask has this film's size
            mask_path = finder.mask(mask, crop, reference)
            lesions.append(Lesion(kind=KINDS[kind], row=None, col=None,
                                  mask_path=str(mask_path) if mask_path else None,
                                  severity="malignant" if label else "benign"))
        row = film.row
        density = row.get("breast_density") or row.get("breast density") or ""
        view_name, view_extra = view_fields(view)
        extra = (("split", "test" if "test" in splits else "train"), ("density", density),
                 ("abnormality", ",".join(KINDS[k] for k in ("mass", "calc") if k in kinds)), *view_extra)
        records.append(Record(path=str(path), label=max(film.labels), patient_id=patient,
                              laterality=LATERALITIES.get(side), view=view_name,
                              lesions=tuple(lesions), extra=extra))
    notes = ((MERGED_NOTE, merged), (SPLIT_NOTE, split_conflicts)) if merged else ()
    return DatasetRecords(records, excluded, notes)


def _find_tables(data_dir: Path) -> list[tuple[str, str, Path]]:
    names = [name for _, _, name in CSV_FILES]
    found = find_files(data_dir, names, max_depth=2)
    if not found and data_dir.parent != data_dir:
        found = find_files(data_dir.parent, names, max_depth=0)  # data_dir is the CBIS-DDSM folder
    tables = [(kind, split, found[name]) for kind, split, name in CSV_FILES if name in found]
    if not tables:
        raise MammojaxError(f"{data_dir}: none of the CBIS-DDSM description CSVs found "
                            f"(here, two levels below or beside it: {', '.join(names)})")
    return tables


class _Finder:
    """Finds films and ROI masks by CSV path, in either layout."""

    def __init__(self, data_dir: Path, table_dirs: set[Path]):
        bases = list(dict.fromkeys([data_dir, *sorted(table_dirs), data_dir.parent]))
        self.roots = [data_dir, *sorted(table_dirs)]  # where literal CSV paths may start
        self.cases: dict[str, Path] = {}  # case folder name -> folder
        for base in bases:
            for root in (base, base / "CBIS-DDSM", *sorted(base.glob("*/CBIS-DDSM"))):
                found = {p.name: p for p in subdirs(root) if CASE_FOLDER.match(p.name)}
                if found:
                    self.roots.append(root)
                    for name, folder in found.items():
                        self.cases.setdefault(name, folder)
        self.roots = list(dict.fromkeys(self.roots))
        self._sizes: dict[Path, tuple[int, int] | None] = {}

    def literal(self, csv_path: str) -> Path | None:
        """The file at the CSV's path (or its PNG conversion) under any root."""
        relative = Path(csv_path.replace("\\", "/"))
        for root in self.roots:
            for candidate in (root / relative, (root / relative).with_suffix(".png")):
                if candidate.is_file():
                    return candidate
        return None

    def case_files(self, csv_path: str) -> list[Path]:
        """The images in the CSV path's case folder (NBIA layout), sorted."""
        parts = Path(csv_path.replace("\\", "/")).parts
        folder = self.cases.get(parts[0]) if parts else None
        if folder is None:
            return []
        return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())

    def film(self, csv_path: str) -> Path | None:
        if not csv_path:
            return None
        literal = self.literal(csv_path)
        if literal is not None:
            return literal
        files = self.case_files(csv_path)
        if len(files) > 1:
            files = [p for p in files if _uid_digits_match(p, csv_path)] or files[:0]
        return files[0] if len(files) == 1 else None

    def mask(self, mask_path: str, crop_path: str, film: Path) -> Path | None:
        """The ROI mask among a finding's images: the one with the film's size."""
        candidates = [p for p in (self.literal(mask_path), self.literal(crop_path)) if p is not None]
        if not candidates:
            candidates = self.case_files(mask_path or crop_path)
        candidates = list(dict.fromkeys(candidates))
        film_size = self.size(film)
        if film_size is not None:
            return next((p for p in candidates if self.size(p) == film_size), None)
        # Film size unknown: the mask is the larger image (the crop is a patch).
        sized = [(s[0] * s[1], i, p) for i, p in enumerate(candidates) for s in [self.size(p)] if s]
        return max(sized)[2] if sized else (candidates[0] if candidates else None)

    def size(self, path: Path) -> tuple[int, int] | None:
        """(rows, columns) from the image header only; None when unreadable."""
        if path not in self._sizes:
            self._sizes[path] = _header_size(path)
        return self._sizes[path]


def _uid_digits_match(path: Path, csv_path: str) -> bool:
    """NBIA folder names end in the last 5 digits of the study and series UIDs."""
    parts = Path(csv_path.replace("\\", "/")).parts
    if len(parts) < 4 or len(path.parents) < 2:
        return False
    study, series = parts[1][-5:], parts[2][-5:]
    return path.parent.name.endswith(f"-{series}") and path.parent.parent.name.endswith(f"-{study}")


def _header_size(path: Path) -> tuple[int, int] | None:
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as image:  # reads the header, not the pixels
                return image.size[1], image.size[0]
        # data.dicom imports pydicom at the top: loaded only when a DICOM header is read.
        from mammojax.data.dicom import safe_dicom_summary

        summary = safe_dicom_summary(path)
    except (ImageReadError, OSError, ValueError):
        return None
    rows, cols = summary["rows"], summary["cols"]
    return (rows, cols) if rows and cols else None


ADAPTER = Adapter(load=load, tasks=TASKS, description="CBIS-DDSM (TCIA CSVs), benign vs malignant",
                  task_errors={"abnormal": NO_NORMALS})
