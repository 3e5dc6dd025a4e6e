"""Reports and scores.csv name the evaluated task's classes, and never confuse truth with decision."""

from __future__ import annotations

import csv

import numpy as np

from mammojax.evaluation.evaluate import (
    SCORES_COLUMNS,
    ScoredImages,
    summarize,
    write_outputs,
)


def _scored() -> ScoredImages:
    labels = np.array([0, 1, 0, 1, 1, 0])
    margins = np.array([-2.0, 1.5, 0.3, -0.4, 2.0, -1.0])
    return ScoredImages(paths=[f"/d/mdb{i:03d}.pgm" for i in range(1, 7)], labels=labels,
                        patient_ids=["mias001", "mias001", "mias002", "mias002", "mias003", "mias003"],
                        lateralities=["R", "L"] * 3, logits=np.stack([np.zeros(6), margins], axis=1))


def _result(scored, **names) -> dict:
    result = summarize(scored, tau=0.5, n_bootstrap=10)
    result.update({"dataset": "mias", "task": "default",
                   "task_description": "abnormal (any finding, benign or malignant) vs normal",
                   "class_names": ["normal", "abnormal"], **names})
    return result


def test_scores_csv_has_truth_and_decision_by_class_name(tmp_path):
    scored = _scored()
    write_outputs(tmp_path, _result(scored), scored, temperature=1.0, report=False)
    with open(tmp_path / "scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == SCORES_COLUMNS and "label" not in rows[0]
    probabilities = scored.probabilities(1.0)
    for row, label, p in zip(rows, scored.labels, probabilities):
        assert row["truth"] == ["normal", "abnormal"][label]
        assert row["decision"] == ("abnormal" if p >= 0.5 else "normal")
        assert float(row["probability"]) == round(float(p), 6)


def test_report_says_abnormal_not_cancer(tmp_path):
    scored = _scored()
    written = write_outputs(tmp_path, _result(scored, checkpoint_class_names=["normal", "lesion"]), scored,
                            temperature=1.0)
    markdown = written["markdown"].read_text()
    assert "Classes: abnormal (positive, 1) vs normal (0): abnormal (any finding" in markdown
    assert "called abnormal when its probability of abnormal >= its level's tau" in markdown
    # A checkpoint trained for other classes is said to be read as this task's.
    assert "trained to tell lesion from normal" in markdown
    assert "cancer" not in markdown.lower() and "cancer" not in written["html"].read_text().lower()
