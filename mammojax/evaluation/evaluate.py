"""Evaluate a checkpoint on a dataset split: the library behind ``mammojax eval``.

:func:`evaluate_checkpoint` loads a checkpoint, rebuilds the split it was
trained with (the split settings and seed stored in the checkpoint's config,
so the same seed gives the same women in the same split), scores every image,
and computes metrics at image, breast and patient level with bootstrap
confidence intervals that resample patients. :func:`summarize` is the pure
part (scores in, numbers out) that tests call directly.

The decision threshold is the checkpoint's ``tau``, chosen on validation data
by the trainer. Recomputing it on the evaluated data (``threshold_policy``) is
allowed but optimistic, and the result says so.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from pathlib import Path

import numpy as np

from mammojax.checkpoint import load_checkpoint, training_data_warning
from mammojax.data.pipeline import eval_batches
from mammojax.data.preparation import prepare_source
from mammojax.data.prepared import PixelOptions, open_prepared
from mammojax.data.records import dataset_task
from mammojax.data.splits import records_of_split
from mammojax.errors import MammojaxError
from mammojax.evaluation import aggregate as agg
from mammojax.evaluation import shortcuts
from mammojax.evaluation.bootstrap import bootstrap_ci
from mammojax.evaluation.calibration import (expected_calibration_error, negative_log_likelihood,
                                             probabilities, reliability_bins, temperature_at_bound)
from mammojax.evaluation.metrics import classification_metrics, pr_curve, roc_curve
from mammojax.evaluation.operating_points import OperatingPoint, calibration_warnings, level_margins
from mammojax.evaluation.report import class_names_of, write_report
from mammojax.evaluation.thresholds import choose_threshold
from mammojax.jsonio import json_safe, write_json
from mammojax.progress import progress_bar
from mammojax.scoring import Scorer

ECE_BINS = 15
SCORES_COLUMNS = ("path", "patient_id", "laterality", "truth", "probability", "decision")


@dataclasses.dataclass
class ScoredImages:
    """Per-image evaluation inputs, aligned by index."""

    paths: list[str]
    labels: np.ndarray  # (N,) int
    patient_ids: list[str]
    lateralities: list[str | None]
    logits: np.ndarray  # (N, C) film logits from mammojax.scoring.Scorer (TTA already applied)
    excluded: list = dataclasses.field(default_factory=list)  # (path, reason)

    def probabilities(self, temperature: float, offset: float = 0.0) -> np.ndarray:
        """Lesion-class probability of each image at ``temperature`` and ``offset`` (calibration.probabilities)."""
        return probabilities(self.logits, temperature, offset) if len(self.labels) else np.zeros(0)


def summarize(scored: ScoredImages, *, tau: float, temperature: float = 1.0,
              patient_aggregate: str = "max", n_bootstrap: int = 1000, seed: int = 0,
              threshold_policy: str | None = None, target: float = 0.9,
              operating_points: dict | None = None) -> dict:
    """Every number in the report, from scored images.

    Each level (image, breast, patient) is read at its own operating point
    (:mod:`mammojax.evaluation.operating_points`, from the checkpoint);
    without ``operating_points`` every level uses ``tau`` and ``temperature``.
    ``threshold_policy`` (None = use the stored taus) recomputes each level's
    threshold on these same images: the result is flagged ``tau_optimistic``.
    """
    points = operating_points or {level: OperatingPoint(tau=tau, temperature=temperature) for level in agg.LEVELS}
    labels = np.asarray(scored.labels, dtype=np.int64)
    tau_source = "checkpoint"
    if threshold_policy is not None:
        tau_source = f"{threshold_policy} on the evaluated data (optimistic)"
    levels = {}
    for level in agg.LEVELS:
        grouped = level_margins(scored.logits, labels, scored.patient_ids, scored.lateralities, level,
                                patient_aggregate)
        point = points[level]
        probs = point.probabilities(grouped.scores)
        level_tau = point.tau
        if threshold_policy is not None:
            level_tau = choose_threshold(grouped.labels, probs, threshold_policy, tau=point.tau, target=target)
        m = classification_metrics(grouped.labels, probs, tau=level_tau)
        m.update(tau=float(level_tau), temperature=float(point.temperature), offset=float(point.offset),
                 temperature_at_bound=temperature_at_bound(point.temperature))
        # Clusters = patients at every level: a woman's images or breasts move together.
        clusters = None if level == "patient" else grouped.patients
        m["auc_ci"] = bootstrap_ci(grouped.labels, probs, clusters, n_resamples=n_bootstrap, seed=seed)
        levels[level] = m
    tau = levels["image"]["tau"]
    temperature, offset = points["image"].temperature, points["image"].offset
    probs = scored.probabilities(temperature, offset)
    raw = scored.probabilities(1.0)
    calibration = {
        "temperature": float(temperature),
        "offset": float(offset),
        "n_bins": ECE_BINS,
        "ece_before": expected_calibration_error(labels, raw, ECE_BINS),
        "ece_after": expected_calibration_error(labels, probs, ECE_BINS),
        "nll_before": _binary_nll(labels, raw),
        "nll_after": _binary_nll(labels, probs),
    }
    return {
        "n_images": int(labels.size),
        "n_patients": len(set(scored.patient_ids)),
        "n_excluded": len(scored.excluded),
        "excluded": [{"path": str(path), "reason": str(reason)} for path, reason in scored.excluded],
        "tau": float(tau),
        "tau_source": tau_source,
        "tau_optimistic": threshold_policy is not None,
        "patient_aggregate": patient_aggregate,
        "bootstrap": {"resamples": int(n_bootstrap), "seed": int(seed), "unit": "patient"},
        "levels": levels,
        "calibration": calibration,
        "calibration_warnings": calibration_warnings(points),
    }


def _binary_nll(labels: np.ndarray, probs: np.ndarray) -> float:
    if labels.size == 0:
        return math.nan
    p = np.clip(probs, 1e-12, 1 - 1e-12)
    return negative_log_likelihood(np.log(np.stack([1 - p, p], axis=1)), labels)


def curves_for_report(scored: ScoredImages, temperature: float, offset: float = 0.0) -> dict:
    """Inputs of the report figures (image level)."""
    labels = np.asarray(scored.labels)
    probs = scored.probabilities(temperature, offset)
    raw = scored.probabilities(1.0)
    return {"labels": labels, "probs": probs, "roc": roc_curve(labels, probs),
            "pr": pr_curve(labels, probs),
            "reliability_before": reliability_bins(labels, raw, ECE_BINS),
            "reliability_after": reliability_bins(labels, probs, ECE_BINS)}


# ---------------------------------------------------------------------------
# Data selection and scoring


def select_split(records, config: dict, split: str, seed: int):
    """The records of ``split`` under the checkpoint's split settings (``config["data"]``)."""
    return records_of_split(records, config.get("data", {}), split, seed=seed)


def score_records(scorer, records, *, progress: bool = True) -> ScoredImages:
    """Scores image files with ``scorer`` (:class:`mammojax.scoring.Scorer`), read one by one.

    For files outside any prepared dataset (``predict``'s inputs). Unreadable
    files are skipped and listed in ``excluded``.
    """
    records = list(records)
    bar = progress_bar(len(records), desc="eval", enabled=None if progress else False)
    kept, excluded, logits = [], [], []
    for record in records:
        try:
            logits.append(scorer.logits(scorer.read(record.path, record.laterality).image[None]))
            kept.append(record)
        except MammojaxError as err:
            excluded.append((record.path, str(err)))
        bar.update(1)
    bar.close()
    return _scored(kept, logits, excluded, scorer.num_classes)


def score_prepared(scorer, view, *, excluded=(), progress: bool = True) -> ScoredImages:
    """Scores the examples of a prepared dataset (or a view of one) in padded batches over every device.

    ``excluded`` lists ``(path, reason)`` of the files the preparation left out.
    """
    bar = progress_bar(view.num_examples, desc="eval", enabled=None if progress else False)
    logits = []
    for batch in eval_batches(view, scorer.batch_size):
        logits.append(scorer.logits(batch["image"][batch["mask"]]))
        bar.update(len(logits[-1]))
    bar.close()
    return _scored(list(view.records), logits, list(excluded), scorer.num_classes)


def _scored(kept, logits, excluded, num_classes) -> ScoredImages:
    stacked = np.concatenate(logits) if logits else np.zeros((0, num_classes))
    return ScoredImages(paths=[r.path for r in kept],
                        labels=np.asarray([int(r.label) for r in kept], dtype=np.int64),
                        patient_ids=[str(r.patient_id) for r in kept],
                        lateralities=[r.laterality for r in kept], logits=stacked,
                        excluded=excluded)


def dataset_options_for(dataset: str, data_dir, ckpt, config: dict, seed: int) -> tuple[str, dict]:
    """Synthetic phantoms are regenerated exactly as the trainer made them."""
    if dataset != "synthetic":
        return str(data_dir or ""), {}
    data = config.get("data", {})
    if not data_dir:
        if ckpt.path.name == "best" and (ckpt.path.parent / "synthetic").is_dir():
            data_dir = ckpt.path.parent / "synthetic"  # the training workdir's phantoms
        else:
            data_dir = data.get("data_dir", "")
    return str(data_dir or ""), {"count": int(data.get("synthetic_count", 256)),
                                "seed": int(config.get("seed", seed))}


def evaluate_checkpoint(checkpoint: str | os.PathLike, dataset: str, data_dir: str | os.PathLike, *,
                        task: str | None = None, split: str = "test", seed: int | None = None,
                        tta_hflip: bool | None = None, out_dir: str | os.PathLike | None = None,
                        threshold_policy: str | None = None, target: float | None = None,
                        batch_size: int | None = None, n_bootstrap: int | None = None,
                        prepared: str | os.PathLike | None = None, progress: bool = True,
                        report: bool = True) -> dict:
    """Evaluates ``checkpoint`` on ``split`` of ``dataset``; returns metrics.json's content.

    Defaults come from the checkpoint's stored config: ``task`` (when the
    dataset is the one it was trained on), ``seed``, flip TTA
    (``eval.tta_hflip``), bootstrap count and patient aggregate. With
    ``out_dir`` it writes ``metrics.json``, ``scores.csv`` and the report.
    """
    ckpt = load_checkpoint(checkpoint)
    config = ckpt.meta.get("config", {}) or {}
    eval_cfg = config.get("eval", {})
    trained_on = ckpt.meta.get("data", {})
    if task is None:
        task = trained_on.get("task", "default") if trained_on.get("dataset") == dataset else "default"
    seed = int(config.get("seed", 0) if seed is None else seed)
    # The women of a split are the ones the checkpoint's own seed put there: on the dataset it
    # trained on, any other split seed would move training women into "test". ``seed`` then
    # only drives the bootstrap; on another dataset it draws the split as well.
    trained_here = trained_on.get("dataset") == dataset and "converted_from" not in ckpt.meta
    split_seed = int(config.get("seed", 0)) if trained_here else seed
    n_bootstrap = int(eval_cfg.get("bootstrap", 1000) if n_bootstrap is None else n_bootstrap)
    batch_size = int(batch_size or config.get("train", {}).get("eval_batch_size", 32))
    aggregate_how = ckpt.patient_aggregate

    scorer = Scorer.from_checkpoint(ckpt, batch_size=batch_size, tta_hflip=tta_hflip)
    tta = scorer.scoring.tta_hflip
    dataset_prepared = _prepared_for_checkpoint(ckpt, config, dataset, data_dir, task=task, seed=seed,
                                                prepared=prepared, progress=progress)
    records = select_split(dataset_prepared.records, config, split, split_seed)
    if not records:
        raise MammojaxError(f"split {split!r} of dataset {dataset!r} is empty")
    excluded = [(e.path, e.reason) for e in dataset_prepared.excluded]
    selected = dataset_prepared.select(records)
    scored = score_prepared(scorer, selected, excluded=excluded, progress=progress)
    if not scored.paths:
        raise MammojaxError(f"could not read any of the {len(records)} images of split {split!r} "
                            f"of dataset {dataset!r} (first: {scored.excluded[0][0]}: {scored.excluded[0][1]})")
    result = summarize(scored, tau=ckpt.tau, temperature=ckpt.temperature,
                       operating_points=ckpt.operating_points,
                       patient_aggregate=aggregate_how, n_bootstrap=n_bootstrap, seed=seed,
                       threshold_policy=threshold_policy,
                       target=float(eval_cfg.get("target", 0.9) if target is None else target))
    meaning = dataset_task(dataset, task)
    result = {"checkpoint": str(ckpt.path), "model": ckpt.model_name, "dataset": dataset,
              "task": task, "task_description": meaning.description,
              "class_names": list(meaning.class_names), "checkpoint_class_names": scorer.class_names,
              "split": split, "seed": seed, "split_seed": split_seed, "tta_hflip": tta, **result}
    # Does the network see cancer or the scanner? The training women's metadata-only model on these films.
    result["shortcuts"] = shortcuts.stored_report(ckpt.meta, selected.records,
                                                  scored.probabilities(ckpt.temperature, ckpt.offset),
                                                  n_boot=n_bootstrap, seed=seed)
    warning = training_data_warning(ckpt.meta, dataset=dataset)
    result["warnings"] = [warning] if warning else []
    result = json_safe(result)
    if out_dir is not None:
        write_outputs(out_dir, result, scored, temperature=ckpt.temperature, offset=ckpt.offset, report=report)
    return result


def write_outputs(out_dir: str | os.PathLike, result: dict, scored: ScoredImages, *,
                  temperature: float, offset: float = 0.0, report: bool = True) -> dict[str, Path]:
    """``metrics.json``, ``scores.csv`` and (with ``report``) report.html/.md.

    ``scores.csv`` has one row per scored image: ``path, patient_id, laterality,
    truth`` (the class the dataset gives it), ``probability`` (of the positive
    class) and ``decision`` (the class called at tau); classes by name, as
    ``result["class_names"]`` says (the evaluated task's).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"metrics": out / "metrics.json", "scores": out / "scores.csv"}
    write_json(written["metrics"], result)
    probs = scored.probabilities(temperature, offset)
    names = class_names_of(result)
    with open(written["scores"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(SCORES_COLUMNS)
        for i, path in enumerate(scored.paths):
            writer.writerow([path, scored.patient_ids[i], scored.lateralities[i] or "",
                             names[int(scored.labels[i])], f"{probs[i]:.6f}", names[int(probs[i] >= result["tau"])]])
    if report:
        written.update(write_report(out, result, curves_for_report(scored, temperature, offset)))
    return written


def _prepared_for_checkpoint(ckpt, config: dict, dataset: str, data_dir, *, task: str, seed: int,
                             prepared, progress: bool):
    """The dataset as the checkpoint's model sees it: ``prepared`` when given, else prepared now (once).

    A given prepared dataset must hold the pixels the model was trained on.
    """
    wanted = PixelOptions.from_config(ckpt.meta.get("data", {}) | {"max_pixels": config.get("data", {}).get(
        "max_pixels", 80_000_000)})
    if prepared:
        opened = open_prepared(prepared)
        have = opened.options
        pixels = lambda o: (o.image_shape, o.orient, o.crop_breast, o.fix_inverted)  # noqa: E731
        if pixels(have) != pixels(wanted):
            raise MammojaxError(f"{opened.path}: prepared at {have.image_shape[0]}x{have.image_shape[1]} "
                                f"(orient={have.orient}, crop_breast={have.crop_breast}, "
                                f"fix_inverted={have.fix_inverted}), but the model reads "
                                f"{wanted.image_shape[0]}x{wanted.image_shape[1]} (orient={wanted.orient}, "
                                f"crop_breast={wanted.crop_breast}, fix_inverted={wanted.fix_inverted})")
        if opened.name != dataset:
            raise MammojaxError(f"{opened.path}: prepared from dataset {opened.name!r}, not {dataset!r}")
        return opened
    data_dir, options = dataset_options_for(dataset, data_dir, ckpt, config, seed)
    root = config.get("data", {}).get("prepared_root") or None
    opened, _ = prepare_source(dataset, data_dir, task=task, adapter_options=options, options=wanted, root=root,
                               progress=progress)
    return opened
