"""INbreast: Siemens FFDM DICOMs with BI-RADS per image and OsiriX XML ROIs.

Layout (``INbreast Release 1.0/``, found up to two levels below ``data_dir``)::

    INbreast.csv        semicolon-separated: ...;File Name;ACR;Bi-Rads
    AllDICOMs/<FileName>_<patient hash>_MG_<L|R>_<CC|ML>_ANON.dcm
    AllXML/<FileName>.xml   optional lesion outlines (plist)

Patients are grouped by the hash token of the DICOM name (the CSV's patient
columns only say "removed"). Labels are BI-RADS proxies: 4a/4b/4c/5/6 -> 1,
1/2 -> 0, 3 excluded unless ``birads3="negative"``.
"""

from __future__ import annotations

import math
import plistlib
import re
from pathlib import Path

from mammojax.data.adapters._common import (Adapter, find_file, label_from_birads,
                                            read_csv_rows)
from mammojax.data.records import DatasetRecords, Exclusion, Lesion, Record
from mammojax.errors import MammojaxError

TASKS = ("default", "malignant")
_DICOM_NAME = re.compile(r"^(?P<file>\d+)_(?P<patient>[0-9a-fA-F]+)_MG_(?P<side>[LR])_(?P<view>CC|MLO?)_ANON$")
_POINT = re.compile(r"\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*\)")
ROI_KINDS = {"mass": "mass", "calcification": "calcification", "calcifications": "calcification",
             "cluster": "calcification", "distortion": "distortion", "asymmetry": "asymmetry"}


def load(data_dir: Path, *, task: str = "default", birads3: str = "exclude") -> DatasetRecords:
    table = find_file(data_dir, ["INbreast.csv"])
    if table is None:
        xls = find_file(data_dir, ["INbreast.xls"])
        if xls is None:
            raise MammojaxError(f"{data_dir}: no INbreast.csv (or INbreast.xls) found")
        raise MammojaxError(
            f"{xls}: reading .xls needs a spreadsheet reader that is not installed; "
            "save it as INbreast.csv (semicolon-separated) next to it")
    root = table.parent
    dicoms = _index_dicoms(root / "AllDICOMs")
    records, excluded = [], []
    for line, row in read_csv_rows(table, delimiter=";", required=("File Name", "Bi-Rads")):
        file_name = row["File Name"]
        found = dicoms.get(file_name)
        if found is None:
            excluded.append(Exclusion(str(root / "AllDICOMs" / f"{file_name}_*.dcm"),
                                      f"INbreast.csv line {line}: no matching DICOM"))
            continue
        path, parts = found
        label, reason = label_from_birads(row["Bi-Rads"], birads3)
        if label is None:
            excluded.append(Exclusion(str(path), reason))
            continue
        view = "MLO" if parts["view"].startswith("ML") else parts["view"]
        lesions = read_rois(root / "AllXML" / f"{file_name}.xml")
        extra = (("birads", row["Bi-Rads"]), ("acr", row.get("ACR", "")))
        records.append(Record(path=str(path), label=label, patient_id=parts["patient"],
                              laterality=parts["side"], view=view, lesions=lesions, extra=extra))
    return DatasetRecords(records, excluded)


def _index_dicoms(folder: Path) -> dict[str, tuple[Path, dict[str, str]]]:
    """FileName token -> (path, parsed name parts) for every DICOM in AllDICOMs."""
    if not folder.is_dir():
        raise MammojaxError(f"{folder}: AllDICOMs folder not found next to INbreast.csv")
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
        name = str(roi.get("Name", "")).strip()
        kind = ROI_KINDS.get(name.lower(), name.lower() or "unknown")
        lesions.append(Lesion(kind=kind, row=row, col=col, radius=max(radius, 1.0)))
    return tuple(lesions)


ADAPTER = Adapter(load=load, tasks=TASKS, options=("birads3",),
                  description="INbreast (INbreast.csv + AllDICOMs + AllXML), BI-RADS proxy labels")
