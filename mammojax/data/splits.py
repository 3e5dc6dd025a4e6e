"""Patient-wise, label-stratified splits and k-fold cross-validation.

Images of one woman are correlated (both views, both breasts), so every split
is made over *patients*: all of a patient's images land in the same part.
Patients are stratified by their label, positive when any of their images is,
so each part keeps about the dataset's share of positive patients.

Splits are deterministic and independent of the record order: the fixed
split sorts patients by id before a NumPy generator seeded with
``[seed, PURPOSE_SPLIT]`` shuffles them; k-fold is scikit-learn's
``StratifiedGroupKFold``, which orders patients by id itself and shuffles
them with a ``random_state`` drawn from ``[seed, PURPOSE_KFOLD]``.

:func:`records_of_split` is the one answer to "which records form this
split": training (``config.data``) and evaluation (the ``data`` dict stored in
a checkpoint) both ask it.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from mammojax.data.records import Record
from mammojax.errors import MammojaxError

PURPOSE_SPLIT = 201  # np.random.default_rng([seed, purpose]) per docs/ARCHITECTURE.md
PURPOSE_KFOLD = 202
SPLITS = ("all", "train", "val", "test")  # what records_of_split answers


def patient_labels(records: Sequence[Record]) -> dict[str, int]:
    """patient id -> 1 if any of the patient's images is positive, else 0."""
    labels: dict[str, int] = {}
    for record in records:
        labels[record.patient_id] = max(labels.get(record.patient_id, 0), int(record.label))
    return labels


def _shuffled_strata(records: Sequence[Record], purpose: int, seed: int) -> list[list[str]]:
    """Patient ids per label (sorted label order), each list shuffled by the seed."""
    labels = patient_labels(records)
    rng = np.random.default_rng([seed, purpose])
    strata = []
    for label in sorted(set(labels.values())):
        patients = sorted(p for p, l in labels.items() if l == label)
        strata.append([patients[i] for i in rng.permutation(len(patients))])
    return strata


def _select(records: Sequence[Record], patients: set[str]) -> list[Record]:
    return [r for r in records if r.patient_id in patients]


def split_patients(records: Sequence[Record], *, val_fraction: float, test_fraction: float,
                   seed: int) -> dict[str, list[Record]]:
    """Splits records into ``train``/``val``/``test`` by patient, stratified by label.

    Each label's patients are shared out separately, rounding each part's
    count to the nearest patient, so small classes still reach val and test
    when their fraction asks for at least half a patient. Records keep their
    input order within each part.

    Hand-written on purpose: scikit-learn's stratified shuffle
    (``StratifiedShuffleSplit``, ``train_test_split(stratify=...)``) refuses a
    class with one patient and a part smaller than the number of classes,
    which small datasets and smoke tests hit (``StratifiedGroupKFold`` gives
    parts of 1/k only, not val=0.2 and test=0.35). tests/data/test_splits.py checks
    that the per-class counts agree with ``StratifiedShuffleSplit`` where it runs.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise MammojaxError(
            f"split fractions must be in [0, 1) and sum below 1 (val={val_fraction}, test={test_fraction})")
    parts: dict[str, set[str]] = {"train": set(), "val": set(), "test": set()}
    for patients in _shuffled_strata(records, PURPOSE_SPLIT, seed):
        n = len(patients)
        n_test = int(round(n * test_fraction))
        n_val = min(int(round(n * val_fraction)), n - n_test)
        parts["test"].update(patients[:n_test])
        parts["val"].update(patients[n_test:n_test + n_val])
        parts["train"].update(patients[n_test + n_val:])
    return {name: _select(records, patients) for name, patients in parts.items()}


def kfold_patients(records: Sequence[Record], *, k: int, seed: int) -> list[tuple[list[Record], list[Record]]]:
    """``k`` (train, test) pairs; every patient is in exactly one test fold.

    The folds are scikit-learn's ``StratifiedGroupKFold`` over the images, with
    the patient as the group and the patient's label as each image's class, so
    a woman never straddles two folds and each fold holds a near-equal share
    of images of women with cancer (its tie-break keeps fold sizes level).
    The shuffle: ``random_state`` is the first integer in ``[0, 2**32)`` drawn
    from ``np.random.default_rng([seed, PURPOSE_KFOLD])``; scikit-learn orders
    the patients by id, permutes them with that state, then deals them to folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    labels = patient_labels(records)
    if k < 2:
        raise MammojaxError(f"k-fold needs k >= 2 (got {k})")
    if k > len(labels):
        raise MammojaxError(f"k-fold with k={k} needs at least {k} patients, the records have {len(labels)}")
    records = list(records)
    patients = [r.patient_id for r in records]
    random_state = int(np.random.default_rng([seed, PURPOSE_KFOLD]).integers(2**32))
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=random_state)
    with warnings.catch_warnings():
        # "The least populated class has fewer members than n_splits": with few
        # positive women some folds hold none; their AUC is NaN, reported as such.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        pairs = list(folds.split(np.zeros(len(records)), [labels[p] for p in patients], groups=patients))
    return [([records[i] for i in train], [records[i] for i in test]) for train, test in pairs]


def records_of_split(records: Sequence[Record], data_settings: Mapping[str, Any], split: str, *,
                     seed: int) -> list[Record]:
    """The records of ``split`` ("train", "val", "test" or "all") under ``data_settings``.

    ``data_settings`` is the config's ``data`` section: a ``ConfigDict`` while
    training, or the plain dict stored in a checkpoint when evaluating; keys
    missing from an old checkpoint read as the base config's defaults. With
    ``num_folds > 0`` the held-out fold ``fold`` is "val" (it selects the model,
    tau and temperature) and there is no "test"; otherwise the fixed split of
    :func:`split_patients`. Records keep their input order.
    """
    if split not in SPLITS:
        raise MammojaxError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    records = list(records)
    if split == "all":
        return records
    num_folds = int(data_settings.get("num_folds", 0) or 0)
    if num_folds > 0:
        fold = int(data_settings.get("fold", 0))
        if not 0 <= fold < num_folds:
            raise MammojaxError(f"data.fold={fold} is outside 0..{num_folds - 1}")
        if split == "test":
            raise MammojaxError("split 'test' does not exist under k-fold settings (data.num_folds="
                                f"{num_folds}): k-fold training has only train and val")
        train, held_out = kfold_patients(records, k=num_folds, seed=seed)[fold]
        return list(train if split == "train" else held_out)
    parts = split_patients(records, val_fraction=float(data_settings.get("val_fraction", 0.15)),
                           test_fraction=float(data_settings.get("test_fraction", 0.15)), seed=seed)
    return parts[split]


def check_no_leakage(splits: Mapping[str, Sequence[Record]] | Sequence[Sequence[Record]]) -> None:
    """Raises ``MammojaxError`` naming a patient found in two parts of a split.

    ``splits`` is the dict from :func:`split_patients` or any sequence of
    record lists, e.g. one ``(train, test)`` pair from :func:`kfold_patients`.
    """
    named = splits.items() if isinstance(splits, Mapping) else (
        (f"part {i}", part) for i, part in enumerate(splits))
    owner: dict[str, str] = {}
    for name, part in named:
        for record in part:
            first = owner.setdefault(record.patient_id, name)
            if first != name:
                raise MammojaxError(f"patient {record.patient_id!r} is in both {first!r} and {name!r} (leakage)")
