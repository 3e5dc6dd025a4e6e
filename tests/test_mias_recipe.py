"""The mini-MIAS cross-validation recipe: patch sampling, pooling, and a real quick run."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from mammojax.recipes.patches import PatchSettings, crop, sample_epoch

REPO = Path(__file__).resolve().parents[1]
MIAS = REPO.parent / "shared" / "data" / "mias" / "all-mias-dev.tar.gz"


def _phantoms():
    """Two 64 px images: a bright disc lesion at (40, 20) on image 0 (positive), image 1 flat breast."""
    images = np.full((2, 64, 64, 1), -1.0, np.float32)
    images[:, :, :48] = 0.0  # breast on the left, background right
    rows, cols = np.mgrid[:64, :64]
    images[0, (rows - 40) ** 2 + (cols - 20) ** 2 < 16, 0] = 5.0
    labels = np.array([1, 0])
    lesions = [({"kind": "mass", "row": 40.0, "col": 20.0, "radius": 4.0},), ()]
    return images, labels, lesions


def test_sample_epoch_cuts_lesions_for_positives_and_breast_for_negatives():
    images, labels, lesions = _phantoms()
    settings = PatchSettings(size=16, positives_per_lesion=3, negatives_per_positive=2.0, jitter_fraction=0.1)
    patches, patch_labels = sample_epoch(images, labels, lesions, settings, np.random.default_rng(0))
    assert patches.shape == (9, 16, 16, 1)
    assert (patch_labels == 1).sum() == 3
    # Every positive patch holds the lesion; no negative does (they come from the normal image).
    assert all(patches[i].max() == 5.0 for i in np.flatnonzero(patch_labels == 1))
    assert all(patches[i].max() < 5.0 for i in np.flatnonzero(patch_labels == 0))
    # Negatives are centred on breast pixels, so they are mostly breast.
    assert all((patches[i] == 0.0).mean() >= 0.5 for i in np.flatnonzero(patch_labels == 0))
    again, _ = sample_epoch(images, labels, lesions, settings, np.random.default_rng(0))
    np.testing.assert_array_equal(patches, again)


def test_crop_stays_inside_the_image():
    image = np.arange(100, dtype=np.float32).reshape(10, 10, 1)
    assert crop(image, 0, 0, 4).shape == (4, 4, 1)
    np.testing.assert_array_equal(crop(image, 9.7, 9.7, 4), image[6:, 6:])


def test_pooled_metrics_use_each_folds_threshold_and_patient_max():
    from mammojax.recipes.mias_cv import patient_max, pool_folds

    y, s, ids = patient_max([0, 1, 0, 0], [0.2, 0.9, 0.4, 0.1], ["a", "a", "b", "b"])
    assert ids == ["a", "b"] and list(y) == [1, 0] and list(s) == [0.9, 0.4]
    predictions = [
        # fold 0 calls >= 0.5 positive, fold 1 calls >= 0.2 positive.
        {"fold": 0, "patient_id": "a", "label": 1, "probability": 0.6, "tau_image": 0.5, "tau_patient": 0.5},
        {"fold": 0, "patient_id": "b", "label": 0, "probability": 0.4, "tau_image": 0.5, "tau_patient": 0.5},
        {"fold": 1, "patient_id": "c", "label": 1, "probability": 0.3, "tau_image": 0.2, "tau_patient": 0.2},
        {"fold": 1, "patient_id": "d", "label": 0, "probability": 0.25, "tau_image": 0.2, "tau_patient": 0.9},
    ]
    pooled = pool_folds(predictions, n_boot=20, seed=0)
    assert pooled["image"]["sensitivity"] == 1.0  # 0.6 >= 0.5 and 0.3 >= 0.2
    assert pooled["image"]["specificity"] == 0.5  # 0.25 >= 0.2 is a false call at fold 1's tau
    assert pooled["patient"]["specificity"] == 1.0  # patient tau of fold 1 is 0.9
    assert pooled["image"]["auc"] == pytest.approx(0.75)


@pytest.mark.skipif(not MIAS.is_file(), reason=f"mini-MIAS archive not found at {MIAS}")
def test_quick_cross_validation_on_real_mias(tmp_path):
    spec = importlib.util.spec_from_file_location("mias_config", REPO / "configs" / "mias.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.quick(module.get_config())
    config.data.cache_dir = str(tmp_path / "cache")
    from mammojax import runtime

    runtime.setup()  # persistent compilation cache: reruns skip most of the ~30 s of XLA compiles
    from mammojax.recipes.mias_cv import run_mias_cv

    result = run_mias_cv(config, MIAS, tmp_path / "cv", log=lambda _: None)

    assert len(result["folds"]) == 5
    with open(tmp_path / "cv" / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 242
    fold_of = {}
    for row in rows:
        assert fold_of.setdefault(row["patient_id"], row["fold"]) == row["fold"], "a woman in two test folds"
    assert len(fold_of) == 121  # every woman tested exactly once
    assert {int(r["label"]) for r in rows} == {0, 1}
    for level in ("image", "patient"):
        pooled = result["pooled"][level]
        assert 0.0 <= pooled["auc_low"] <= pooled["auc"] <= pooled["auc_high"] <= 1.0
        assert 0.0 <= pooled["sensitivity"] <= 1.0 and 0.0 <= pooled["specificity"] <= 1.0
    table = (tmp_path / "cv" / "table.md").read_text()
    assert sum(line.startswith("| ") for line in table.splitlines()) == 1 + 5 + 1  # header, folds, pooled
    assert "**pooled**" in table
    assert (tmp_path / "cv" / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["hardware"]["cores"] >= 1 and result["wall_seconds"] > 0
    meta = json.loads((tmp_path / "cv" / "fold2" / "mammojax.json").read_text())
    assert meta["config"]["data"]["fold"] == 2 and meta["config"]["data"]["num_folds"] == 5
    assert meta["tau"] == pytest.approx(result["folds"][2]["tau_image"])
    assert meta["temperature"] == pytest.approx(result["folds"][2]["temperature"])
