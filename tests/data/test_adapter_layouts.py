"""Dataset adapters on skeletons of the real downloads.

Each test lays out, in tmp_path, what the public download writes (folder and
file names, CSV column layouts from shared/docs/DATASETS.md), with tiny
generated DICOMs where the adapter reads headers, and checks that every film
is found, duplicates are merged and exclusion reasons group.
"""

from __future__ import annotations

import json
import plistlib
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from mammojax.cli.data_cmd import data
from mammojax.data.records import LESION_KINDS, load_dataset
from mammojax.data.synthetic import write_dicom
from mammojax.errors import MammojaxError
from vindr_support import write_breast_level


def _dicom(path: Path, rows: int, cols: int, **elements) -> Path:
    """A tiny uncompressed 12-bit DICOM of ``rows`` x ``cols``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.arange(rows * cols, dtype=np.uint16).reshape(rows, cols) % 4096
    return write_dicom(path, pixels, bits_stored=12, **elements)


# --------------------------------------------------------------------------- CBIS-DDSM

MASS_HEADER = ("patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,"
               "mass shape,mass margins,assessment,pathology,subtlety,image file path,"
               "cropped image file path,ROI mask file path")
CALC_HEADER = ("patient_id,breast density,left or right breast,image view,abnormality id,abnormality type,"
               "calc type,calc distribution,assessment,pathology,subtlety,image file path,"
               "cropped image file path,ROI mask file path")
UID = "1.3.6.1.4.1.9590.100.1.2."
FILM = (40, 30)  # rows, cols: the mask has the film's size, the crop is a patch
CROP = (12, 9)


def _cbis_case(images: Path, case: str, study: str, series: str) -> str:
    """Writes a film as NBIA names it; returns the CSV's path for it."""
    film = images / case / f"07-20-2016-DDSM-NA-{study[-5:]}" / f"1.000000-full mammogram images-{series[-5:]}"
    _dicom(film / "1-1.dcm", *FILM)
    return f"{case}/{study}/{series}/000000.dcm"


def _cbis_roi(images: Path, case: str, study: str, series: str, order: str) -> tuple[str, str, Path]:
    """(CSV crop path, CSV mask path, the mask file on disk) of one finding.

    ``order``: the place of mask and crop in one series folder ("mask-first",
    "crop-first"), or "two-series": each in its own series folder, the folder
    names swapped (the mask under "cropped images").
    """
    visit = images / case / f"08-29-2017-DDSM-NA-{study[-5:]}"
    if order == "two-series":
        mask = _dicom(visit / f"1.000000-cropped images-{series[-5:]}" / "1-1.dcm", *FILM)
        _dicom(visit / f"1.000000-ROI mask images-{int(series[-5:]) + 1}" / "1-1.dcm", *CROP)
    else:
        folder = visit / f"1.000000-ROI mask images-{series[-5:]}"
        mask_first = order == "mask-first"
        mask = _dicom(folder / ("1-1.dcm" if mask_first else "1-2.dcm"), *FILM)
        _dicom(folder / ("1-2.dcm" if mask_first else "1-1.dcm"), *CROP)
    base = f"{case}/{study}/{series}"
    return f"{base}/000000.dcm", f"{base}/000001.dcm", mask


def _cbis_skeleton(tmp_path: Path, images: Path, csv_dir: Path):
    """Six films, two of them listed in a Mass and a Calc CSV; returns expectations."""
    rows = {"mass_case_description_train_set.csv": [MASS_HEADER], "mass_case_description_test_set.csv": [MASS_HEADER],
            "calc_case_description_train_set.csv": [CALC_HEADER], "calc_case_description_test_set.csv": [CALC_HEADER]}
    masks = {}
    films = [  # (csv, case, patient, side, view, findings: [(pathology, roi order)])
        ("mass_case_description_train_set.csv", "Mass-Training", "P_00001", "LEFT", "CC",
         [("MALIGNANT", "crop-first"), ("BENIGN", "mask-first")]),
        ("mass_case_description_train_set.csv", "Mass-Training", "P_00710", "RIGHT", "CC", [("BENIGN", "two-series")]),
        ("calc_case_description_train_set.csv", "Calc-Training", "P_00710", "RIGHT", "CC",
         [("MALIGNANT", "mask-first")]),
        ("mass_case_description_train_set.csv", "Mass-Training", "P_00020", "LEFT", "MLO",
         [("BENIGN_WITHOUT_CALLBACK", "crop-first")]),
        ("calc_case_description_test_set.csv", "Calc-Test", "P_00020", "LEFT", "MLO", [("BENIGN", "crop-first")]),
        ("mass_case_description_test_set.csv", "Mass-Test", "P_00016", "LEFT", "CC", [("MALIGNANT", "two-series")]),
        ("calc_case_description_test_set.csv", "Calc-Test", "P_00038", "RIGHT", "MLO", [("BENIGN", "mask-first")]),
    ]
    for n, (table, prefix, patient, side, view, findings) in enumerate(films):
        case = f"{prefix}_{patient}_{side}_{view}"
        film_path = _cbis_case(images, case, f"{UID}{n}4221127222131896498076114346{n:05d}",
                               f"{UID}{n}3423861948112676366086941325{n + 50:05d}")
        for k, (pathology, order) in enumerate(findings, start=1):
            crop, mask, mask_file = _cbis_roi(images, f"{case}_{k}", f"{UID}{n}{k}10826821301136112420385914{n:05d}",
                                              f"{UID}{n}{k}29673640331379259962636878{n + 70:05d}", order)
            masks.setdefault((patient, side[0], view), []).append(str(mask_file))
            cells = [patient, "3", side, view, str(k), "mass" if "Mass" in prefix else "calcification",
                     "OVAL", "CIRCUMSCRIBED", "4", pathology, "3", film_path, crop, f'"{mask}\n"']
            rows[table].append(",".join(cells))
    csv_dir.mkdir(parents=True, exist_ok=True)
    for name, lines in rows.items():
        (csv_dir / name).write_text("\n".join(lines) + "\n")
    return masks


@pytest.mark.parametrize("layout", ["csvs-beside-CBIS-DDSM", "point-at-CBIS-DDSM", "csvs-in-own-folder",
                                    "point-at-csv-folder"])
def test_cbis_ddsm_nbia_layout_every_film_found_and_duplicates_merged(tmp_path, layout):
    if layout in ("csvs-beside-CBIS-DDSM", "point-at-CBIS-DDSM"):
        images, csv_dir = tmp_path / "CBIS-DDSM", tmp_path
    else:
        images, csv_dir = tmp_path / "manifest-1600709154662" / "CBIS-DDSM", tmp_path / "csv"
    masks = _cbis_skeleton(tmp_path, images, csv_dir)
    data_dir = {"point-at-CBIS-DDSM": images, "point-at-csv-folder": csv_dir}.get(layout, tmp_path)

    loaded = load_dataset("cbis_ddsm", data_dir)
    assert loaded.excluded == ()
    by_film = {(r.patient_id, r.laterality, r.view): r for r in loaded.records}
    # 7 CSV films, two of them one physical film listed in a Mass and a Calc CSV.
    assert len(loaded.records) == 5 and len(by_film) == 5
    assert all(Path(r.path).name == "1-1.dcm" and "full mammogram images" in r.path for r in loaded.records)
    assert dict(loaded.notes) == {
        "films in both a Mass and a Calc CSV, merged into one record": 2,
        "merged films listed in both the train and test CSVs, put in test": 1}
    # P_00710 RIGHT CC: benign in Mass-Training, malignant in Calc-Training -> one malignant film.
    merged = by_film[("P_00710", "R", "CC")]
    assert merged.label == 1 and merged.get("abnormality") == "mass,calcification"
    assert [(l.kind, l.severity) for l in merged.lesions] == [("mass", "benign"), ("calcification", "malignant")]
    assert merged.get("split") == "train" and "Mass-Training_P_00710" in merged.path
    cross = by_film[("P_00020", "L", "MLO")]
    assert cross.label == 0 and cross.get("split") == "test"
    # Masks: the film-sized image of each finding, whatever its place in the folder.
    for key, record in by_film.items():
        assert [l.mask_path for l in record.lesions] == masks[key], key
    assert by_film[("P_00001", "L", "CC")].label == 1


def test_cbis_ddsm_missing_film_and_unknown_pathology_group_by_reason(tmp_path):
    images = tmp_path / "CBIS-DDSM"
    _cbis_skeleton(tmp_path, images, tmp_path)
    for case in ("Mass-Test_P_00016_LEFT_CC", "Calc-Test_P_00038_RIGHT_MLO"):
        for file in (images / case).rglob("*.dcm"):
            file.unlink()
    table = tmp_path / "mass_case_description_train_set.csv"
    lines = table.read_text().splitlines()  # physical lines: mask cells end in a quoted newline
    unproven = "P_00099,2,LEFT,CC,1,mass,OVAL,CIRCUMSCRIBED,4,UNPROVEN,3,Mass-Training_P_00099_LEFT_CC/1/2/000000.dcm,,"
    table.write_text("\n".join([*lines, unproven, unproven.replace("P_00099", "P_00098")]) + "\n")
    loaded = load_dataset("cbis_ddsm", tmp_path)
    assert len(loaded.records) == 3
    assert loaded.exclusion_counts() == {"image file not found (CSV path or case folder)": 2,
                                         "unknown pathology 'UNPROVEN'": 2}
    assert sorted(e.source for e in loaded.excluded if e.source) == [
        f"mass_case_description_train_set.csv line {len(lines) + 1}",
        f"mass_case_description_train_set.csv line {len(lines) + 2}"]


def test_cbis_ddsm_no_csvs_anywhere(tmp_path):
    (tmp_path / "CBIS-DDSM").mkdir()
    with pytest.raises(MammojaxError, match="none of the CBIS-DDSM description CSVs"):
        load_dataset("cbis_ddsm", tmp_path / "CBIS-DDSM")


# --------------------------------------------------------------------------- INbreast

INBREAST_HEADER = ["Patient ID", "Patient age", "Laterality", "View", "Acquisition date", "File Name", "ACR",
                   "Bi-Rads"]
# (file name, patient hash, side, view in the CSV, view in the file name, ACR, BI-RADS)
INBREAST_ROWS = [
    ("22678622", "61b13c59bcba149e", "R", "CC", "CC", "4", "1"),
    ("22678646", "61b13c59bcba149e", "R", "MLO", "ML", "4", "4a"),
    ("50994300", "2af9fdda6a1b54f3", "R", "FB", "FB", "2", "2"),  # the one FB-view film
    ("22614074", "6bd24a0a42c19ce1", "L", "CC", "CC", " ", "3"),
    ("24055355", "6bd24a0a42c19ce1", "L", "MLO", "ML", "1", "5"),
    ("20587612", "8d0b9620c53c0268", "L", "CC", "CC", "2", "2"),  # no DICOM on disk
    ("20587638", "8d0b9620c53c0268", "L", "MLO", "ML", "2", "2"),  # no DICOM on disk
]
ROI_NAMES = ["Spiculated Region", "Espiculated Region", "Assymetry", "Cluster", "Calcification", "Mass",
             "Distortion", "Unnamed"]


def _inbreast_skeleton(tmp_path: Path) -> Path:
    root = tmp_path / "INbreast Release 1.0"
    (root / "AllDICOMs").mkdir(parents=True)
    (root / "AllXML").mkdir()
    for file_name, patient, side, _, file_view, _, _ in INBREAST_ROWS:
        if not file_name.startswith("205876"):
            (root / "AllDICOMs" / f"{file_name}_{patient}_MG_{side}_{file_view}_ANON.dcm").write_bytes(b"")
    rois = [{"Name": name, "Point_px": [f"({10 + i}.5, 20.0)", f"({30 + i}.5, 20.0)"]} for i, name in enumerate(ROI_NAMES)]
    with open(root / "AllXML" / "24055355.xml", "wb") as handle:
        plistlib.dump({"Images": [{"NumberOfROIs": len(rois), "ROIs": rois}]}, handle)
    return root


def _write_inbreast_csv(root: Path) -> None:
    lines = [";".join(INBREAST_HEADER)]
    for file_name, _, side, view, _, acr, birads in INBREAST_ROWS:
        lines.append(f"removed;removed;{side};{view};201001;{file_name};{acr};{birads}")
    (root / "INbreast.csv").write_text("\n".join(lines) + "\n")


def _biff_record(kind: int, payload: bytes) -> bytes:
    return struct.pack("<HH", kind, len(payload)) + payload


def _write_xls(path: Path, rows: list[list]) -> None:
    """A BIFF8 workbook stream of one sheet (xlrd reads it without an OLE2 wrapper).

    Strings are LABEL records, numbers NUMBER records: as Excel stores
    INbreast.xls, file names and most BI-RADS come back as floats.
    """
    def bof(kind):
        return _biff_record(0x0809, struct.pack("<HHHHII", 0x0600, kind, 0, 0, 0, 0))

    sheet = bof(0x10)
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if isinstance(value, float):
                sheet += _biff_record(0x0203, struct.pack("<HHHd", r, c, 0, value))
            elif value != "":
                text = value.encode("latin-1")
                sheet += _biff_record(0x0204, struct.pack("<HHHHB", r, c, 0, len(text), 0) + text)
    sheet += _biff_record(0x000A, b"")
    name = b"Sheet1"

    def boundsheet(offset):
        return _biff_record(0x0085, struct.pack("<IBBB", offset, 0, 0, len(name)) + b"\x00" + name)

    globals_ = bof(0x05) + boundsheet(0) + _biff_record(0x000A, b"")
    path.write_bytes(bof(0x05) + boundsheet(len(globals_)) + _biff_record(0x000A, b"") + sheet)


def _check_inbreast(loaded) -> None:
    by_file = {Path(r.path).name.split("_")[0]: r for r in loaded.records}
    assert sorted(by_file) == ["22678622", "22678646", "24055355", "50994300"]
    fb = by_file["50994300"]
    assert (fb.view, fb.get("acquired_view"), fb.laterality, fb.label) == ("CC", "FB", "R", 0)
    assert by_file["22678646"].view == "MLO" and by_file["22678646"].label == 1
    assert by_file["22678622"].patient_id == by_file["22678646"].patient_id == "61b13c59bcba149e"
    kinds = [lesion.kind for lesion in by_file["24055355"].lesions]
    assert kinds == ["mass", "mass", "asymmetry", "calcification", "calcification", "mass", "distortion", "other"]
    assert set(kinds) <= set(LESION_KINDS)
    # One key per reason, the CSV line kept apart.
    assert loaded.exclusion_counts() == {"no matching DICOM": 2, "BI-RADS 3 excluded (birads3='exclude')": 1}
    assert all(e.source.startswith("INbreast.") and " line " in e.source for e in loaded.excluded)
    assert by_file["24055355"].get("acr") == "1" and by_file["22678646"].get("birads") == "4a"


def test_inbreast_csv_keeps_the_fb_film_and_normalises_kinds(tmp_path):
    root = _inbreast_skeleton(tmp_path)
    _write_inbreast_csv(root)
    _check_inbreast(load_dataset("inbreast", tmp_path))


def test_inbreast_xls_only(tmp_path):
    pytest.importorskip("xlrd")
    root = _inbreast_skeleton(tmp_path)
    rows = [INBREAST_HEADER]
    for file_name, _, side, view, _, acr, birads in INBREAST_ROWS:
        birads_cell = float(birads) if birads.isdigit() else birads
        acr_cell = float(acr) if acr.strip() else ""
        rows.append(["removed", "removed", side, view, 201001.0, float(file_name), acr_cell, birads_cell])
    rows += [[""] * 8, ["", "", "", "", "", "", 410.0, 410.0]]  # a blank row and the totals row
    _write_xls(root / "INbreast.xls", rows)
    loaded = load_dataset("inbreast", tmp_path)
    _check_inbreast(loaded)
    assert {e.source for e in loaded.excluded} == {"INbreast.xls line 5", "INbreast.xls line 7", "INbreast.xls line 8"}


def test_inbreast_xls_without_xlrd_is_one_line(tmp_path, monkeypatch):
    root = _inbreast_skeleton(tmp_path)
    (root / "INbreast.xls").write_bytes(b"\xd0\xcf")
    monkeypatch.setitem(sys.modules, "xlrd", None)  # as if it were not installed
    with pytest.raises(MammojaxError) as err:
        load_dataset("inbreast", tmp_path)
    message = str(err.value)
    assert "\n" not in message and "INbreast.xls" in message and "needs xlrd" in message


def test_summary_groups_reasons_and_lists_rows(tmp_path):
    root = _inbreast_skeleton(tmp_path)
    _write_inbreast_csv(root)
    result = CliRunner().invoke(data, ["summary", "--dataset", "inbreast", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["exclusion_reasons"] == {"no matching DICOM": 2, "BI-RADS 3 excluded (birads3='exclude')": 1}
    assert {e["source"] for e in report["exclusions"]} == {"INbreast.csv line 5", "INbreast.csv line 7",
                                                            "INbreast.csv line 8"}
    text = CliRunner().invoke(data, ["summary", "--dataset", "inbreast", "--data-dir", str(tmp_path)]).output
    assert text.count("no matching DICOM") == 3  # once counted, once per row
    assert "(INbreast.csv line 7)" in text


# --------------------------------------------------------------------------- VinDr-Mammo

def test_vindr_finding_lists_become_one_kind(tmp_path):
    images = [("9a0c", "1e2f", "L", "CC", "BI-RADS 4"), ("9a0c", "3b4d", "L", "MLO", "BI-RADS 4"),
              ("9a0c", "5c6e", "R", "CC", "BI-RADS 1"), ("9a0c", "7d8f", "R", "MLO", "BI-RADS 1")]
    header = write_breast_level(tmp_path, images, series="ser", height=3518, width=2800)
    finding_rows = [
        ("1e2f", "['Suspicious Calcification', 'Mass']"), ("1e2f", "['Architectural Distortion']"),
        ("3b4d", "['Focal Asymmetry']"), ("3b4d", "['Skin Thickening']"), ("3b4d", "['Suspicious Calcification']"),
    ]
    findings = [header + ",finding_categories,finding_birads,xmin,ymin,xmax,ymax"]
    for image, categories in finding_rows:
        findings.append(f'9a0c,ser,{image},L,CC,3518,2800,BI-RADS 4,DENSITY C,training,"{categories}",BI-RADS 4,'
                        "100.5,200.5,300.5,400.5")
    findings.append("9a0c,ser,5c6e,R,CC,3518,2800,BI-RADS 1,DENSITY C,training,\"['No Finding']\",,,,,")
    (tmp_path / "finding_annotations.csv").write_text("\n".join(findings) + "\n")
    for study, image, *_ in images:
        (tmp_path / "images" / study).mkdir(parents=True, exist_ok=True)
        (tmp_path / "images" / study / f"{image}.dicom").write_bytes(b"")
    loaded = load_dataset("vindr", tmp_path)
    by_image = {Path(r.path).stem: r for r in loaded.records}
    assert len(by_image) == 4 and loaded.excluded == ()
    assert [l.kind for l in by_image["1e2f"].lesions] == ["mass", "distortion"]
    assert [l.kind for l in by_image["3b4d"].lesions] == ["asymmetry", "other", "calcification"]
    assert by_image["5c6e"].lesions == ()


# --------------------------------------------------------------------------- RSNA

def test_rsna_rare_views_map_to_their_family(tmp_path):
    views = ["CC", "MLO", "AT", "LM", "ML", "LMO"]
    lines = [("site_id,patient_id,image_id,laterality,view,age,cancer,biopsy,invasive,BIRADS,implant,density,"
              "machine_id,difficult_negative_case")]
    for n, view in enumerate(views):
        lines.append(f"2,10130,{388811999 + n},{'L' if n % 2 else 'R'},{view},71.0,0,0,0,,0,,49,False")
        (tmp_path / "train_images" / "10130").mkdir(parents=True, exist_ok=True)
        (tmp_path / "train_images" / "10130" / f"{388811999 + n}.dcm").write_bytes(b"")
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    loaded = load_dataset("rsna", tmp_path)
    assert [(r.view, r.get("acquired_view")) for r in loaded.records] == [
        ("CC", None), ("MLO", None), ("MLO", "AT"), ("MLO", "LM"), ("MLO", "ML"), ("MLO", "LMO")]
    assert loaded.view_counts() == {"CC": 1, "MLO": 5}


# --------------------------------------------------------------------------- CSV manifest

def test_csv_manifest_reads_side_and_view_from_dicom_headers(tmp_path):
    ml = Dataset()
    ml.CodeValue, ml.CodingSchemeDesignator, ml.CodeMeaning = "399260004", "SCT", "medio-lateral"
    _dicom(tmp_path / "a.dcm", 8, 8, ImageLaterality="L", Laterality="R", ViewPosition="CC")
    _dicom(tmp_path / "b.dcm", 8, 8, Laterality="R", ViewCodeSequence=Sequence([ml]))
    _dicom(tmp_path / "c.dcm", 8, 8, ImageLaterality="R", ViewPosition="MLO")
    _dicom(tmp_path / "d.dcm", 8, 8)  # no side or view anywhere
    (tmp_path / "e.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "manifest.csv").write_text(
        "path,label,laterality,view\na.dcm,1,,\nb.dcm,0,,\nc.dcm,0,L,CC\nd.dcm,0,,\ne.png,1,,\n")
    loaded = load_dataset("csv", tmp_path)
    assert [(Path(r.path).name, r.laterality, r.view, r.get("acquired_view")) for r in loaded.records] == [
        ("a.dcm", "L", "CC", None),  # ImageLaterality wins over the series' Laterality
        ("b.dcm", "R", "MLO", "ML"),  # from ViewCodeSequence
        ("c.dcm", "L", "CC", None),  # the manifest wins over the header
        ("d.dcm", None, None, None),
        ("e.png", None, None, None),
    ]
    (tmp_path / "manifest.csv").write_text("path,label\na.dcm,1\n")  # no such columns at all
    assert [(r.laterality, r.view) for r in load_dataset("csv", tmp_path).records] == [("L", "CC")]


def test_csv_manifest_reads_headers_only(tmp_path):
    """Side and view come from the header even when the pixel data is cut off."""
    path = _dicom(tmp_path / "a.dcm", 64, 64, ImageLaterality="L", ViewPosition="MLO")
    path.write_bytes(path.read_bytes()[:-4000])
    (tmp_path / "manifest.csv").write_text("path,label\na.dcm,1\n")
    assert [(r.laterality, r.view) for r in load_dataset("csv", tmp_path).records] == [("L", "MLO")]
