"""Fixtures of the clinic tests: one tiny checkpoint with its own operating point per level, and
a folder of DICOM exams carrying planted identifiers (plus the inputs that get no DICOM output)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clinic_support import IDENTIFIERS, OPERATING_POINTS, run_cli


@pytest.fixture(scope="session")
def clinic_checkpoint(tmp_path_factory) -> Path:
    from eval_support import make_tiny_checkpoint

    path = make_tiny_checkpoint(tmp_path_factory.mktemp("clinic-ckpt") / "best")
    meta_file = path / "mammojax.json"
    meta = json.loads(meta_file.read_text())
    meta["operating_points"] = OPERATING_POINTS
    meta_file.write_text(json.dumps(meta))
    return path


def _film(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:96, 0:80]
    pixels = (rows + cols) * 20 + rng.integers(0, 300, (96, 80))
    pixels[30:42, 28:40] += 1500 * (seed % 2)  # a bright spot on some films
    return pixels.clip(0, 4095).astype(np.uint16)


@pytest.fixture(scope="session")
def exam_inputs(tmp_path_factory) -> dict:
    """Exam A: four views (L/R x CC/MLO); exam B: a left CC and a film of unknown side; a DICOM
    without Study Instance UID; a PNG. Returns the folder and each DICOM's UIDs by file name."""
    import pydicom
    from PIL import Image
    from pydicom.uid import generate_uid

    from mammojax.data.synthetic import write_dicom

    folder = tmp_path_factory.mktemp("exams")
    studies = {"A": generate_uid(), "B": generate_uid()}
    series = {"A": generate_uid(), "B": generate_uid()}
    films = [("A", "L", "CC"), ("A", "L", "MLO"), ("A", "R", "CC"), ("A", "R", "MLO"), ("B", "L", "CC"),
             ("B", None, "MLO")]
    uids = {}
    for seed, (exam, side, view) in enumerate(films):
        name = f"w{exam}_{side}_{view}.dcm" if side else f"w{exam}_{view}.dcm"
        extra = {"ImageLaterality": side} if side else {}
        write_dicom(folder / name, _film(seed), bits_stored=12, StudyInstanceUID=studies[exam],
                    SeriesInstanceUID=series[exam], ViewPosition=view, PatientSex="F", StudyDate="20240105",
                    StudyTime="093000", StudyID="ST1", SeriesNumber=1, InstanceNumber=seed + 1,
                    PatientOrientation=["A", "R" if side == "L" else "L"], **extra, **IDENTIFIERS)
        ds = pydicom.dcmread(folder / name, stop_before_pixels=True)
        uids[name] = {"study": studies[exam], "series": series[exam], "sop": str(ds.SOPInstanceUID),
                      "sop_class": str(ds.SOPClassUID), "exam": exam, "laterality": side}
    write_dicom(folder / "no_study.dcm", _film(9), bits_stored=12, ImageLaterality="R", **IDENTIFIERS)
    Image.fromarray((np.random.default_rng(3).random((48, 40)) * 200).astype(np.uint8)).save(folder / "P9_L_CC.png")
    return {"folder": folder, "uids": uids, "studies": studies}


@pytest.fixture(scope="session")
def dicom_run(clinic_checkpoint, exam_inputs, tmp_path_factory) -> dict:
    """``predict --dicom-out`` once over the exam folder: exit code, console, CSV rows, output folder."""
    import csv

    root = tmp_path_factory.mktemp("dicom-run")
    code, console = run_cli(["predict", "--checkpoint", str(clinic_checkpoint), str(exam_inputs["folder"]),
                             "--batch-size", "4", "--out", str(root / "scores.csv"),
                             "--dicom-out", str(root / "dicom")])
    rows = list(csv.DictReader((root / "scores.csv").open()))
    return {"code": code, "console": console, "rows": rows, "csv": root / "scores.csv", "out": root / "dicom"}
