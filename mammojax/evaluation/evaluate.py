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

import dataclasses
import math
import os
from pathlib import Path

import numpy as np

from mammojax.errors import MammojaxError
from mammojax.evaluation import aggregate as agg
from mammojax.evaluation.bootstrap import bootstrap_ci
from mammojax.evaluation.calibration import (expected_calibration_error, negative_log_likelihood,
                                             reliability_bins)
from mammojax.evaluation.metrics import classification_metrics
from mammojax.evaluation.thresholds import choose_threshold

SPLITS = ("all", "train", "val", "test")
ECE_BINS = 15


@dataclasses.dataclass
class ScoredImages:
    """Per-image evaluation inputs, aligned by index."""

    paths: list[str]
    labels: np.ndarray  # (N,) int
    patient_ids: list[str]
    lateralities: list[str | None]
    logits: np.ndarray  # (N, V, C) raw logits, V = 2 with flip TTA
    excluded: list = dataclasses.field(default_factory=list)  # (path, reason)

    def probabilities(self, temperature: float) -> np.ndarray:
        """Cancer probability at ``temperature``, averaged over TTA views."""
        from mammojax.inference import probabilities_from_logits

        return probabilities_from_logits(self.logits, temperature) if len(self.labels) else np.zeros(0)


def _nan_to_none(obj):
    """JSON has no NaN: undefined metrics are written as null."""
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return _nan_to_none(obj.item())
    return obj


def summarize(scored: ScoredImages, *, tau: float, temperature: float = 1.0,
              patient_aggregate: str = "max", n_bootstrap: int = 1000, seed: int = 0,
              threshold_policy: str | None = None, target: float = 0.9) -> dict:
    """Every number in the report, from scored images.

    ``threshold_policy`` (None = use ``tau``) recomputes the threshold on these
    same images: the result is flagged ``tau_optimistic``.
    """
    probs = scored.probabilities(temperature)
    labels = np.asarray(scored.labels, dtype=np.int64)
    tau_source = "checkpoint"
    if threshold_policy is not None:
        tau = choose_threshold(labels, probs, threshold_policy, tau=tau, target=target)
        tau_source = f"{threshold_policy} on the evaluated data (optimistic)"
    levels = {}
    for level in agg.LEVELS:
        grouped = agg.by_level(labels, probs, scored.patient_ids, scored.lateralities, level,
                               patient_aggregate)
        m = classification_metrics(grouped.labels, grouped.scores, tau=tau)
        # Clusters = patients at every level: a woman's images or breasts move together.
        clusters = None if level == "patient" else grouped.patients
        m["auc_ci"] = bootstrap_ci(grouped.labels, grouped.scores, clusters,
                                   n_resamples=n_bootstrap, seed=seed)
        levels[level] = m
    raw = scored.probabilities(1.0)
    calibration = {
        "temperature": float(temperature),
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
    }


def _binary_nll(labels: np.ndarray, probs: np.ndarray) -> float:
    if labels.size == 0:
        return math.nan
    p = np.clip(probs, 1e-12, 1 - 1e-12)
    return negative_log_likelihood(np.log(np.stack([1 - p, p], axis=1)), labels)


def curves_for_report(scored: ScoredImages, temperature: float) -> dict:
    """Inputs of the report figures (image level)."""
    from mammojax.evaluation.metrics import pr_curve, roc_curve

    labels = np.asarray(scored.labels)
    probs = scored.probabilities(temperature)
    raw = scored.probabilities(1.0)
    return {"labels": labels, "probs": probs, "roc": roc_curve(labels, probs),
            "pr": pr_curve(labels, probs),
            "reliability_before": reliability_bins(labels, raw, ECE_BINS),
            "reliability_after": reliability_bins(labels, probs, ECE_BINS)}


# ---------------------------------------------------------------------------
# Data selection and scoring


def select_split(records, config: dict, split: str, seed: int):
    """The records of ``split`` under the checkpoint's split settings."""
    if split not in SPLITS:
        raise MammojaxError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    records = list(records)
    if split == "all":
        return records
    from mammojax.data import splits as splits_lib

    data = config.get("data", {})
    folds = int(data.get("num_folds", 0) or 0)
    if folds > 0:
        # k-fold training validates on the held-out fold and has no test part.
        fold = int(data.get("fold", 0))
        train, held_out = splits_lib.kfold_patients(records, k=folds, seed=seed)[fold]
        parts = {"train": train, "val": held_out}
    else:
        parts = splits_lib.split_patients(records, val_fraction=float(data.get("val_fraction", 0.15)),
                                          test_fraction=float(data.get("test_fraction", 0.15)),
                                          seed=seed)
    subset = parts.get(split)
    if subset is None:
        raise MammojaxError(f"split {split!r} does not exist under the checkpoint's split settings "
                            f"(k-fold training has only train and val)")
    return list(subset)


def score_records(predictor, records, *, cache_dir: str | os.PathLike | None = None,
                  progress: bool = True, max_pixels: int = 80_000_000) -> ScoredImages:
    """Scores records through the decoded-image cache (or reads them directly).

    Unreadable files are skipped and listed in ``excluded``.
    """
    from mammojax.predict import Progress

    records = list(records)
    try:
        from mammojax.data.cache import prepare_cache
        from mammojax.data.pipeline import eval_batches
    except ImportError:  # the pipeline is optional for evaluation
        prepare_cache = None
    if prepare_cache is not None and cache_dir is not None:
        opts = predictor.checkpoint.preprocess_options
        cache = prepare_cache(records, cache_dir=cache_dir, image_size=opts["image_size"],
                              orient=opts["orient"], crop_breast=opts["crop_breast"],
                              max_pixels=max_pixels, progress=progress)
        bar = Progress(cache.num_examples, enabled=None if progress else False)
        logits = []
        for batch in eval_batches(cache, predictor.batch_size):
            batch_logits = predictor.predict_logits(batch["image"])[batch["mask"]]
            logits.append(batch_logits)
            bar.update(len(batch_logits))
        bar.close()
        kept = list(cache.records)
        excluded = [(e.path, e.reason) for e in cache.excluded]
        stacked = np.concatenate(logits) if logits else _empty_logits(predictor)
    else:
        bar = Progress(len(records), enabled=None if progress else False)
        kept, excluded, logits = [], [], []
        for start in range(0, len(records), predictor.batch_size):
            chunk = records[start:start + predictor.batch_size]
            images = []
            for record in chunk:
                try:
                    images.append(predictor.load_image(record.path)[0])
                    kept.append(record)
                except MammojaxError as err:
                    excluded.append((record.path, str(err)))
            if images:
                logits.append(predictor.predict_logits(np.stack(images)))
            bar.update(len(chunk))
        bar.close()
        stacked = np.concatenate(logits) if logits else _empty_logits(predictor)
    return ScoredImages(paths=[r.path for r in kept],
                        labels=np.asarray([int(r.label) for r in kept], dtype=np.int64),
                        patient_ids=[str(r.patient_id) for r in kept],
                        lateralities=[r.laterality for r in kept], logits=stacked,
                        excluded=excluded)


def _empty_logits(predictor) -> np.ndarray:
    views = 2 if predictor.tta_hflip else 1
    return np.zeros((0, views, int(predictor.checkpoint.meta["model"]["num_classes"])), np.float32)


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
                        cache_dir: str | os.PathLike | None = None, progress: bool = True,
                        report: bool = True) -> dict:
    """Evaluates ``checkpoint`` on ``split`` of ``dataset``; returns metrics.json's content.

    Defaults come from the checkpoint's stored config: ``task`` (when the
    dataset is the one it was trained on), ``seed``, flip TTA
    (``eval.tta_hflip``), bootstrap count and patient aggregate. With
    ``out_dir`` it writes ``metrics.json``, ``scores.csv`` and the report.
    """
    from mammojax import runtime
    from mammojax.checkpoint import load_checkpoint
    from mammojax.data.records import load_dataset
    from mammojax.inference import Predictor

    ckpt = load_checkpoint(checkpoint)
    config = ckpt.meta.get("config", {}) or {}
    eval_cfg = config.get("eval", {})
    trained_on = ckpt.meta.get("data", {})
    if task is None:
        task = trained_on.get("task", "default") if trained_on.get("dataset") == dataset else "default"
    seed = int(config.get("seed", 0) if seed is None else seed)
    tta = bool(eval_cfg.get("tta_hflip", False)) if tta_hflip is None else bool(tta_hflip)
    n_bootstrap = int(eval_cfg.get("bootstrap", 1000) if n_bootstrap is None else n_bootstrap)
    batch_size = int(batch_size or config.get("train", {}).get("eval_batch_size", 32))
    aggregate_how = ckpt.meta.get("patient_aggregate", eval_cfg.get("patient_aggregate", "max"))

    data_dir, options = dataset_options_for(dataset, data_dir, ckpt, config, seed)
    loaded = load_dataset(dataset, data_dir, task=task, **options)
    records = select_split(loaded.records, config, split, seed)
    if not records:
        raise MammojaxError(f"split {split!r} of dataset {dataset!r} is empty")
    if cache_dir is None:
        cache_dir = config.get("data", {}).get("cache_dir") or (runtime.default_cache_dir() / "eval")
    predictor = Predictor(ckpt, batch_size=batch_size, tta_hflip=tta)
    scored = score_records(predictor, records, cache_dir=cache_dir, progress=progress,
                           max_pixels=int(config.get("data", {}).get("max_pixels", 80_000_000)))
    if not scored.paths:
        raise MammojaxError(f"could not read any of the {len(records)} images of split {split!r} "
                            f"of dataset {dataset!r} (first: {scored.excluded[0][0]}: {scored.excluded[0][1]})")
    result = summarize(scored, tau=ckpt.tau, temperature=ckpt.temperature,
                       patient_aggregate=aggregate_how, n_bootstrap=n_bootstrap, seed=seed,
                       threshold_policy=threshold_policy,
                       target=float(eval_cfg.get("target", 0.9) if target is None else target))
    result = {"checkpoint": str(ckpt.path), "model": ckpt.model_name, "dataset": dataset,
              "task": task, "split": split, "seed": seed, "tta_hflip": tta, **result}
    result = _nan_to_none(result)
    if out_dir is not None:
        write_outputs(out_dir, result, scored, temperature=ckpt.temperature, report=report)
    return result


def write_outputs(out_dir: str | os.PathLike, result: dict, scored: ScoredImages, *,
                  temperature: float, report: bool = True) -> dict[str, Path]:
    """``metrics.json``, ``scores.csv`` and (with ``report``) report.html/.md."""
    import csv
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"metrics": out / "metrics.json", "scores": out / "scores.csv"}
    written["metrics"].write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    probs = scored.probabilities(temperature)
    with open(written["scores"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "patient_id", "laterality", "label", "probability", "decision"])
        for i, path in enumerate(scored.paths):
            writer.writerow([path, scored.patient_ids[i], scored.lateralities[i] or "",
                             int(scored.labels[i]), f"{probs[i]:.6f}", int(probs[i] >= result["tau"])])
    if report:
        from mammojax.evaluation.report import write_report

        written.update(write_report(out, result, curves_for_report(scored, temperature)))
    return written
