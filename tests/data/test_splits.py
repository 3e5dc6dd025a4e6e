"""Patient-wise stratified splits and k-fold."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from mammojax.data.records import Record
from mammojax.data.splits import (check_no_leakage, kfold_patients, patient_labels, records_of_split,
                                  split_patients)
from mammojax.errors import MammojaxError


def _records(num_patients=100, positive_every=4, images=4):
    """Patients with ``images`` images each; every 4th patient has one positive image."""
    records = []
    for p in range(num_patients):
        for i in range(images):
            label = int(p % positive_every == 0 and i == 0)
            records.append(Record(f"p{p}_{i}.png", label, f"patient{p:03d}"))
    return records


def _positive_share(records):
    labels = patient_labels(records)
    return sum(labels.values()) / len(labels)


def test_split_keeps_patients_together_and_stratifies():
    records = _records()
    splits = split_patients(records, val_fraction=0.2, test_fraction=0.2, seed=3)
    check_no_leakage(splits)
    assert sum(len(v) for v in splits.values()) == len(records)
    for part in splits.values():
        assert len(part) % 4 == 0  # whole patients only
        assert abs(_positive_share(part) - 0.25) <= 0.05
    assert len(patient_labels(splits["test"])) == 20 and len(patient_labels(splits["val"])) == 20


def test_split_is_deterministic_and_order_independent():
    records = _records()
    first = split_patients(records, val_fraction=0.15, test_fraction=0.15, seed=7)
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    again = split_patients(shuffled, val_fraction=0.15, test_fraction=0.15, seed=7)
    for name in first:
        assert set(first[name]) == set(again[name])
    other = split_patients(records, val_fraction=0.15, test_fraction=0.15, seed=8)
    assert set(other["test"]) != set(first["test"])


def test_zero_fractions_and_bad_fractions():
    records = _records(10)
    splits = split_patients(records, val_fraction=0.0, test_fraction=0.0, seed=0)
    assert splits["val"] == [] and splits["test"] == [] and splits["train"] == records
    with pytest.raises(MammojaxError):
        split_patients(records, val_fraction=0.6, test_fraction=0.5, seed=0)


def test_kfold_covers_every_patient_once():
    records = _records(23)
    folds = kfold_patients(records, k=5, seed=1)
    assert len(folds) == 5
    held_out = [p for _, test in folds for p in patient_labels(test)]
    assert sorted(held_out) == sorted(patient_labels(records))
    sizes = [len(patient_labels(test)) for _, test in folds]
    assert max(sizes) - min(sizes) <= 1
    for train, test in folds:
        check_no_leakage((train, test))
        assert len(train) + len(test) == len(records)
        positives = sum(patient_labels(test).values())
        assert positives in (1, 2)  # 6 positive patients over 5 folds
    assert folds == kfold_patients(records, k=5, seed=1)


def test_kfold_is_deterministic_and_order_independent():
    records = _records(40)
    folds = kfold_patients(records, k=4, seed=5)
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    again = kfold_patients(shuffled, k=4, seed=5)
    assert [set(test) for _, test in folds] == [set(test) for _, test in again]
    other = kfold_patients(records, k=4, seed=6)
    assert [set(test) for _, test in folds] != [set(test) for _, test in other]


@pytest.mark.parametrize("n_pos,n_neg,fraction", [(25, 75, 0.2), (10, 90, 0.15), (7, 30, 0.35), (3, 40, 0.1)])
def test_split_class_counts_agree_with_sklearn_stratified_shuffle(n_pos, n_neg, fraction):
    from sklearn.model_selection import StratifiedShuffleSplit

    records = [Record(f"p{i}.png", int(i < n_pos), f"patient{i:03d}") for i in range(n_pos + n_neg)]
    test = split_patients(records, val_fraction=0.0, test_fraction=fraction, seed=0)["test"]
    ours = sum(r.label for r in test), sum(1 - r.label for r in test)
    labels = np.array([r.label for r in records])
    splitter = StratifiedShuffleSplit(n_splits=1, test_size=len(test), random_state=0)
    _, held = next(splitter.split(labels, labels))
    theirs = int(labels[held].sum()), int((1 - labels[held]).sum())
    assert abs(ours[0] - theirs[0]) <= 1 and abs(ours[1] - theirs[1]) <= 1


def test_split_of_tiny_data_still_stratifies():
    # One positive woman among eight: scikit-learn's stratified shuffle refuses this.
    records = [Record(f"p{i}.png", int(i == 0), f"patient{i}") for i in range(8)]
    splits = split_patients(records, val_fraction=0.25, test_fraction=0.25, seed=0)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [4, 2, 2]
    assert sum(r.label for r in splits["train"] + splits["val"] + splits["test"]) == 1


def test_kfold_rejects_bad_k():
    with pytest.raises(MammojaxError, match="k >= 2"):
        kfold_patients(_records(5), k=1, seed=0)
    with pytest.raises(MammojaxError, match="at least 6 patients"):
        kfold_patients(_records(5), k=6, seed=0)


def test_leakage_names_the_patient():
    a = Record("a.png", 0, "shared-patient")
    b = Record("b.png", 1, "shared-patient")
    with pytest.raises(MammojaxError, match="shared-patient"):
        check_no_leakage({"train": [a], "test": [b]})


# ---------------------------------------------------------------------------
# records_of_split: the one answer to "which records form this split"


@pytest.mark.parametrize("num_folds,fold", [(0, 0), (4, 2)])
def test_train_and_eval_pick_the_same_women(num_folds, fold):
    from mammojax.config import base_config
    from mammojax.evaluation.evaluate import select_split
    from mammojax.train.data import split_records

    config = base_config()
    config.seed = 11
    config.data.val_fraction, config.data.test_fraction = 0.2, 0.25
    config.data.num_folds, config.data.fold = num_folds, fold
    # A checkpoint stores config.to_dict() in its JSON metadata; eval reads that back.
    stored = json.loads(json.dumps(config.to_dict()))
    records = _records(60)
    train, val = split_records(records, config)
    assert train and val
    check_no_leakage({"train": train, "val": val})
    assert select_split(records, stored, "train", stored["seed"]) == list(train)
    assert select_split(records, stored, "val", stored["seed"]) == list(val)
    if num_folds:
        assert list(val) == kfold_patients(records, k=4, seed=11)[2][1]
    else:
        test = select_split(records, stored, "test", stored["seed"])
        assert test == split_patients(records, val_fraction=0.2, test_fraction=0.25, seed=11)["test"]
        check_no_leakage({"train": train, "val": val, "test": test})
        assert len(train) + len(val) + len(test) == len(records)


def test_records_of_split_rejects_what_the_settings_do_not_have():
    records = _records(12)
    assert records_of_split(records, {}, "all", seed=0) == records
    assert records_of_split(records, {}, "test", seed=0) == split_patients(
        records, val_fraction=0.15, test_fraction=0.15, seed=0)["test"]  # old checkpoints: base defaults
    with pytest.raises(MammojaxError, match="unknown split 'holdout'"):
        records_of_split(records, {}, "holdout", seed=0)
    with pytest.raises(MammojaxError, match="k-fold training has only train and val"):
        records_of_split(records, {"num_folds": 3, "fold": 0}, "test", seed=0)
    with pytest.raises(MammojaxError, match="data.fold=3 is outside 0..2"):
        records_of_split(records, {"num_folds": 3, "fold": 3}, "val", seed=0)
