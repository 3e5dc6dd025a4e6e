"""summarize() numbers, metrics.json and the self-contained HTML/Markdown report."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from mammojax.evaluation.evaluate import ScoredImages, summarize, write_outputs
from mammojax.evaluation.metrics import classification_metrics


def _scored(seed=0, n_patients=30, scale=3.0):
    """Four images per patient (two per breast); over-confident logits (scale)."""
    rng = np.random.default_rng(seed)
    patients = np.repeat([f"P{i:03d}" for i in range(n_patients)], 4)
    sides = ["L", "L", "R", "R"] * n_patients
    labels = np.repeat(rng.integers(0, 2, n_patients), 4)
    z = rng.normal(labels * 1.5 - 0.75, 1.0)
    logit = np.stack([np.zeros_like(z), z * scale], axis=1)
    logits = logit  # film logits (N, C), as mammojax.scoring.Scorer returns them
    paths = [f"/data/{p}_{i}.png" for i, p in enumerate(patients)]
    return ScoredImages(paths=paths, labels=labels, patient_ids=list(patients),
                        lateralities=sides, logits=logits, excluded=[("/data/bad.png", "corrupt")])


def test_summarize_levels_and_calibration():
    scored = _scored()
    result = summarize(scored, tau=0.5, temperature=3.0, n_bootstrap=100, seed=1)
    probs = scored.probabilities(3.0)
    image = result["levels"]["image"]
    expected = classification_metrics(scored.labels, probs, 0.5)
    for key in ("auc", "sensitivity", "specificity", "tp", "fn"):
        assert image[key] == pytest.approx(expected[key])
    assert result["levels"]["patient"]["n"] == 30
    assert result["levels"]["breast"]["n"] == 60
    assert image["auc_ci"]["low"] <= image["auc"] <= image["auc_ci"]["high"]
    cal = result["calibration"]
    assert cal["ece_after"] < cal["ece_before"] and cal["nll_after"] < cal["nll_before"]
    assert result["tau_optimistic"] is False and result["n_excluded"] == 1


def test_recomputed_threshold_is_flagged_optimistic(tmp_path):
    scored = _scored(1)
    result = summarize(scored, tau=0.5, temperature=1.0, n_bootstrap=50,
                       threshold_policy="youden")
    assert result["tau_optimistic"] and "optimistic" in result["tau_source"]
    written = write_outputs(tmp_path, result, scored, temperature=1.0)
    assert "optimistic" in written["html"].read_text() and "optimistic" in written["markdown"].read_text()


def test_report_files_written_and_html_self_contained(tmp_path):
    scored = _scored(2)
    result = summarize(scored, tau=0.4, temperature=2.0, n_bootstrap=50)
    written = write_outputs(tmp_path, result, scored, temperature=2.0)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["levels"]["patient"]["auc"] == pytest.approx(result["levels"]["patient"]["auc"])
    html = written["html"].read_text()
    sources = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in html and "http://" not in html and "https://" not in html
    for name in ("roc", "pr", "confusion", "histogram", "reliability"):
        png = (tmp_path / "figures" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG")
    markdown = written["markdown"].read_text()
    auc = f"{result['levels']['image']['auc']:.3f}"
    assert auc in markdown and auc in html  # the same numbers in both documents
    sens = f"{result['levels']['patient']['sensitivity']:.3f}"
    assert sens in markdown and sens in html
    rows = (tmp_path / "scores.csv").read_text().splitlines()
    assert len(rows) == 1 + len(scored.paths)


def test_one_class_data_gives_null_auc_not_a_crash(tmp_path):
    scored = _scored(3)
    scored.labels = np.zeros_like(scored.labels)
    result = summarize(scored, tau=0.5, n_bootstrap=20)
    from mammojax.jsonio import json_safe

    clean = json_safe(result)
    assert clean["levels"]["image"]["auc"] is None
    write_outputs(tmp_path, clean, scored, temperature=1.0)
    assert "n/a" in (tmp_path / "report.md").read_text()


def test_the_eval_report_shows_the_shortcut_checks(tmp_path):
    scored = _scored()
    result = summarize(scored, tau=0.5, n_bootstrap=10)
    report = {"features": ["machine_id", "age"], "metadata_auc": 0.66, "metadata_auc_low": 0.61,
              "metadata_auc_high": 0.70, "image_auc": 0.58, "group_key": "machine_id", "min_per_class": 30,
              "within_machine": [{"group": "49", "n": 400, "n_pos": 120, "auc": 0.534}]}
    written = write_outputs(tmp_path, {**result, "shortcuts": report}, scored, temperature=1.0)
    markdown = written["markdown"].read_text()
    assert "## Shortcut checks" in markdown and "AUC 0.66 (0.61-0.70)" in markdown
    assert "| 49 | 400 (120) | 0.534 |" in markdown
    html_text = written["html"].read_text()
    assert "Shortcut checks" in html_text and "<td>400 (120)</td>" in html_text
    # A dataset without metadata says the checks do not apply.
    written = write_outputs(tmp_path / "bare", {**result, "shortcuts": None}, scored, temperature=1.0)
    assert "not applicable" in written["markdown"].read_text()
