"""Patient-wise, label-stratified splits and k-fold cross-validation.

Images of one woman are correlated (both views, both breasts), so every split
is made over *patients*: all of a patient's images land in the same part.
Patients are stratified by their label, positive when any of their images is,
so each part keeps about the dataset's share of positive patients.

Splits are deterministic: patients are sorted by id before a NumPy generator
seeded with ``[seed, PURPOSE_SPLIT]`` shuffles them, so the same records and
seed give the same split on every machine, whatever the record order.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from mammojax.data.records import Record
from mammojax.errors import MammojaxError

PURPOSE_SPLIT = 201  # np.random.default_rng([seed, purpose]) per architecture.md
PURPOSE_KFOLD = 202


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

    Within each label the shuffled patients are dealt to folds in turn, and
    each label starts where the previous one stopped, so fold sizes differ by
    at most one patient and each fold holds a near-equal share of positives.
    """
    patients = patient_labels(records)
    if k < 2:
        raise MammojaxError(f"k-fold needs k >= 2 (got {k})")
    if k > len(patients):
        raise MammojaxError(f"k-fold with k={k} needs at least {k} patients, the records have {len(patients)}")
    folds: list[set[str]] = [set() for _ in range(k)]
    position = 0
    for stratum in _shuffled_strata(records, PURPOSE_KFOLD, seed):
        for patient in stratum:
            folds[position % k].add(patient)
            position += 1
    pairs = []
    for held_out in folds:
        pairs.append(([r for r in records if r.patient_id not in held_out], _select(records, held_out)))
    return pairs


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
