"""Shortcut checks: a metadata-only model fitted on training women, and within-machine AUCs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mammojax.data.records import Record
from mammojax.evaluation import shortcuts
from mammojax.evaluation.metrics import roc_auc
from mammojax.jsonio import json_safe

LEAKING = ("BIRADS", "biopsy", "invasive", "difficult_negative_case", "density")


def _record(i: int, label: int, *, site="1", machine="49", view="CC", implant="0", age="60",
            leaking: bool = False, patient: str | None = None) -> Record:
    extra = [("site_id", site), ("machine_id", machine), ("age", age), ("implant", implant)]
    if leaking:  # outcomes of the workup, equal to the label: must never reach the model
        extra += [(key, str(label)) for key in LEAKING]
    return Record(path=f"img{i}.png", label=int(label), patient_id=patient or f"w{i}", laterality="L",
                  view=view, extra=tuple(extra))


def _random_metadata(n: int, seed: int, *, leaking: bool = False, offset: int = 0) -> list[Record]:
    """Labels independent of every metadata column (one film per woman)."""
    rng = np.random.default_rng(seed)
    return [_record(offset + i, int(rng.integers(0, 2)), site=str(rng.integers(1, 3)),
                    machine=str(rng.choice([21, 29, 48, 49, 93])), view=str(rng.choice(["CC", "MLO"])),
                    implant=str(rng.integers(0, 2)), age="" if rng.random() < 0.1 else str(rng.integers(40, 80)),
                    leaking=leaking)
            for i in range(n)]


def _null_auc_bound(labels, k: float = 4.0) -> float:
    """k standard errors of the AUC of scores independent of the labels (Mann-Whitney null:
    var = (n_pos + n_neg + 1) / (12 n_pos n_neg))."""
    y = np.asarray(labels)
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    return k * math.sqrt((n_pos + n_neg + 1) / (12.0 * n_pos * n_neg))


def _machine_dependent(n: int, seed: int, offset: int = 0) -> list[Record]:
    """Machines 93 and 190 film the women with cancer, 21 and 49 the others; 3% flipped."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        machine = str(rng.choice([21, 49, 93, 190]))
        label = int(machine in ("93", "190"))
        if rng.random() < 0.03:
            label = 1 - label
        out.append(_record(offset + i, label, machine=machine, view=str(rng.choice(["CC", "MLO"])),
                           age=str(rng.integers(40, 80))))
    return out


def test_metadata_that_predicts_the_label_gives_a_high_held_out_auc():
    train, test = _machine_dependent(300, seed=0), _machine_dependent(300, seed=1, offset=1000)
    model = shortcuts.fit_metadata_model(train, seed=0)
    probs = shortcuts.metadata_scores(model, test)
    assert probs.shape == (300,) and np.all((probs > 0) & (probs < 1))
    assert roc_auc([r.label for r in test], probs) > 0.9
    # Deterministic: the same records and seed give the same scores.
    again = shortcuts.metadata_scores(shortcuts.fit_metadata_model(train, seed=0), test)
    np.testing.assert_array_equal(probs, again)


def test_random_metadata_gives_an_auc_near_one_half():
    train, test = _random_metadata(400, seed=2), _random_metadata(400, seed=3, offset=1000)
    probs = shortcuts.metadata_scores(shortcuts.fit_metadata_model(train, seed=0), test)
    labels = [r.label for r in test]
    # Test scores come from a model that never saw the test labels: under independence the
    # test AUC follows the Mann-Whitney null, so 4 standard errors bound it.
    assert abs(roc_auc(labels, probs) - 0.5) < _null_auc_bound(labels)


def test_label_leaking_columns_are_never_used():
    """BI-RADS, biopsy, invasive, difficult negative and density equal to the label change nothing."""
    train = _random_metadata(300, seed=4, leaking=True)
    test = _random_metadata(300, seed=5, leaking=True, offset=1000)
    clean_train, clean_test = _random_metadata(300, seed=4), _random_metadata(300, seed=5, offset=1000)
    assert all(r.get("biopsy") == str(r.label) for r in train + test)  # the leak is really there
    x_leak, cats_leak = shortcuts.metadata_matrix(train)
    x_clean, cats_clean = shortcuts.metadata_matrix(clean_train)
    np.testing.assert_array_equal(x_leak, x_clean)
    assert cats_leak == cats_clean
    assert not set(cats_leak["categorical"]) & set(LEAKING)
    probs = shortcuts.metadata_scores(shortcuts.fit_metadata_model(train, seed=0), test)
    np.testing.assert_allclose(
        probs, shortcuts.metadata_scores(shortcuts.fit_metadata_model(clean_train, seed=0), clean_test))
    labels = [r.label for r in test]
    assert abs(roc_auc(labels, probs) - 0.5) < _null_auc_bound(labels)
    assert set(shortcuts.METADATA_FEATURES).isdisjoint(LEAKING)


def test_test_records_reuse_the_training_categories():
    train = [_record(0, 0, machine="21", age="50"), _record(1, 1, machine="49", age="70"),
             _record(2, 0, machine="21", view="MLO", age=""), _record(3, 1, machine="49", view="MLO", age="60")]
    x, cats = shortcuts.metadata_matrix(train)
    assert cats["categorical"]["machine_id"] == ["21", "49"]
    assert cats["categorical"]["view"] == ["CC", "MLO"]
    assert cats["age"]["mean"] == pytest.approx(60.0)
    # columns: site (1), machine (2), view (2), implant (1), age, age missing
    assert x.shape == (4, 8)
    np.testing.assert_array_equal(x[2, -2:], [0.0, 1.0])  # missing age: the mean, flagged
    unseen = [_record(9, 1, site="7", machine="999", view=None, implant="1", age="60")]
    x_test, same = shortcuts.metadata_matrix(unseen, categories=cats)
    assert same is cats and x_test.shape == (1, 8)
    np.testing.assert_array_equal(x_test[0, :6], np.zeros(6))  # unseen site, machine, view, implant: zeros
    np.testing.assert_array_equal(x_test[0, -2:], [0.0, 0.0])  # age 60 = the training mean, not missing
    probs = shortcuts.metadata_scores(shortcuts.fit_metadata_model(train, seed=0), unseen)
    assert probs.shape == (1,) and np.isfinite(probs).all()


def test_within_group_aucs_keeps_groups_with_enough_of_each_class():
    rng = np.random.default_rng(6)
    sizes = {"93": (40, 40), "21": (29, 100), "190": (30, 30), "49": (100, 10), "": (50, 50)}
    labels, groups = [], []
    for group, (n_pos, n_neg) in sizes.items():
        labels += [1] * n_pos + [0] * n_neg
        groups += [group] * (n_pos + n_neg)
    labels = np.array(labels)
    scores = rng.normal(0.3 * labels, 1.0)
    rows = shortcuts.within_group_aucs(labels, scores, groups, min_per_class=30)
    assert [r["group"] for r in rows] == ["93", "190"]  # numeric ids in numeric order; blank group left out
    g = np.array(groups)
    for row in rows:
        mask = g == row["group"]
        assert row["n"] == mask.sum() and row["n_pos"] == labels[mask].sum()
        assert row["auc"] == pytest.approx(roc_auc(labels[mask], scores[mask]), abs=1e-12)
    assert [r["group"] for r in shortcuts.within_group_aucs(labels, scores, groups, min_per_class=10)] \
        == ["21", "49", "93", "190"]


def test_records_without_metadata_do_not_apply():
    mias_like = [Record(f"mdb{i:03d}.pgm", i % 2, f"p{i}", "L", "MLO", extra=(("tissue", "fatty"),))
                 for i in range(20)]
    phantoms = [Record(f"ph{i}.png", i % 2, f"p{i // 4}", "LR"[i % 2], ("CC", "MLO")[(i // 2) % 2])
                for i in range(20)]
    one_machine = [_record(i, i % 2) for i in range(20)]  # every column a single value
    for records in (mias_like, phantoms, one_machine):
        assert not shortcuts.has_metadata(records)
        assert shortcuts.shortcut_report(records[:10], records[10:], np.linspace(0, 1, 10),
                                         seed=0, n_boot=10) is None
    assert shortcuts.has_metadata(_random_metadata(20, seed=7))
    assert "not applicable" in shortcuts.render_shortcuts(None)


def test_shortcut_report_puts_the_metadata_auc_beside_the_image_auc():
    train = _machine_dependent(300, seed=8)
    # Two films per woman in the test set, so the interval resamples women.
    rng = np.random.default_rng(9)
    test = [_record(2000 + i, r.label, machine=r.get("machine_id"), view=view, age=r.get("age"),
                    patient=f"t{i // 2}") for i, (r, view) in
            enumerate((r, v) for r in _machine_dependent(200, seed=9, offset=3000) for v in ("CC", "MLO"))]
    labels = np.array([r.label for r in test])
    image_scores = rng.normal(0.8 * labels, 1.0)
    report = shortcuts.shortcut_report(train, test, image_scores, seed=0, n_boot=200)
    assert report["features"] == ["machine_id", "view", "age"]
    assert report["image_auc"] == pytest.approx(roc_auc(labels, image_scores))
    model = shortcuts.fit_metadata_model(train, seed=0)
    assert report["metadata_auc"] == pytest.approx(roc_auc(labels, shortcuts.metadata_scores(model, test)))
    assert report["metadata_auc"] > 0.9
    assert report["metadata_auc_low"] <= report["metadata_auc"] <= report["metadata_auc_high"]
    assert report["women"] == 200 and report["n"] == 400 and report["min_per_class"] == 30
    # Each machine films (nearly) one class: none has 30 films of each, so no within-machine AUC.
    assert report["within_machine"] == []
    text = shortcuts.render_shortcuts(report)
    assert "Metadata-only model (machine, view, age; fitted on the training women only)" in text
    assert "No machine has 30 films of each class" in text
    # A lower bar lists the machines; the report survives a JSON round trip and renders from it.
    report = shortcuts.shortcut_report(train, test, image_scores, seed=0, n_boot=50, min_per_class=2)
    machines = np.array([r.get("machine_id") for r in test])
    mixed = [m for m in ("21", "49", "93", "190")
             if min(labels[machines == m].sum(), (1 - labels[machines == m]).sum()) >= 2]
    assert mixed and [r["group"] for r in report["within_machine"]] == mixed
    text = shortcuts.render_shortcuts(json.loads(json.dumps(json_safe(report))))
    assert "| machine | films (cancer) | image AUC |" in text and f"| {mixed[0]} |" in text


def test_metadata_auc_cv_pools_out_of_fold_scores_in_test_order():
    records = _machine_dependent(240, seed=10)
    folds = [records[i::3] for i in range(3)]
    pairs = [([r for j, f in enumerate(folds) if j != k for r in f], folds[k]) for k in range(3)]
    pooled = shortcuts.metadata_auc_cv(pairs)
    expected = np.concatenate([shortcuts.metadata_scores(shortcuts.fit_metadata_model(tr, seed=0), te)
                               for tr, te in pairs])
    np.testing.assert_array_equal(pooled, expected)
    tested = [r for _, te in pairs for r in te]
    report = shortcuts.report_from_scores(tested, pooled, np.zeros(len(tested)), n_boot=20, seed=0)
    assert report["metadata_auc"] > 0.9 and report["image_auc"] == pytest.approx(0.5)
    # A fold whose training women are all of one class scores everyone with its prevalence.
    one_class = [r for r in records if r.label == 0]
    flat = shortcuts.metadata_auc_cv([(one_class, records[:5])])
    np.testing.assert_array_equal(flat, np.zeros(5))


def test_the_checkpoint_stores_the_training_womens_model_and_eval_scores_other_women_with_it():
    from sklearn.linear_model import LogisticRegression

    train = _machine_dependent(400, seed=11)
    test = _machine_dependent(300, seed=12, offset=1000)
    entry = shortcuts.checkpoint_entry(train, seed=0)
    stored = json.loads(json.dumps(entry))  # the checkpoint's meta is JSON
    model = shortcuts.model_from_meta(stored["shortcuts"]["metadata_model"])
    # Its scores are scikit-learn's own for the same fit (float64; the only difference is the order of
    # a dot product of a few dozen terms, far below 1e-12).
    x, _ = shortcuts.metadata_matrix(test, categories=model.categories)
    x_train, _ = shortcuts.metadata_matrix(train)
    reference = LogisticRegression(C=1.0, max_iter=1000, random_state=0).fit(
        x_train, [r.label for r in train]).predict_proba(x)[:, 1]
    np.testing.assert_allclose(shortcuts.metadata_scores(model, test), reference, rtol=0, atol=1e-12)
    image_scores = np.random.default_rng(0).random(len(test))
    report = shortcuts.stored_report(stored, test, image_scores, n_boot=50, seed=0)
    assert report["metadata_auc"] > 0.9 and report["n"] == len(test)
    assert report["image_auc"] == pytest.approx(roc_auc([r.label for r in test], image_scores))
    # No stored model, or test records without metadata: the checks do not apply.
    assert shortcuts.stored_report({}, test, image_scores, n_boot=50, seed=0) is None
    bare = [Record(path=f"m{i}.pgm", label=i % 2, patient_id=f"m{i}") for i in range(20)]
    assert shortcuts.stored_report(stored, bare, np.zeros(20), n_boot=50, seed=0) is None
    assert shortcuts.checkpoint_entry(bare) == {}

