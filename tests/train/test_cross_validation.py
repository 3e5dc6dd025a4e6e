"""Cross-validation in the core (any dataset, any trainer): pooling per level, window scoring, and real
smoke runs of `mammojax cv` (MIAS with the patch trainer; phantoms with the whole-image trainer) and `train`.

Patch sampling and the patch trainer itself are tested in tests/train/.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from mammojax.config import load_config
from mammojax.errors import MammojaxError

REPO = Path(__file__).resolve().parents[2]
from paths import MIAS_ARCHIVE  # noqa: E402

MIAS = MIAS_ARCHIVE


def _phantoms():
    """Two 64 px images: a bright disc lesion at (40, 20) on image 0 (positive), image 1 flat breast."""
    images = np.full((2, 64, 64, 1), -1.0, np.float32)
    images[:, :, :48] = 0.0  # breast on the left, background right
    rows, cols = np.mgrid[:64, :64]
    images[0, (rows - 40) ** 2 + (cols - 20) ** 2 < 16, 0] = 5.0
    labels = np.array([1, 0])
    lesions = [({"kind": "mass", "row": 40.0, "col": 20.0, "radius": 4.0},), ()]
    return images, labels, lesions


def test_pooled_metrics_use_each_folds_operating_point_per_level():
    from mammojax.config import base_config
    from mammojax.train.cross_validation import pool_folds

    config = base_config()
    # Margins; with temperature 1 a probability is sigmoid(margin). Fold 0 calls >= 0.5 positive at
    # every level; fold 1 calls images >= 0.2, but breasts and women only >= 0.9.
    predictions = [
        {"fold": 0, "patient_id": "a", "laterality": "L", "label": 1, "margin": 0.4},
        {"fold": 0, "patient_id": "a", "laterality": "R", "label": 0, "margin": -3.0},
        {"fold": 0, "patient_id": "b", "laterality": "L", "label": 0, "margin": -0.4},
        {"fold": 1, "patient_id": "c", "laterality": "L", "label": 1, "margin": -0.85},
        {"fold": 1, "patient_id": "d", "laterality": "L", "label": 0, "margin": -1.1},
    ]
    folds = [{"fold": 0, **{f"tau_{lv}": 0.5 for lv in ("image", "breast", "patient")},
              **{f"temperature_{lv}": 1.0 for lv in ("image", "breast", "patient")}},
             {"fold": 1, "tau_image": 0.2, "tau_breast": 0.9, "tau_patient": 0.9,
              **{f"temperature_{lv}": 1.0 for lv in ("image", "breast", "patient")}}]
    pooled = pool_folds(predictions, folds, config, n_boot=20, seed=0)
    # images: sigmoid(0.4)=0.60 >= 0.5 and sigmoid(-0.85)=0.30 >= 0.2 are hits; sigmoid(-1.1)=0.25 >= 0.2 is false
    assert pooled["image"]["sensitivity"] == 1.0 and pooled["image"]["specificity"] == pytest.approx(2 / 3)
    assert pooled["image"]["n"] == 5 and pooled["breast"]["n"] == 5 and pooled["patient"]["n"] == 4
    # women: a (max 0.60 >= 0.5) hit, b negative, c (0.30 < 0.9) missed, d (0.25 < 0.9) correctly negative
    assert pooled["patient"]["sensitivity"] == 0.5 and pooled["patient"]["specificity"] == 1.0
    # The pooled AUC ranks every fold's probabilities together: 5 of the 6 positive-negative pairs are right.
    assert pooled["image"]["auc"] == pytest.approx(5 / 6)


@pytest.mark.slow
@pytest.mark.skipif(not MIAS.is_file(), reason=f"mini-MIAS archive not found at {MIAS}")
def test_smoke_cross_validation_command_on_real_mias(tmp_path, monkeypatch):
    from mammojax.cli import main

    monkeypatch.setenv("MAMMOJAX_CACHE_DIR", str(tmp_path / "user-cache"))
    workdir = tmp_path / "cv"
    # Three folds, not the config's five: every woman is still tested exactly once, fold 2 is still a
    # middle fold, and each of the runs below trains 3 networks instead of 5 (the suite's time budget).
    folds = 3
    command = ["cv", "--config", str(REPO / "configs" / "mias_smoke.py"), "--data-dir", str(MIAS),
               "--workdir", str(workdir), f"--config.cv.num_folds={folds}"]
    assert main(command) == 0
    result = json.loads((workdir / "results.json").read_text())

    assert len(result["folds"]) == folds
    with open(workdir / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 242
    fold_of = {}
    for row in rows:
        assert fold_of.setdefault(row["patient_id"], row["fold"]) == row["fold"], "a woman in two test folds"
    assert len(fold_of) == 121  # every woman tested exactly once
    assert {int(r["label"]) for r in rows} == {0, 1}
    for level in ("image", "breast", "patient"):
        pooled = result["pooled"][level]
        assert 0.0 <= pooled["auc_low"] <= pooled["auc"] <= pooled["auc_high"] <= 1.0
        assert 0.0 <= pooled["sensitivity"] <= 1.0 and 0.0 <= pooled["specificity"] <= 1.0
    table = (workdir / "table.md").read_text()
    assert sum(line.startswith("| ") for line in table.splitlines()) == 1 + folds + 1  # header, folds, pooled
    assert "**pooled**" in table
    assert (workdir / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["hardware"]["cores"] >= 1 and result["wall_seconds"] > 0
    meta = json.loads((workdir / "fold2" / "mammojax.json").read_text())
    assert meta["config"]["data"]["fold"] == 2 and meta["config"]["data"]["num_folds"] == folds
    assert meta["tau"] == pytest.approx(result["folds"][2]["tau_image"])
    assert meta["temperature"] == pytest.approx(result["folds"][2]["temperature_image"])
    assert {k: meta["scoring"][k] for k in ("kind", "size", "stride", "top_k", "tta_hflip")} == \
        {"kind": "windows", "size": 32, "stride": 16, "top_k": 3, "tta_hflip": False}  # as mias_smoke scores
    assert set(meta["operating_points"]) == {"image", "breast", "patient"}
    # Each fold's network was trained by the patch trainer of the core, in its own training workdir.
    network = workdir / "networks" / "fold2-member0"
    assert (network / "best" / "mammojax.json").is_file() and list((network / "checkpoints").iterdir())
    assert json.loads((network / "config.json").read_text())["seed"] == 2
    assert result["shortcuts"] is None  # MIAS has no acquisition metadata to check

    # Run again with two networks per fold: the first of each fold is read back, not retrained
    # (a killed run resumes the same way), and the ensemble's scores are its own.
    from mammojax import runtime
    from mammojax.train.cross_validation import run_cv

    runtime.setup()
    config = load_config(REPO / "configs" / "mias_smoke.py", [f"--config.data.data_dir={MIAS}",
                                                               f"--config.cv.num_folds={folds}",
                                                               "--config.cv.ensemble=2"])
    lines = []
    bigger = run_cv(config, workdir, log=lines.append)
    reused = [line for line in lines if "trained network read from" in line]
    assert len(reused) == folds and all("member 1:" in line for line in reused)
    assert sorted(p.name for p in (workdir / "networks").iterdir()) == sorted(
        f"fold{f}-member{m}" for f in range(folds) for m in range(2))
    assert bigger["settings"]["ensemble"] == 2 and "2 networks per fold" in (workdir / "table.md").read_text()
    assert [f["val_patch_auc"] for f in bigger["folds"]] != [f["val_patch_auc"] for f in result["folds"]]

    # Networks of another configuration in the workdir are refused, not reused or overwritten.
    config.train.epochs = 3
    with pytest.raises(MammojaxError, match="different run.*train.epochs=2 \\(config: 3\\)"):
        run_cv(config, workdir, log=lambda _: None)


def test_windows_cover_the_breast():
    from mammojax.scoring.windows import window_positions

    images, _, _ = _phantoms()
    positions = window_positions(images[1], size=16, stride=8)
    # Centres fall on breast pixels (columns < 48); the last column of windows is flush with the edge.
    assert np.all(positions[:, 1] + 8 < 48) and positions[:, 0].max() == 64 - 16


def test_contralateral_score_subtracts_the_other_breast():
    from mammojax.train.cross_validation import contralateral_logits

    logits = np.array([[0.0, 2.0], [0.0, 0.5], [1.0, 1.0], [0.0, 3.0]])
    out = contralateral_logits(logits, ["a", "a", "b", "c"], weight=1.0)
    np.testing.assert_allclose(out[:, 1], [1.5, -1.5, 0.0, 3.0])  # "c" has no partner: its own margin
    np.testing.assert_allclose(contralateral_logits(logits, ["a", "a", "b", "c"], weight=0.0)[:, 1], [2, 0.5, 0, 3])


@pytest.mark.slow
@pytest.mark.skipif(not MIAS.is_file(), reason=f"mini-MIAS archive not found at {MIAS}")
def test_mias_config_trains_then_eval_and_predict_work_without_edits(tmp_path, monkeypatch):
    """Issue 10, item 3, at smoke size: train runs the patch recipe and stores tau/temperature and the
    window scoring; eval and predict then score films by windows, as the cross-validation did."""
    import tarfile

    from click.testing import CliRunner

    from mammojax.checkpoint import load_checkpoint
    from mammojax.cli import cli
    from mammojax.scoring import Scorer
    from scoring_support import brute_force_window_margin

    monkeypatch.setenv("MAMMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    workdir = tmp_path / "wd"
    train_args = ["train", "--config", str(REPO / "configs" / "mias.py"), "--workdir", str(workdir),
                  f"--config.data.data_dir={MIAS}", "--config.data.image_size=64", "--config.patch.size=32",
                  "--config.train.epochs=1", "--config.patch.positives_per_lesion=1", "--config.eval.bootstrap=20"]
    result = CliRunner().invoke(cli, train_args)
    assert result.exit_code == 0, result.output
    assert "patch trainer:" in result.output and "no epoch selection" in result.output
    assert "best checkpoint" in result.output
    meta = json.loads((workdir / "best" / "mammojax.json").read_text())
    assert 0.0 <= meta["tau"] <= 1.0 and meta["temperature"] > 0
    assert meta["config"]["data"]["dataset"] == "mias" and meta["config"]["data"]["image_size"] == 64
    assert {k: meta["scoring"][k] for k in ("kind", "size", "stride", "top_k", "tta_hflip")} == \
        {"kind": "windows", "size": 32, "stride": 16, "top_k": 3, "tta_hflip": True}  # configs/mias.py scores with flip TTA
    assert set(meta["operating_points"]) == {"image", "breast", "patient"}
    assert (workdir / "training_curves.png").stat().st_size > 0

    # The same command again resumes the finished run: it trains nothing and rewrites nothing of the model.
    before = (workdir / "best" / "mammojax.json").read_bytes()
    from mammojax.cli import main

    assert main(train_args) == 0
    assert (workdir / "best" / "mammojax.json").read_bytes() == before

    out = tmp_path / "eval"
    result = CliRunner().invoke(cli, ["eval", "--checkpoint", str(workdir), "--dataset", "mias", "--data-dir", str(MIAS),
                                      "--split", "all", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 242 and metrics["n_patients"] == 121

    films = tmp_path / "films"
    with tarfile.open(MIAS) as archive:
        members = sorted((m for m in archive.getmembers() if m.name.endswith(".pgm")), key=lambda m: m.name)[:3]
        for member in members:
            member.name = Path(member.name).name
            archive.extract(member, films, filter="data")
    result = CliRunner().invoke(cli, ["predict", "--checkpoint", str(workdir), str(films), "--out",
                                      str(tmp_path / "pred.csv")])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "pred.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["kind"] == "image"]
    assert len(rows) == 3 and all(0.0 <= float(r["probability"]) <= 1.0 and not r["error"] for r in rows)

    # predict's probability is the window score at the stored calibration, not a whole-film pass.
    checkpoint = load_checkpoint(workdir)
    image = Scorer.from_checkpoint(checkpoint).read(films / Path(rows[0]["path"]).name).image
    margin = brute_force_window_margin(checkpoint.model, checkpoint.variables, image, size=32, stride=16, top_k=3)
    expected = 1.0 / (1.0 + np.exp(-(margin / checkpoint.temperature + checkpoint.offset)))
    assert float(rows[0]["probability"]) == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_the_mias_config_scores_films_by_windows():
    """The scorer scores by windows exactly when tau was fitted on window scores."""
    from mammojax.scoring import film_scoring_from_config

    config = load_config(REPO / "configs" / "mias.py")
    scoring = film_scoring_from_config(config)
    assert (scoring.kind, scoring.window_size, scoring.window_stride, scoring.window_top_k) == ("windows", 64, 16, 3)
    config.eval.scoring = "whole"
    assert not film_scoring_from_config(config).windows
    config.eval.scoring = "tiles"
    with pytest.raises(MammojaxError, match="eval.scoring must be one of whole, windows"):
        film_scoring_from_config(config)


@pytest.mark.slow
def test_cross_validation_of_the_whole_image_trainer_on_phantoms(tmp_path):
    """The same core CV with the paper's trainer: each fold's best epoch, three levels, resumable."""
    from mammojax import runtime
    from mammojax.train.cross_validation import run_cv

    runtime.setup()
    config = load_config(REPO / "configs" / "default.py", [
        "--config.data.dataset=synthetic", "--config.data.synthetic_count=48", "--config.data.image_size=32",
        "--config.cv.num_folds=2", "--config.train.epochs=2", "--config.train.batch_size=4",
        "--config.eval.bootstrap=20", "--config.data.val_fraction=0.34"])
    workdir = tmp_path / "cv"
    result = run_cv(config, workdir, log=lambda _: None)
    assert result["settings"]["recipe"] == "whole_image" and len(result["folds"]) == 2
    for level, count in (("image", 48), ("breast", 24), ("patient", 12)):
        assert result["pooled"][level]["n"] == count
        assert 0.0 <= result["pooled"][level]["auc_low"] <= result["pooled"][level]["auc_high"] <= 1.0
    assert result["shortcuts"] is None  # phantoms carry no acquisition metadata
    # The fold checkpoint holds the network of the trainer's best epoch, and its operating points.
    import jax

    from mammojax.checkpoint import load_checkpoint

    fold, best = load_checkpoint(workdir / "fold1"), load_checkpoint(workdir / "networks" / "fold1-member0" / "best")
    for x, y in zip(jax.tree_util.tree_leaves(fold.variables), jax.tree_util.tree_leaves(best.variables)):
        np.testing.assert_array_equal(x, y)
    assert set(fold.meta["operating_points"]) == {"image", "breast", "patient"}
    lines = []
    again = run_cv(config, workdir, log=lines.append)  # a rerun reads both networks back
    assert sum("trained network read from" in line for line in lines) == 2
    assert again["pooled"] == result["pooled"]
