"""Exams, not loose films: DICOM images grouped by Study Instance UID and laterality into breast
and exam rows, each level at its own stored operating point, with the rule named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from clinic_support import OPERATING_POINTS

from mammojax.clinic.exams import level_results
from mammojax.evaluation.operating_points import OperatingPoint, margin_probabilities


class _Points:
    """What level_results reads of a scorer: operating points and decisions."""

    operating_points = {level: OperatingPoint(**point) for level, point in OPERATING_POINTS.items()}
    class_names = ["normal", "lesion"]

    def decision(self, probability, level="image"):
        return self.class_names[int(probability >= self.operating_points[level].tau)]


def test_breasts_then_exam_per_exam_each_at_its_level():
    margins = [0.2, -1.0, 0.9, 0.1, -0.3]
    exams = ["exam-1", "exam-1", "exam-1", "exam-2", "exam-2"]
    sides = ["L", "L", "R", "L", None]
    for how, reduce in (("max", np.max), ("mean", np.mean)):
        results = list(level_results(_Points(), margins, exams, sides, how))
        assert [(r.kind, r.exam, r.laterality) for r in results] == [
            ("breast", "exam-1", "L"), ("breast", "exam-1", "R"), ("exam", "exam-1", None),
            ("breast", "exam-2", "L"), ("breast", "exam-2", None), ("exam", "exam-2", None)]
        left, _, exam1, _, unknown, _ = results
        assert left.members == (0, 1) and exam1.members == (0, 1, 2) and unknown.members == (4,)
        breast, patient = (OPERATING_POINTS[k] for k in ("breast", "patient"))
        assert left.probability == pytest.approx(margin_probabilities(reduce([0.2, -1.0]), breast["temperature"],
                                                                      breast["offset"]))
        assert exam1.probability == pytest.approx(margin_probabilities(reduce([0.2, -1.0, 0.9]),
                                                                       patient["temperature"], patient["offset"]))
        assert left.tau == breast["tau"] and exam1.tau == patient["tau"]
        assert all(r.rule == how for r in results)
        assert exam1.decision == ("lesion" if exam1.probability >= patient["tau"] else "normal")


def test_predict_rows_group_dicom_exams_and_name_no_uid(dicom_run, exam_inputs):
    rows = dicom_run["rows"]
    images = {Path(r["path"]).name: r for r in rows if r["kind"] == "image"}
    # exam-N in the order of this run; the UID never appears.
    assert {images[n]["exam"] for n in images if n.startswith("wA")} == {"exam-1"}
    assert {images[n]["exam"] for n in images if n.startswith("wB")} == {"exam-2"}
    assert images["P9_L_CC.png"]["exam"] == "" and images["no_study.dcm"]["exam"] == ""
    assert images["wA_R_MLO.dcm"]["laterality"] == "R" and images["wB_MLO.dcm"]["laterality"] == ""
    text = dicom_run["csv"].read_text()
    assert not any(uid in text for uid in exam_inputs["studies"].values())

    breasts = [r for r in rows if r["kind"] == "breast"]
    exams = [r for r in rows if r["kind"] == "exam"]
    assert [(r["exam"], r["laterality"], r["n_images"]) for r in breasts] == [
        ("exam-1", "L", "2"), ("exam-1", "R", "2"), ("exam-2", "L", "1"), ("exam-2", "", "1")]
    assert [(r["exam"], r["n_images"]) for r in exams] == [("exam-1", "4"), ("exam-2", "2")]
    for row in breasts + exams:
        point = OPERATING_POINTS["breast" if row["kind"] == "breast" else "patient"]
        assert float(row["tau"]) == point["tau"] and row["rule"] == "max"
        assert row["decision"] == ("lesion" if float(row["probability"]) >= point["tau"] else "normal")
    # A breast's score: the max of its images' margins through the breast calibration. The
    # images' own probabilities are at the image calibration: margin = T_image * (logit(p) - b_image).
    def margin(name):
        p = float(images[name]["probability"])
        return OPERATING_POINTS["image"]["temperature"] * (np.log(p / (1 - p)) - OPERATING_POINTS["image"]["offset"])

    breast, patient = OPERATING_POINTS["breast"], OPERATING_POINTS["patient"]
    expected = margin_probabilities(max(margin("wA_L_CC.dcm"), margin("wA_L_MLO.dcm")),
                                    breast["temperature"], breast["offset"])
    assert float(breasts[0]["probability"]) == pytest.approx(expected, abs=2e-5)
    expected = margin_probabilities(max(margin(n) for n in images if n.startswith("wA")),
                                    patient["temperature"], patient["offset"])
    assert float(exams[0]["probability"]) == pytest.approx(expected, abs=2e-5)
    # Patients keep the dataset's rule (file names), beside the exams.
    assert {r["patient_id"] for r in rows if r["kind"] == "patient"} == {"wA", "wB", "no_study", "P9"}
