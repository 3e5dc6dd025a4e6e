"""Operating points per level: fitted on that level's validation scores, stored, read back, applied."""

from __future__ import annotations

import numpy as np
import pytest

from mammojax.evaluation import aggregate as agg
from mammojax.evaluation.operating_points import (LEVELS, OperatingPoint, fit_operating_points, level_margins,
                                                  margin_probabilities, read_operating_points, to_meta)


def _validation(seed=0, women=60):
    """Four views per woman (two per breast); an abnormal woman has one lesion view."""
    rng = np.random.default_rng(seed)
    patients = np.repeat([f"W{i}" for i in range(women)], 4)
    sides = ["L", "L", "R", "R"] * women
    sick = rng.random(women) < 0.4
    labels = np.zeros(4 * women, np.int64)
    labels[np.flatnonzero(sick) * 4] = 1  # the lesion is seen on one view
    margins = rng.normal(0.0, 1.0, labels.size) + 2.0 * labels
    logits = np.stack([np.zeros_like(margins), margins], axis=1)
    return logits, labels, list(patients), sides


def test_max_of_margins_at_one_temperature_is_the_max_of_image_probabilities():
    logits, labels, patients, sides = _validation()
    grouped = level_margins(logits, labels, patients, sides, "patient", "max")
    image_probs = margin_probabilities(logits[:, 1], 1.7)
    expected = agg.by_level(labels, image_probs, patients, sides, "patient", "max").scores
    np.testing.assert_allclose(margin_probabilities(grouped.scores, 1.7), expected, atol=1e-12)


def test_each_level_gets_its_own_tau_and_temperature():
    from mammojax.evaluation.calibration import negative_log_likelihood

    logits, labels, patients, sides = _validation()
    points = fit_operating_points(logits, labels, patients, sides, policy="youden")
    assert set(points) == set(LEVELS)
    # A woman's max over four views runs higher than one view: so must her threshold (in margins).
    def margin_threshold(point):  # the margin whose probability is tau
        return point.temperature * (np.log(point.tau / (1 - point.tau)) - point.offset)

    assert margin_threshold(points["patient"]) > margin_threshold(points["image"]) + 0.2
    for level, point in points.items():
        grouped = level_margins(logits, labels, patients, sides, level)
        np.testing.assert_allclose(point.probabilities(grouped.scores),
                                   margin_probabilities(grouped.scores, point.temperature, point.offset))
        p = point.probabilities(grouped.scores)
        fitted = np.log(np.stack([1 - p, p], axis=1))
        z = np.stack([np.zeros_like(grouped.scores), grouped.scores], axis=1)
        assert negative_log_likelihood(fitted, grouped.labels) <= \
            negative_log_likelihood(z, grouped.labels, 1.0) + 1e-9


def test_points_round_trip_through_the_checkpoint_and_old_checkpoints_read_as_one_pair():
    points = {"image": OperatingPoint(0.3, 2.0, -0.5), "breast": OperatingPoint(0.4, 1.5, 0.25),
              "patient": OperatingPoint(0.6, 1.2)}
    assert read_operating_points({"operating_points": to_meta(points), "tau": 0.3, "temperature": 2.0}) == points
    old = read_operating_points({"tau": 0.35, "temperature": 3.0})
    assert all(p == OperatingPoint(0.35, 3.0, 0.0) for p in old.values())
    # Points stored before the offset existed read with none.
    stored = {level: {"tau": 0.5, "temperature": 1.5} for level in LEVELS}
    assert read_operating_points({"operating_points": stored})["breast"] == OperatingPoint(0.5, 1.5, 0.0)


def test_the_report_reads_each_level_at_its_own_tau():
    from mammojax.evaluation.evaluate import ScoredImages, summarize
    from mammojax.evaluation.metrics import classification_metrics

    logits, labels, patients, sides = _validation(seed=1)
    scored = ScoredImages(paths=[f"{i}.png" for i in range(len(labels))], labels=labels, patient_ids=patients,
                          lateralities=sides, logits=logits)
    points = {"image": OperatingPoint(0.5, 1.0), "breast": OperatingPoint(0.7, 1.0),
              "patient": OperatingPoint(0.8, 2.0)}
    result = summarize(scored, tau=0.5, operating_points=points, n_bootstrap=20)
    grouped = level_margins(logits, labels, patients, sides, "patient")
    expected = classification_metrics(grouped.labels, margin_probabilities(grouped.scores, 2.0), tau=0.8)
    patient = result["levels"]["patient"]
    assert patient["tau"] == 0.8 and patient["temperature"] == 2.0
    assert patient["sensitivity"] == pytest.approx(expected["sensitivity"])
    assert patient["specificity"] == pytest.approx(expected["specificity"])
    assert result["levels"]["breast"]["tau"] == 0.7 and result["tau"] == 0.5


def test_predict_and_the_page_read_a_patient_at_her_own_operating_point(tmp_path):
    import json

    from click.testing import CliRunner

    from app_support import png_bytes
    from eval_support import make_tiny_checkpoint
    from mammojax.app import logic
    from mammojax.cli import cli

    points = {"image": {"tau": 0.41, "temperature": 1.5}, "breast": {"tau": 0.5, "temperature": 1.5},
              "patient": {"tau": 0.93, "temperature": 0.4}}
    checkpoint = make_tiny_checkpoint(tmp_path / "best")
    meta_path = checkpoint / "mammojax.json"
    meta = json.loads(meta_path.read_text())
    meta["operating_points"] = points
    meta_path.write_text(json.dumps(meta))
    for name, seed in (("P7_L_CC.png", 1), ("P7_L_MLO.png", 2)):
        (tmp_path / name).write_bytes(png_bytes(60, 48, seed=seed))
    result = CliRunner().invoke(cli, ["predict", "--checkpoint", str(checkpoint), "--json", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    images = [r for r in rows if r["kind"] == "image"]
    (patient,) = [r for r in rows if r["kind"] == "patient"]
    margins = [1.5 * np.log(r["probability"] / (1 - r["probability"])) for r in images]
    expected = 1 / (1 + np.exp(-max(margins) / 0.4))
    assert patient["probability"] == pytest.approx(expected, abs=2e-5)
    names = meta["class_names"]
    assert patient["decision"] == names[int(expected >= 0.93)]  # at the patient tau, not the image tau
    model = logic.load_app_model(checkpoint, warm_up=False)
    analyses = [("P7", logic.analyse_upload(model, name, (tmp_path / name).read_bytes()))
                for name in ("P7_L_CC.png", "P7_L_MLO.png")]
    point = model.scorer.operating_points["patient"]
    (summary,) = logic.summarise_patients(analyses, tau=point.tau, temperature=point.temperature)
    assert summary.score == pytest.approx(expected, abs=2e-5) and summary.tau == 0.93
