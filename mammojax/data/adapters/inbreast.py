"""INbreast: Siemens FFDM DICOMs with BI-RADS per image and OsiriX XML ROIs.

Layout (``INbreast Release 1.0/``, found up to two levels below ``data_dir``)::

    INbreast.csv        semicolon-separated: ...;File Name;ACR;Bi-Rads
    INbreast.xls        the same table; read when there is no .csv (needs xlrd)
    AllDICOMs/<FileName>_<patient hash>_MG_<L|R>_<view>_ANON.dcm
    AllXML/<FileName>.xml   optional lesion outlines (plist)

Views in file names are CC, ML (the CSV's MLO) and, for one film, FB (from
below: a craniocaudal variant, kept as view CC with ``acquired_view`` FB).
Patients are grouped by the hash token of the DICOM name (the CSV's patient
columns only say "removed"). Labels are BI-RADS proxies: 4a/4b/4c/5/6 -> 1,
1/2 -> 0, 3 excluded unless ``birads3="negative"``. Rows without a file name
or laterality (the spreadsheet's totals row) are skipped. ROI names are mapped onto
``LESION_KINDS`` (``Spiculated Region`` -> mass, ``Assymetry`` -> asymmetry...).
"""

from __future__ import annotations

import math
import os
import plistlib
import re
from pathlib import Path

from mammojax.data.adapters._common import (BIRADS_TASK, Adapter, find_file, label_from_birads, lesion_kind,
                                            read_csv_rows, view_fields)
from mammojax.data.record_types import DatasetRecords, Exclusion, Lesion, Record
from mammojax.errors import MammojaxError

TASKS = {"default": BIRADS_TASK, "malignant": BIRADS_TASK}
_DICOM_NAME = re.compile(r"^(?P<file>\d+)_(?P<patient>[0-9a-fA-F]+)_MG_(?P<side>[LR])_(?P<view>[A-Z]+)_ANON$")
_POINT = re.compile(r"\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*\)")
REQUIRED = ("File Name", "Bi-Rads")


def load(data_dir: Path, *, task: str = "default", birads3: str = "exclude") -> DatasetRecords:
    table = find_file(data_dir, ["INbreast.csv"]) or find_file(data_dir, ["INbreast.xls"])
    if table is None:
        raise MammojaxError(f"{data_dir}: no INbreast.csv (or INbreast.xls) found")
    root = table.parent
    dicoms = _index_dicoms(root / "AllDICOMs", table.name)
    records, excluded = [], []
    for line, row in _read_table(table):
        file_name = _plain_number(row["File Name"])
        if not file_name or not row.get("Laterality", "x"):
            continue  # the spreadsheet's totals row (counts, no film), a blank row
        found = dicoms.get(file_name)
        if found is None:
            excluded.append(Exclusion(str(root / "AllDICOMs" / f"{file_name}_*.dcm"), "no matching DICOM",
                                      f"{table.name} line {line}"))
            continue
        path, parts = found
        birads = _plain_number(row["Bi-Rads"])
        label, reason = label_from_birads(birads, birads3)
        if label is None:
            excluded.append(Exclusion(str(path), reason, f"{table.name} line {line}"))
            continue
        view, view_extra = view_fields("MLO" if parts["view"] == "ML" else parts["view"])
        lesions = read_rois(root / "AllXML" / f"{file_name}.xml")
        extra = (("birads", birads), ("acr", _plain_number(row.get("ACR", ""))), *view_extra)
        records.append(Record(path=str(path), label=label, patient_id=parts["patient"],
                              laterality=parts["side"], view=view, lesions=lesions, extra=extra))
    return DatasetRecords(records, excluded)


def _plain_number(value: str) -> str:
    """Spreadsheet numbers come back as floats: ``"22678622.0"`` -> ``"22678622"``."""
    text = str(value).strip()
    return text[:-2] if text.endswith(".0") and text[:-2].isdigit() else text


def _read_table(table: Path):
    """``(line, row)`` of INbreast.csv (semicolons) or INbreast.xls, cells as stripped strings."""
    if table.suffix.lower() == ".csv":
        yield from read_csv_rows(table, delimiter=";", required=REQUIRED)
        return
    try:
        import xlrd
    except ImportError:
        raise MammojaxError(f"{table}: reading .xls needs xlrd (pip install 'mammojax[xls]'), "
                            "or save it as INbreast.csv (semicolon-separated) next to it") from None
    try:
        with open(os.devnull, "w") as quiet:  # xlrd prints warnings to its logfile
            book = xlrd.open_workbook(str(table), logfile=quiet, on_demand=True)
            sheet = book.sheet_by_index(0)
            rows = [[_cell_text(v) for v in sheet.row_values(r)] for r in range(sheet.nrows)]
    except (xlrd.XLRDError, OSError, ValueError, IndexError, AssertionError) as err:
        raise MammojaxError(f"{table}: not a readable .xls spreadsheet ({type(err).__name__})") from None
    header_at = next((i for i, row in enumerate(rows) if "File Name" in row), None)
    if header_at is None:
        raise MammojaxError(f"{table}: no header row with {', '.join(REQUIRED)}")
    header = rows[header_at]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise MammojaxError(f"{table}: missing column(s) {', '.join(missing)}; found: {', '.join(header)}")
    for index, cells in enumerate(rows[header_at + 1:], start=header_at + 2):
        if any(cells):
            yield index, dict(zip(header, cells + [""] * (len(header) - len(cells))))


def _cell_text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def patient_of_file(path: Path) -> str | None:
    """The patient token (an anonymised hash) of an ``<file>_<patient>_MG_<side>_<view>_ANON`` name."""
    match = _DICOM_NAME.match(Path(path).name.split(".")[0])
    return match["patient"] if match else None


def _index_dicoms(folder: Path, table: str) -> dict[str, tuple[Path, dict[str, str]]]:
    """FileName token -> (path, parsed name parts) for every DICOM in AllDICOMs."""
    if not folder.is_dir():
        raise MammojaxError(f"{folder}: AllDICOMs folder not found next to {table}")
    index = {}
    for path in sorted(folder.glob("*.dcm")):
        match = _DICOM_NAME.match(path.stem)
        if match:
            index[match["file"]] = (path, match.groupdict())
    return index


def read_rois(xml_path: Path) -> tuple[Lesion, ...]:
    """Lesions from an OsiriX plist: centre of each outline and its enclosing radius.

    A missing file means no outlines (most normal images have none). Point
    strings are ``"(x, y)"`` with x = column and y = row, top-left origin.
    """
    if not xml_path.is_file():
        return ()
    try:
        with open(xml_path, "rb") as handle:
            plist = plistlib.load(handle)
        rois = plist["Images"][0].get("ROIs", [])
    except (plistlib.InvalidFileException, KeyError, IndexError, TypeError, ValueError) as err:
        raise MammojaxError(f"{xml_path}: not a readable INbreast ROI plist ({type(err).__name__})") from None
    lesions = []
    for roi in rois:
        points = [(float(m.group(1)), float(m.group(2)))
                  for text in roi.get("Point_px", []) for m in [_POINT.search(str(text))] if m]
        if not points:
            continue
        col = sum(p[0] for p in points) / len(points)
        row = sum(p[1] for p in points) / len(points)
        radius = max(math.hypot(x - col, y - row) for x, y in points)
        kind = lesion_kind(str(roi.get("Name", "")))
        lesions.append(Lesion(kind=kind, row=row, col=col, radius=max(radius, 1.0)))
    return tuple(lesions)


ADAPTER = Adapter(load=load, tasks=TASKS, options=("birads3",), patient_of_file=patient_of_file,
                  lesion_circles=True,
                  description="INbreast (INbreast.csv + AllDICOMs + AllXML), BI-RADS proxy labels")
