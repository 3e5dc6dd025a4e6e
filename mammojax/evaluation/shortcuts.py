"""Shortcut checks: how much of the label does the acquisition metadata alone predict?

On the RSNA screening data a logistic regression on site, machine, view,
implant and age separates cancer from no cancer on other women with an image
AUC of about 0.67 (one machine has no cancer at all; women with cancer are
older). A network can reach a respectable AUC by recognising the scanner, so
every cross-validation summary and evaluation report shows, beside the image
model's AUC:

* the AUC of a metadata-only model fitted on the training women only
  (:func:`shortcut_report`; out of fold in the CV: :func:`metadata_auc_cv`),
  with a bootstrap interval over women;
* the image model's AUC within each machine that has at least
  ``min_per_class`` films of each class (:func:`within_group_aucs`), where the
  scanner can no longer help.

Datasets without acquisition metadata (MIAS, CBIS-DDSM, the synthetic
phantoms, ...) get ``None`` from :func:`shortcut_report`: the checks do not
apply. Only NumPy and scikit-learn (imported when a model is fitted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mammojax.evaluation.bootstrap import bootstrap_ci
from mammojax.evaluation.metrics import roc_auc

# What the scanner and the screening invitation know before anyone reads the
# film: site, machine (RSNA ``extra``), the view (``Record.view``), breast
# implant and age. Columns that are outcomes of the workup are never used:
# BI-RADS, biopsy, invasive and difficult_negative_case are decided after (or
# because of) the reading, so they encode the label itself. Density is left
# out as well: it is a radiologist's reading of the film, not acquisition
# metadata, and the image model sees the tissue anyway.
METADATA_FEATURES = ("site_id", "machine_id", "view", "implant", "age")
CATEGORICAL_FEATURES = ("site_id", "machine_id", "view", "implant")
NUMERIC_FEATURES = ("age",)
# Features read from ``Record.extra``; ``view`` is on every record of every
# dataset (it is what the adapters parse), so on its own it does not make a
# dataset one "with metadata" (see has_metadata).
ACQUISITION_FEATURES = ("site_id", "machine_id", "implant", "age")
FEATURE_NAMES = {"site_id": "site", "machine_id": "machine", "view": "view", "implant": "implant",
                 "age": "age"}
MIN_PER_CLASS = 30


def _value(record, key: str) -> str | None:
    """``record``'s value of feature ``key`` as a string, or None when missing/blank."""
    value = record.view if key == "view" else record.get(key)
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _age(record) -> float | None:
    value = _value(record, "age")
    if value is None:
        return None
    try:
        age = float(value)
    except ValueError:
        return None
    return age if math.isfinite(age) else None


def _distinct(records, key: str) -> set:
    if key in NUMERIC_FEATURES:
        return {a for a in (_age(r) for r in records) if a is not None}
    return {v for v in (_value(r, key) for r in records) if v is not None}


def present_features(records) -> list[str]:
    """The features of :data:`METADATA_FEATURES` with at least two values in ``records``."""
    return [key for key in METADATA_FEATURES if len(_distinct(records, key)) >= 2]


def has_metadata(records) -> bool:
    """Whether the shortcut checks apply: an acquisition feature (site, machine,
    implant or age) takes at least two values in ``records``.

    The view alone does not count: every dataset records it, and a view-only
    model says nothing about the scanner or the woman.
    """
    return any(key in ACQUISITION_FEATURES for key in present_features(records))


def metadata_matrix(records, *, categories: dict | None = None) -> tuple[np.ndarray, dict]:
    """The design matrix of ``records`` and the encoding it used.

    Categorical features (site, machine, view, implant) are one-hot; a missing
    value, or one the encoding has not seen, is a row of zeros in that block.
    Age is standardised with the training mean and standard deviation, a
    missing age is set to the mean (0 after standardising), and a second
    column flags it as missing. ``categories=None`` learns the encoding from
    ``records`` (the training ones); pass the returned dict to encode test
    records the same way. The dict is plain JSON: ``{"categorical": {feature:
    [values]}, "age": {"mean", "std"} | None}``.
    """
    records = list(records)
    if categories is None:
        categorical = {key: sorted(_distinct(records, key)) for key in CATEGORICAL_FEATURES}
        ages = [a for a in (_age(r) for r in records) if a is not None]
        age = None
        if ages:
            std = float(np.std(ages))
            age = {"mean": float(np.mean(ages)), "std": std if std > 0 else 1.0}
        categories = {"categorical": {k: v for k, v in categorical.items() if v}, "age": age}
    blocks = []
    for key, values in categories["categorical"].items():
        column = {value: j for j, value in enumerate(values)}
        block = np.zeros((len(records), len(values)))
        for i, record in enumerate(records):
            j = column.get(_value(record, key))
            if j is not None:
                block[i, j] = 1.0
        blocks.append(block)
    if categories["age"] is not None:
        mean, std = categories["age"]["mean"], categories["age"]["std"]
        ages = [_age(r) for r in records]
        blocks.append(np.array([[0.0 if a is None else (a - mean) / std, float(a is None)] for a in ages],
                               dtype=np.float64).reshape(len(records), 2))
    x = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(records), 0))
    return x, categories


@dataclass(frozen=True)
class MetadataModel:
    """A fitted metadata-only model: the encoding and the logistic regression's weights.

    ``coef`` is None when the training records left nothing to fit (one class
    only, or no feature columns); the model then scores every record with
    ``constant`` (the training prevalence). Plain numbers only, so a
    checkpoint stores it as JSON (:meth:`to_meta`) and ``eval`` scores other
    women with the model of the training women (:func:`model_from_meta`).
    """

    categories: dict
    features: tuple[str, ...]
    coef: tuple[float, ...] | None = None
    intercept: float = 0.0
    constant: float = 0.5

    def to_meta(self) -> dict:
        return {"categories": self.categories, "features": list(self.features),
                "coef": None if self.coef is None else list(self.coef), "intercept": self.intercept,
                "constant": self.constant}


def model_from_meta(meta: dict) -> MetadataModel:
    """The :class:`MetadataModel` a checkpoint stored (``meta["shortcuts"]["metadata_model"]``)."""
    coef = meta.get("coef")
    return MetadataModel(categories=meta["categories"], features=tuple(meta.get("features") or ()),
                         coef=None if coef is None else tuple(float(c) for c in coef),
                         intercept=float(meta.get("intercept", 0.0)), constant=float(meta.get("constant", 0.5)))


def fit_metadata_model(train_records, *, seed: int = 0, C: float = 1.0) -> MetadataModel:
    """A logistic regression (L2, ``C``, lbfgs) of the label on the metadata of ``train_records``.

    Deterministic: the same records and seed give the same model.
    """
    train_records = list(train_records)
    x, categories = metadata_matrix(train_records)
    y = np.array([int(r.label) for r in train_records], dtype=np.int64)
    features = tuple(present_features(train_records))
    prevalence = float(y.mean()) if y.size else 0.5
    if x.shape[1] == 0 or y.size == 0 or y.min() == y.max():
        return MetadataModel(categories, features, None, 0.0, prevalence)
    from sklearn.linear_model import LogisticRegression

    estimator = LogisticRegression(C=C, max_iter=1000, random_state=seed).fit(x, y)
    return MetadataModel(categories, features, tuple(float(c) for c in estimator.coef_[0]),
                         float(estimator.intercept_[0]), prevalence)


def metadata_scores(model: MetadataModel, records) -> np.ndarray:
    """The model's probability of label 1 for each of ``records``: ``sigmoid(x . coef + intercept)``."""
    records = list(records)
    if model.coef is None:
        return np.full(len(records), model.constant, dtype=np.float64)
    x, _ = metadata_matrix(records, categories=model.categories)
    z = x @ np.asarray(model.coef, np.float64) + model.intercept
    return 1.0 / (1.0 + np.exp(-z))


def checkpoint_entry(train_records, *, seed: int = 0) -> dict:
    """What a training run stores in its checkpoint for ``eval``'s shortcut checks.

    ``{"shortcuts": {"metadata_model": ...}}``: the metadata-only model of the
    training women, or ``{}`` when their records carry no acquisition metadata.
    """
    train_records = list(train_records)
    if not has_metadata(train_records):
        return {}
    return {"shortcuts": {"metadata_model": fit_metadata_model(train_records, seed=seed).to_meta()}}


def stored_report(checkpoint_meta: dict, test_records, test_scores, *, n_boot: int, seed: int) -> dict | None:
    """``eval``'s shortcut report: the checkpoint's metadata model (fitted on its training women) on
    ``test_records``, beside the image model's ``test_scores``.

    None when the checks do not apply: the test records carry no acquisition
    metadata, or the checkpoint stored no metadata model (trained on a dataset
    without it, or before it was stored).
    """
    stored = (checkpoint_meta.get("shortcuts") or {}).get("metadata_model")
    test_records = list(test_records)
    if stored is None or not has_metadata(test_records):
        return None
    model = model_from_meta(stored)
    return report_from_scores(test_records, metadata_scores(model, test_records), test_scores, n_boot=n_boot,
                              seed=seed, features=model.features)


def metadata_auc_cv(fold_pairs: Sequence[tuple[Sequence, Sequence]], *, seed: int = 0) -> np.ndarray:
    """Out-of-fold metadata scores: fit on each ``(train, test)`` pair's train
    records, score its test records; the scores follow the test records of the
    pairs concatenated in order."""
    parts = [metadata_scores(fit_metadata_model(train, seed=seed), test) for train, test in fold_pairs]
    return np.concatenate(parts) if parts else np.zeros(0)


def _group_order(value) -> tuple:
    """Numeric ids (RSNA machine ids) in numeric order, then the others by name."""
    try:
        return (0, float(value), str(value))
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def within_group_aucs(labels, scores, groups, *, min_per_class: int = MIN_PER_CLASS) -> list[dict]:
    """The AUC within each group (machine) with at least ``min_per_class`` films of each class.

    Returns ``[{"group", "n", "n_pos", "auc"}]`` sorted by group (numeric ids
    numerically); films with a missing group (None or blank) are left out.
    """
    y = np.asarray(labels).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    groups = ["" if g is None else str(g).strip() for g in groups]
    if not (len(groups) == y.size == s.size):
        raise ValueError(f"labels ({y.size}), scores ({s.size}) and groups ({len(groups)}) differ in length")
    g = np.asarray(groups, dtype=object)
    rows = []
    for value in sorted({v for v in groups if v}, key=_group_order):
        mask = g == value
        n, n_pos = int(mask.sum()), int(y[mask].sum())
        if n_pos >= min_per_class and n - n_pos >= min_per_class:
            rows.append({"group": value, "n": n, "n_pos": n_pos, "auc": roc_auc(y[mask], s[mask])})
    return rows


def report_from_scores(test_records, metadata_probs, image_scores, *, n_boot: int, seed: int,
                       group_key: str = "machine_id", min_per_class: int = MIN_PER_CLASS,
                       features: Sequence[str] | None = None) -> dict:
    """The shortcut report from scores already made (the CV's out-of-fold metadata scores).

    ``metadata_probs`` and ``image_scores`` follow ``test_records``; the
    interval resamples women (``patient_id``). ``features`` defaults to those
    with two or more values in ``test_records``.
    """
    test_records = list(test_records)
    labels = np.array([int(r.label) for r in test_records], dtype=np.int64)
    women = [r.patient_id for r in test_records]
    metadata_probs = np.asarray(metadata_probs, dtype=np.float64).ravel()
    image_scores = np.asarray(image_scores, dtype=np.float64).ravel()
    if not (metadata_probs.size == image_scores.size == labels.size):
        raise ValueError(f"records ({labels.size}), metadata scores ({metadata_probs.size}) and image scores "
                         f"({image_scores.size}) differ in length")
    ci = bootstrap_ci(labels, metadata_probs, women, n_resamples=n_boot, seed=seed)
    return {
        "features": list(present_features(test_records) if features is None else features),
        "metadata_auc": roc_auc(labels, metadata_probs),
        "metadata_auc_low": ci["low"], "metadata_auc_high": ci["high"],
        "image_auc": roc_auc(labels, image_scores),
        "n": int(labels.size), "n_pos": int(labels.sum()), "women": len(set(women)),
        "group_key": group_key,
        "within_machine": within_group_aucs(labels, image_scores, [r.get(group_key) for r in test_records],
                                            min_per_class=min_per_class),
        "min_per_class": int(min_per_class),
    }


def shortcut_report(train_records, test_records, test_scores, *, seed: int, n_boot: int,
                    group_key: str = "machine_id", min_per_class: int = MIN_PER_CLASS) -> dict | None:
    """Fit the metadata-only model on ``train_records``, score ``test_records``, compare with ``test_scores``.

    Returns ``{"features", "metadata_auc", "metadata_auc_low",
    "metadata_auc_high", "image_auc", "n", "n_pos", "women", "group_key",
    "within_machine", "min_per_class"}``, or None when the records carry no
    acquisition metadata (:func:`has_metadata`): the checks do not apply.
    """
    train_records, test_records = list(train_records), list(test_records)
    if not (has_metadata(train_records) and has_metadata(test_records)):
        return None
    model = fit_metadata_model(train_records, seed=seed)
    return report_from_scores(test_records, metadata_scores(model, test_records), test_scores,
                              n_boot=n_boot, seed=seed, group_key=group_key, min_per_class=min_per_class,
                              features=model.features)


def _fmt(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def shortcut_parts(report: dict | None) -> tuple[list[str], list[str], list[list[str]]]:
    """``(sentences, table header, table rows)`` of a shortcut report, for Markdown and HTML alike.

    Accepts the report as :func:`shortcut_report` returns it or as read back
    from JSON (undefined numbers as None). No table (empty header) when no
    machine has enough films of each class.
    """
    if not report:
        return ["Shortcut checks: not applicable (the records carry no acquisition metadata, "
                "or the checkpoint stored no metadata model)."], [], []
    names = ", ".join(FEATURE_NAMES.get(f, f) for f in report.get("features") or ()) or "no feature"
    group = FEATURE_NAMES.get(report.get("group_key", "machine_id"), report.get("group_key", "group"))
    k = report.get("min_per_class", MIN_PER_CLASS)
    sentences = [f"Metadata-only model ({names}; fitted on the training women only): AUC "
                 f"{_fmt(report.get('metadata_auc'), 2)} ({_fmt(report.get('metadata_auc_low'), 2)}-"
                 f"{_fmt(report.get('metadata_auc_high'), 2)}) against the image model's "
                 f"{_fmt(report.get('image_auc'), 2)}."]
    rows = report.get("within_machine") or []
    if not rows:
        return sentences + [f"No {group} has {k} films of each class: no within-{group} AUC."], [], []
    sentences.append(f"Image model's AUC within each {group} with at least {k} films of each class:")
    header = [group, "films (cancer)", "image AUC"]
    return sentences, header, [[str(r["group"]), f"{r['n']} ({r['n_pos']})", _fmt(r.get("auc"), 3)] for r in rows]


def render_shortcuts(report: dict | None) -> str:
    """A few Markdown lines for the CV table and the eval report (no trailing newline)."""
    sentences, header, rows = shortcut_parts(report)
    if not header:
        return "\n".join(sentences)
    lines = [sentences[0], "", *sentences[1:], "", "| " + " | ".join(header) + " |", "|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
