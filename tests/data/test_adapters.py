"""Dataset adapters: the real mini-MIAS copy and small fixture layouts per dataset."""

from __future__ import annotations

import collections
import io
import plistlib
import tarfile
from pathlib import Path

import pytest

from mammojax.data.adapters.mias import parse_info
from mammojax.data.records import load_dataset
from mammojax.errors import MammojaxError

from paths import MIAS_ARCHIVE  # noqa: E402
from vindr_support import write_breast_level  # noqa: E402
needs_mias = pytest.mark.skipif(not MIAS_ARCHIVE.is_file(), reason=f"{MIAS_ARCHIVE} not available")


# --------------------------------------------------------------------------- mini-MIAS, real copy

@pytest.fixture(scope="module")
def mias_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mias-cache")


@pytest.fixture(scope="module")
def mias(mias_cache):
    return load_dataset("mias", MIAS_ARCHIVE, cache_dir=str(mias_cache))


@needs_mias
def test_mias_from_archive_counts(mias):
    assert len(mias.records) == 242 and mias.excluded == ()
    severities = collections.Counter(r.get("severity") for r in mias.records)
    assert severities == {"normal": 156, "benign": 47, "malignant": 39}
    assert mias.label_counts() == {0: 156, 1: 86}  # task "abnormal": any finding
    assert mias.view_counts() == {"MLO": 242}


@needs_mias
def test_mias_patients_are_breast_pairs(mias):
    by_patient = collections.defaultdict(list)
    for record in mias.records:
        by_patient[record.patient_id].append(record)
    assert mias.num_patients == 121 and all(len(v) == 2 for v in by_patient.values())
    for pair in by_patient.values():
        numbers = sorted(int(Path(r.path).stem[3:]) for r in pair)
        assert numbers[0] % 2 == 1 and numbers[1] == numbers[0] + 1
        sides = {int(Path(r.path).stem[3:]) % 2: r.laterality for r in pair}
        assert sides == {0: "L", 1: "R"}  # even = left, odd = right (Info.txt note 1)


@needs_mias
def test_mias_lesion_rows_flip_bottom_left_origin(mias):
    by_name = {Path(r.path).stem: r for r in mias.records}
    # Info.txt: "mdb001 G CIRC B 535 425 197"
    lesion = by_name["mdb001"].lesions[0]
    assert (lesion.row, lesion.col, lesion.radius) == (1023 - 425, 535, 197)
    assert lesion.kind == "mass" and lesion.severity == "benign"
    # Two rows for mdb005; "*NOTE 3*" rows give a positive image without a location.
    assert len(by_name["mdb005"].lesions) == 2
    assert by_name["mdb216"].label == 1 and by_name["mdb216"].lesions == ()
    assert by_name["mdb003"].label == 0 and by_name["mdb003"].get("classes") == "NORM"


@needs_mias
def test_mias_malignant_task_and_extracted_folder(mias, mias_cache):
    folders = [p for p in mias_cache.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(folders) == 1  # extracted once, into the given cache dir
    malignant = load_dataset("mias", folders[0], task="malignant")
    assert malignant.label_counts() == {0: 203, 1: 39}
    assert [r.path for r in malignant.records] == [r.path for r in mias.records]
    again = load_dataset("mias", MIAS_ARCHIVE, cache_dir=str(mias_cache))
    assert again == mias
    assert len([p for p in mias_cache.iterdir() if p.is_dir()]) == 1


# --------------------------------------------------------------------------- mini-MIAS quirks

QUIRKY_INFO = """\
         MAMMOGRAPHIC IMAGE ANALYSIS SOCIETY
1st column: MIAS database reference number.
mdb is a prefix, and notes like this one are not rows.
=====
mdb001 G CIRC B 535 425 197
mdb002 D NORM 
mdb003 F CALC M *NOTE 3* 
mdb004 F CIRC B
mdb005 F CIRC B 4 2 1\t
mdb005 F SPIC M 10 12 3
mdb007 G NORM
"""


def _pgm(path: Path, width: int, height: int) -> None:
    path.write_bytes(f"P5\n# comment\n{width} {height}\n255\n".encode() + bytes(width * height))


def test_parse_info_quirks():
    rows = parse_info(QUIRKY_INFO)
    assert [r.refnum for r in rows] == ["mdb001", "mdb002", "mdb003", "mdb004", "mdb005", "mdb005", "mdb007"]
    assert rows[1].abnormality == "NORM" and rows[1].severity is None
    assert rows[2].x is None and rows[2].severity == "M"  # *NOTE 3*
    assert rows[3].x is None and rows[3].severity == "B"  # 4 fields
    assert (rows[4].x, rows[4].y, rows[4].radius) == (4.0, 2.0, 1.0)
    with pytest.raises(MammojaxError, match="unknown abnormality"):
        parse_info("mdb001 G BLOB B 1 2 3")


def test_mias_fixture_folder(tmp_path):
    nested = tmp_path / "download" / "all-mias"
    nested.mkdir(parents=True)
    (nested / "Info.txt").write_text(QUIRKY_INFO)
    for n in (1, 2, 3, 4, 6):
        _pgm(nested / f"mdb{n:03d}.pgm", 16, 16)
    _pgm(nested / "mdb005.pgm", 16, 20)  # the header's height is used for row = H-1-y
    data = load_dataset("mias", tmp_path / "download")
    by_name = {Path(r.path).stem: r for r in data.records}
    assert sorted(by_name) == ["mdb001", "mdb002", "mdb003", "mdb004", "mdb005"]
    assert [(l.row, l.col) for l in by_name["mdb005"].lesions] == [(17.0, 4.0), (7.0, 10.0)]
    assert by_name["mdb005"].get("severity") == "malignant"
    assert by_name["mdb005"].get("classes") == "CIRC,SPIC"
    assert [by_name[f"mdb00{n}"].label for n in (1, 2, 3, 4, 5)] == [1, 0, 1, 1, 1]
    reasons = {Path(e.path).name: e.reason for e in data.excluded}
    assert reasons == {"mdb007.pgm": "listed in Info.txt but missing on disk", "mdb006.pgm": "no row in Info.txt"}
    assert by_name["mdb003"].patient_id == by_name["mdb004"].patient_id != by_name["mdb005"].patient_id
    malignant = load_dataset("mias", nested, task="malignant")
    assert [r.label for r in malignant.records] == [0, 0, 1, 0, 1]


def _tar_with(path: Path, member: tarfile.TarInfo, payload: bytes = b"") -> None:
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(member, io.BytesIO(payload) if payload else None)


@pytest.mark.parametrize("name,kind", [("../evil.txt", "file"), ("/abs/Info.txt", "file"), ("link", "symlink")])
def test_unsafe_archives_are_refused(tmp_path, name, kind):
    archive = tmp_path / "bad.tar.gz"
    member = tarfile.TarInfo(name)
    if kind == "symlink":
        member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
        _tar_with(archive, member)
    else:
        member.size = 3
        _tar_with(archive, member, b"abc")
    with pytest.raises(MammojaxError, match="unsafe member|refusing link"):
        load_dataset("mias", archive, cache_dir=str(tmp_path / "cache"))
    assert not (tmp_path / "evil.txt").exists()
    assert not any(p.name.startswith("bad") for p in (tmp_path / "cache").glob("*"))


# --------------------------------------------------------------------------- INbreast

def _inbreast(tmp_path: Path) -> Path:
    root = tmp_path / "INbreast Release 1.0"
    (root / "AllDICOMs").mkdir(parents=True)
    (root / "AllXML").mkdir()
    rows = [("1001", "L", "CC", "4a"), ("1002", "L", "MLO", "2"), ("1003", "R", "CC", "3"),
            ("1004", "R", "MLO", "1"), ("1005", "R", "CC", "5"), ("1006", "L", "CC", " ")]
    lines = ["Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads"]
    for file_name, side, view, birads in rows:
        lines.append(f"removed;removed;{side};{view};2001;{file_name};2;{birads}")
        if file_name != "1005":  # 1005 has no DICOM
            patient = "aaaa0000bbbb1111" if file_name < "1004" else "cccc2222dddd3333"
            dicom_view = "ML" if view == "MLO" else view
            (root / "AllDICOMs" / f"{file_name}_{patient}_MG_{side}_{dicom_view}_ANON.dcm").write_bytes(b"")
    (root / "INbreast.csv").write_text("\n".join(lines) + "\n")
    roi = {"Name": "Mass", "Point_px": ["(10.0, 20.0)", "(30.0, 20.0)", "(20.0, 10.0)", "(20.0, 30.0)"]}
    calc = {"Name": "Calcification", "Point_px": ["(5, 6)"]}
    with open(root / "AllXML" / "1001.xml", "wb") as handle:
        plistlib.dump({"Images": [{"NumberOfROIs": 2, "ROIs": [roi, calc]}]}, handle)
    return root


def test_inbreast_labels_patients_views_and_rois(tmp_path):
    _inbreast(tmp_path)
    data = load_dataset("inbreast", tmp_path)
    by_file = {Path(r.path).name.split("_")[0]: r for r in data.records}
    assert {k: r.label for k, r in by_file.items()} == {"1001": 1, "1002": 0, "1004": 0}
    assert by_file["1002"].view == "MLO" and by_file["1001"].laterality == "L"
    assert by_file["1001"].patient_id == "aaaa0000bbbb1111" != by_file["1004"].patient_id
    mass, calc = by_file["1001"].lesions
    assert (mass.kind, mass.row, mass.col, mass.radius) == ("mass", 20.0, 20.0, 10.0)
    assert (calc.kind, calc.row, calc.col) == ("calcification", 6.0, 5.0)
    reasons = sorted(e.reason for e in data.excluded)
    assert reasons[0].startswith("BI-RADS 3 excluded")
    assert any("no matching DICOM" in r for r in reasons) and any("no usable BI-RADS" in r for r in reasons)
    negative = load_dataset("inbreast", tmp_path, birads3="negative")
    assert len(negative.records) == 4 and negative.label_counts() == {0: 3, 1: 1}
    # A loose INbreast file (predict) is grouped by the adapter's own rule.
    from mammojax.data.records import patient_from_file_name

    assert all(patient_from_file_name(r.path) == r.patient_id for r in data.records)
    assert patient_from_file_name(tmp_path / "P001_L_CC.png") is None


def test_inbreast_unreadable_xls_is_one_line(tmp_path):
    (tmp_path / "AllDICOMs").mkdir()
    (tmp_path / "INbreast.xls").write_bytes(b"\xd0\xcf")
    pytest.importorskip("xlrd")
    with pytest.raises(MammojaxError, match=r"INbreast.xls: not a readable .xls spreadsheet \(\w+\)$"):
        load_dataset("inbreast", tmp_path)


# --------------------------------------------------------------------------- CBIS-DDSM

MASS_HEADER = ("patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,"
               "mass shape,mass margins,assessment,pathology,subtlety,image file path,"
               "cropped image file path,ROI mask file path")
CALC_HEADER = MASS_HEADER.replace("breast_density", "breast density").replace(
    "mass shape,mass margins", "calc type,calc distribution")


def test_cbis_ddsm_aggregates_rows_and_resolves_paths(tmp_path):
    image_a = "Mass-Training_P_00001_LEFT_CC/1.2/1.3/000000.dcm"
    image_b = "Calc-Test_P_00002_RIGHT_MLO/1.4/1.5/000000.dcm"
    mask_a = "Mass-Training_P_00001_LEFT_CC_1/1.6/1.7/000001.dcm"
    (tmp_path / image_a).parent.mkdir(parents=True)
    (tmp_path / image_a).write_bytes(b"")
    (tmp_path / mask_a).parent.mkdir(parents=True)
    (tmp_path / mask_a).with_suffix(".png").write_bytes(b"")  # converted mask
    (tmp_path / "mass_case_description_train_set.csv").write_text(
        MASS_HEADER + "\n"
        f"P_00001,3,LEFT,CC,1,mass,OVAL,CIRCUMSCRIBED,4,BENIGN_WITHOUT_CALLBACK,3,{image_a},x,\"{mask_a}\n\"\n"
        f"P_00001,3,LEFT,CC,2,mass,OVAL,SPICULATED,5,MALIGNANT,5, {image_a} ,x,\n"
        f"P_00003,2,LEFT,MLO,1,mass,OVAL,SPICULATED,5,MALIGNANT,5,Mass-Training_P_00003_LEFT_MLO/a/b/000000.dcm,x,\n")
    (tmp_path / image_b).parent.mkdir(parents=True)
    (tmp_path / image_b).with_suffix(".png").write_bytes(b"")
    (tmp_path / "calc_case_description_test_set.csv").write_text(
        CALC_HEADER + "\n" f"P_00002,4,RIGHT,MLO,1,calcification,PLEOMORPHIC,CLUSTERED,4,BENIGN,2,{image_b},x,\n")
    data = load_dataset("cbis_ddsm", tmp_path)
    by_patient = {r.patient_id: r for r in data.records}
    assert set(by_patient) == {"P_00001", "P_00002"}
    a, b = by_patient["P_00001"], by_patient["P_00002"]
    assert a.label == 1 and len(a.lesions) == 2 and a.laterality == "L" and a.view == "CC"
    assert a.lesions[0].mask_path == str((tmp_path / mask_a).with_suffix(".png"))
    assert a.lesions[1].mask_path is None and a.get("split") == "train" and a.get("density") == "3"
    assert b.label == 0 and b.path.endswith(".png") and b.get("density") == "4" and b.laterality == "R"
    assert [e.reason for e in data.excluded] == ["image file not found (CSV path or case folder)"]
    with pytest.raises(MammojaxError, match="none of the CBIS-DDSM"):
        load_dataset("cbis_ddsm", tmp_path / image_a)


# --------------------------------------------------------------------------- VinDr-Mammo

def test_vindr_birads_labels_and_boxes(tmp_path):
    rows = [("s1", "i1", "L", "CC", "BI-RADS 4"), ("s1", "i2", "R", "MLO", "BI-RADS 1"),
            ("s2", "i3", "L", "MLO", "BI-RADS 3"), ("s2", "i4", "R", "CC", "BI-RADS 2")]
    header = write_breast_level(tmp_path, rows, series="x", height=100, width=80)
    (tmp_path / "finding_annotations.csv").write_text(
        header + ",finding_categories,finding_birads,xmin,ymin,xmax,ymax\n"
        "s1,x,i1,L,CC,100,80,BI-RADS 4,DENSITY C,training,\"['Mass']\",BI-RADS 4,10,20,30,60\n"
        "s1,x,i2,R,MLO,100,80,BI-RADS 1,DENSITY C,training,\"['No Finding']\",,,,,\n")
    for s, i, *_ in rows[:3]:
        (tmp_path / "images" / s).mkdir(parents=True, exist_ok=True)
        (tmp_path / "images" / s / f"{i}.dicom").write_bytes(b"")
    data = load_dataset("vindr", tmp_path)
    assert [(Path(r.path).stem, r.label, r.patient_id) for r in data.records] == [("i1", 1, "s1"), ("i2", 0, "s1")]
    lesion = data.records[0].lesions[0]
    assert (lesion.kind, lesion.row, lesion.col) == ("mass", 40.0, 20.0) and data.records[1].lesions == ()
    assert data.records[0].get("split") == "training"
    assert sorted(e.reason for e in data.excluded) == ["BI-RADS 3 excluded (birads3='exclude')",
                                                       "image file not found"]
    assert load_dataset("vindr", tmp_path, birads3="negative").label_counts() == {0: 2, 1: 1}


# --------------------------------------------------------------------------- RSNA

def test_rsna_cancer_column_and_layout(tmp_path):
    (tmp_path / "train.csv").write_text(
        "site_id,patient_id,image_id,laterality,view,age,cancer,biopsy,invasive,BIRADS,implant,density\n"
        "1,10006,462822612,L,CC,61,0,0,0,,0,\n"
        "1,10006,1459541791,L,MLO,61,1,1,1,,0,\n"
        "2,10011,220375232,R,CC,55,0,0,0,1,0,B\n")
    for patient, image in (("10006", "462822612"), ("10006", "1459541791")):
        (tmp_path / "train_images" / patient).mkdir(parents=True, exist_ok=True)
        (tmp_path / "train_images" / patient / f"{image}.dcm").write_bytes(b"")
    data = load_dataset("rsna", tmp_path)
    assert [(r.label, r.patient_id, r.laterality, r.view) for r in data.records] == \
        [(0, "10006", "L", "CC"), (1, "10006", "L", "MLO")]
    assert data.records[0].get("site_id") == "1"
    assert len(data.excluded) == 1 and "220375232" in data.excluded[0].path


# --------------------------------------------------------------------------- CSV manifest

def test_csv_manifest(tmp_path):
    (tmp_path / "img").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "img" / name).write_bytes(b"")
    (tmp_path / "manifest.csv").write_text(
        "path,label,patient_id,laterality,view\nimg/a.png,1,w1,left,cc\nimg/b.png,0,,R,MLO\nimg/c.png,0,w2,,\n")
    data = load_dataset("csv", tmp_path)
    assert [(r.label, r.patient_id, r.laterality, r.view) for r in data.records] == \
        [(1, "w1", "L", "CC"), (0, "b", "R", "MLO")]
    assert data.records[0].path == str(tmp_path / "img" / "a.png")
    assert [(e.reason, e.source) for e in data.excluded] == [("file not found", "manifest.csv line 4")]


@pytest.mark.parametrize("text,message", [
    ("file,label\na.png,1\n", "missing column"),
    ("path,label\na.png,yes\n", "label must be 0 or 1"),
    ("path,label,laterality\na.png,1,up\n", "laterality must be L or R"),
    ("", "empty file"),
])
def test_csv_manifest_errors_name_the_file(tmp_path, text, message):
    manifest = tmp_path / "data.csv"
    manifest.write_text(text)
    with pytest.raises(MammojaxError, match=message) as err:
        load_dataset("csv", manifest)
    assert "data.csv" in str(err.value)
