"""Patient-wise, label-stratified k-fold cross-validation of any config (``mammojax cv``).

One core for every dataset and trainer: the config's dataset is prepared once
(decoding learns nothing from labels, so every fold reads the same prepared
dataset), its women are cut into ``cv.num_folds`` label-stratified folds
(:func:`mammojax.data.splits.kfold_patients`), and for each fold:

* the other folds' women are split again, patient-wise, into an inner
  training part and an inner validation part (``data.val_fraction``);
* the trainer ``train.recipe`` names (:mod:`mammojax.train.trainers`: whole
  films or lesion patches) trains ``cv.ensemble`` networks on the inner
  training part, each in its own training workdir
  ``networks/fold<k>-member<m>/``: a killed CV resumes inside the network it
  was training, a rerun reads finished networks back, and a larger
  ``cv.ensemble`` adds members to those already trained;
* the inner validation films, scored by the one scorer, fix an operating point
  (temperature and tau) per level: image, breast and patient
  (:mod:`mammojax.evaluation.operating_points`);
* the fold's test women are touched only to be scored.

Results pool the folds' test predictions (every woman scored exactly once, by
the networks that never saw her): per level the AUC with a 95% bootstrap
interval that resamples women, and sensitivity/specificity at each fold's own
tau for that level. Where the records carry acquisition metadata (RSNA: site,
machine, view, implant, age), the summary adds the shortcut checks of
:mod:`mammojax.evaluation.shortcuts`: a metadata-only model fitted on each
fold's training women, and the image model's AUC within each machine.
Outputs in ``workdir`` (names in :mod:`mammojax.workdir`): ``results.json``,
``table.md``, ``roc.png``, ``predictions.csv`` and one inference checkpoint per
fold (``fold<k>/``), whose metadata names the fold so ``mammojax eval --split
val`` re-scores its test women.

Dataset-specific choices stay in configs: ``configs/mias.py`` (patch trainer,
window scoring, the other-breast term ``eval.contralateral``) and
``configs/rsna.py`` (whole films).
"""

from __future__ import annotations

import csv
import hashlib
import os
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np

from mammojax.checkpoint import load_checkpoint, make_meta, save_checkpoint
from mammojax.data.preprocess import image_size_of
from mammojax.data.splits import check_no_leakage, kfold_patients, split_patients
from mammojax.errors import MammojaxError
from mammojax.evaluation import shortcuts
from mammojax.evaluation.bootstrap import bootstrap_ci
from mammojax.evaluation.calibration import bound_warning, temperature_at_bound
from mammojax.evaluation.metrics import confusion_counts, rates_from_counts, roc_auc, roc_curve
from mammojax.evaluation.operating_points import OperatingPoint, fit_from_config, level_margins, to_meta
from mammojax.jsonio import write_json
from mammojax.models import create_model
from mammojax.scoring import FilmScoring, Scorer
from mammojax.train.data import TrainingData, adopt_prepared_options, prepared_dataset
from mammojax.train.patches import PatchSettings, PatchSource, plan_epoch
from mammojax.train.trainers import get_trainer
from mammojax.train.validation import validation_logits
from mammojax.workdir import CV_PREDICTIONS, CV_RESULTS, CV_ROC, CV_TABLE, Workdir

PURPOSE_INNER_SPLIT = 303
PURPOSE_PATCH_AUC = 304
LEVELS = ("image", "breast", "patient")


def hardware_summary() -> dict:
    """CPU model and core count (from /proc/cpuinfo where present) and the JAX backend."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    import jax

    return {"cpu": model, "cores": int(cores), "jax_backend": jax.default_backend(),
            "jax_devices": [str(d) for d in jax.devices()]}


def run_cv(config, workdir: str | os.PathLike, *, log: Callable[[str], None] = print) -> dict:
    """Runs the k-fold CV of ``config`` on its dataset (``data.dataset``, ``data.data_dir``) and writes the report.

    ``config.cv.num_folds`` folds (>= 2), inner validation share
    ``config.data.val_fraction``. Returns the dict written to ``results.json``.
    """

    started = time.time()
    workdir = Workdir(workdir)
    get_trainer(config.train.recipe)  # an unknown recipe fails before any work
    k = int(config.cv.num_folds)
    if k < 2:
        raise MammojaxError(f"cv.num_folds must be at least 2 for cross-validation (got {k})")
    seed = int(config.seed)
    ensemble = int(config.cv.ensemble)
    if ensemble < 1:
        raise MammojaxError(f"cv.ensemble must be at least 1 (got {ensemble})")
    if ensemble > 1 and config.eval.scoring != "windows":
        raise MammojaxError("cv.ensemble > 1 needs eval.scoring='windows' (whole-film scoring takes one network)")
    adopt_prepared_options(config)
    workdir.root.mkdir(parents=True, exist_ok=True)
    prepared = prepared_dataset(config, progress=False)
    records = list(prepared.records)
    labels = np.asarray(prepared.labels)
    position = {record.path: i for i, record in enumerate(records)}
    patients = np.asarray(prepared.patient_ids)
    lateralities = [r.laterality for r in records]
    log(f"{config.data.dataset}: {len(labels)} images, {len(set(patients))} women, {int(labels.sum())} positive; "
        f"{k} folds, {config.train.recipe} trainer, input {config.data.image_size} px")

    model = create_model(config.model.name, num_classes=int(config.model.num_classes),
                         head_pooling=config.model.head_pooling, dtype=config.model.dtype)
    folds, predictions, fold_pairs = [], [], []
    weight = float(config.eval.contralateral)
    for fold, (train_records, test_records) in enumerate(kfold_patients(records, k=k, seed=seed)):
        fold_started = time.time()
        inner = split_patients(train_records, val_fraction=float(config.data.val_fraction), test_fraction=0.0,
                               seed=seed * 1000 + PURPOSE_INNER_SPLIT + fold)
        # Guard, not hope: the women who fix tau/temperature are none of the test women.
        check_no_leakage({"inner train": inner["train"], "inner val": inner["val"], "test": test_records})
        fit_idx = np.array([position[r.path] for r in inner["train"]])
        val_idx = np.array([position[r.path] for r in inner["val"]])
        test_idx = np.array([position[r.path] for r in test_records])
        fold_pairs.append((train_records, [records[i] for i in test_idx]))
        log(f"fold {fold + 1}/{k}: train {len(fit_idx)} images, inner val {len(val_idx)}, test {len(test_idx)}")
        data = TrainingData(train=prepared.subset(fit_idx), val=prepared.subset(val_idx))
        members = [_trained_network(workdir.network(fold, member), config, data, fold=fold, member=member, log=log)
                   for member in range(ensemble)]
        variables = members if ensemble > 1 else members[0]
        # Films scored by the one scorer, as each fold checkpoint's eval will score them.
        val_raw = validation_logits(model, variables, data.val, config, batch_size=64)[0]
        test_raw = validation_logits(model, variables, prepared.subset(test_idx), config, batch_size=64)[0]
        val_logits = contralateral_logits(val_raw, patients[val_idx], weight)
        test_logits = contralateral_logits(test_raw, patients[test_idx], weight)
        points = fit_from_config(val_logits, labels[val_idx], patients[val_idx],
                                 [lateralities[i] for i in val_idx], config)
        fold_result = score_fold(test_logits, labels[test_idx], patients[test_idx],
                                 [lateralities[i] for i in test_idx], points, config, seed=seed)
        val_auc = _image_auc(val_logits, labels[val_idx])
        fold_result.update(fold=fold, seconds=time.time() - fold_started, train_images=int(len(fit_idx)),
                           val_images=int(len(val_idx)), val_auc=val_auc,
                           **{f"tau_{level}": points[level].tau for level in LEVELS},
                           **{f"temperature_{level}": points[level].temperature for level in LEVELS},
                           **{f"offset_{level}": points[level].offset for level in LEVELS},
                           temperature=points["image"].temperature,
                           temperatures_at_bound=[level for level in LEVELS
                                                  if temperature_at_bound(points[level].temperature)])
        if config.train.recipe == "patches":
            settings = _patch_settings(config)
            fold_result["val_patch_auc"] = patch_auc(model, variables, data.val, settings, seed=seed * 1000 + fold)
        folds.append(fold_result)
        if ensemble == 1:  # one network = one inference checkpoint; an ensemble's members are in networks/
            _save_fold_checkpoint(workdir.fold_checkpoint(fold), variables, config, fold, k, points,
                                  data.val, val_raw, train_records=data.train.records)
        margins = test_logits[:, 1] - test_logits[:, 0]
        single_margins = test_raw[:, 1] - test_raw[:, 0]
        image_probs = points["image"].probabilities(margins)
        for j, i in enumerate(test_idx):
            predictions.append({"fold": fold, "path": Path(records[i].path).name,
                                "patient_id": str(patients[i]), "laterality": lateralities[i] or "",
                                "label": int(labels[i]), "margin": float(margins[j]),
                                "probability": float(image_probs[j]), "tau_image": points["image"].tau,
                                "margin_single_breast": float(single_margins[j])})
        log(f"fold {fold + 1}: test AUC image {fold_result['image']['auc']:.3f}, "
            f"breast {fold_result['breast']['auc']:.3f}, patient {fold_result['patient']['auc']:.3f} "
            f"(inner val AUC {val_auc:.3f}); {fold_result['seconds']:.0f} s")

    n_boot = int(config.eval.bootstrap)
    result = {
        "dataset": config.data.dataset, "task": config.data.task, "folds": folds,
        "pooled": pool_folds(predictions, folds, config, n_boot=n_boot, seed=seed),
        "pooled_single_breast_auc": _image_auc_of_margins(predictions, "margin_single_breast"),
        "shortcuts": _shortcut_checks(fold_pairs, predictions, n_boot=n_boot, seed=seed),
        "settings": {"image_size": image_size_of(config.data.image_size), "recipe": config.train.recipe,
                     "epochs": int(config.train.epochs), "batch_size": int(config.train.batch_size),
                     "optim": config.optim.to_dict(), "model": config.model.name,
                     "head_pooling": config.model.head_pooling, "num_folds": k, "ensemble": ensemble,
                     "inner_val_fraction": float(config.data.val_fraction),
                     "tta_hflip": bool(config.eval.tta_hflip), "seed": seed,
                     "contralateral": weight, "scoring": config.eval.scoring,
                     "threshold_policy": config.eval.threshold_policy,
                     "patient_aggregate": config.eval.patient_aggregate,
                     **({"patch": vars(_patch_settings(config))} if config.train.recipe == "patches" else {})},
        "images": int(len(labels)), "patients": int(len(set(patients))),
        "wall_seconds": time.time() - started, "hardware": hardware_summary(),
    }
    write_outputs(workdir, result, predictions)
    return result


def _patch_settings(config):
    return PatchSettings.from_config(config.patch)


def _trained_network(directory: Path, config, data, *, fold: int, member: int, log) -> dict:
    """The variables of network ``member`` of ``fold``: its trainer's ``best/`` in ``directory``.

    The trainer resumes there: a finished network is read back (no step runs),
    a killed one continues from its latest checkpoint. Its seed differs per
    fold and member (member 0 keeps the seed single-network runs used), and
    its checkpoints also record which films it trains on, so a workdir of
    another configuration or split is refused, never reused or overwritten.
    The whole-image trainer's best epoch (by inner validation) is the one
    used; the patch trainer keeps its last.
    """

    network_config = config.copy_and_resolve_references()
    network_config.seed = int(config.seed) * 1000 + fold + 100 * member
    films = sorted(Path(r.path).name for r in data.train.records) + ["|"] + \
        sorted(Path(r.path).name for r in data.val.records)
    identity = {"cv.fold": fold, "cv.member": member,
                "cv.films_sha256": hashlib.sha256("\n".join(films).encode()).hexdigest()[:16]}
    summary = get_trainer(config.train.recipe)(network_config, directory, data=data, identity_extra=identity)
    if summary["trained_steps"] == 0:
        log(f"  fold {fold + 1} member {member + 1}: trained network read from {directory}")
    return load_checkpoint(summary["best_checkpoint"]).variables


def patch_auc(model, variables, cache, settings, *, seed: int) -> float:
    """Patch-level AUC: lesion patches vs random lesion-free breast patches of these films.

    A diagnostic of the patch trainer on inner-validation women: it separates
    "the patch classifier does not generalise" from "film-level pooling loses
    what it learned".
    """

    source = PatchSource(cache, settings)
    plan = plan_epoch(source, np.random.default_rng([seed, PURPOSE_PATCH_AUC]), mine=False)
    if len(set(plan.label.tolist())) < 2:
        return float("nan")
    patches = plan.batch(source, np.arange(len(plan)))["image"]
    return float(roc_auc(plan.label, Scorer(model, variables, FilmScoring()).patch_margins(patches)))


def contralateral_logits(logits: np.ndarray, patients, weight: float) -> np.ndarray:
    """Each film's lesion margin minus ``weight`` times that of the woman's other films.

    Why: radiologists read a breast against its partner (asymmetry is itself a
    finding). What a network scores high in *both* breasts of a woman (dense
    tissue, exposure) is her, not a lesion; 76 of mini-MIAS's 81 abnormal
    women have one normal breast. Returns two-class logits ``[0, margin]``; a
    film without a partner in ``patients`` keeps its own margin; weight 0
    returns the margins unchanged.
    """
    logits = np.asarray(logits, np.float64)
    margin = logits[:, 1] - logits[:, 0]
    patients = list(patients)
    adjusted = margin.copy()
    if weight:
        views: dict = {}
        for i, patient in enumerate(patients):
            views.setdefault(patient, []).append(i)
        for members in views.values():
            for i in members:
                others = [j for j in members if j != i]
                if others:
                    adjusted[i] = margin[i] - weight * np.mean(margin[others])
    return np.stack([np.zeros_like(adjusted), adjusted], axis=1)


def _image_auc(logits, labels) -> float:
    logits = np.asarray(logits)
    return float(roc_auc(labels, logits[:, 1] - logits[:, 0]))


def _image_auc_of_margins(predictions: list[dict], key: str) -> float:
    return float(roc_auc([p["label"] for p in predictions], [p[key] for p in predictions]))


def level_rows(margins, labels, patients, lateralities, points: dict, how: str) -> dict[str, dict]:
    """Per level: the groups' keys, labels, probabilities (at that level's calibration), women and calls."""

    logits = np.stack([np.zeros_like(margins), margins], axis=1)
    rows = {}
    for level in LEVELS:
        grouped = level_margins(logits, np.asarray(labels), list(patients), list(lateralities), level, how)
        probs = points[level].probabilities(grouped.scores)
        rows[level] = {"labels": np.asarray(grouped.labels), "probs": probs, "women": list(grouped.patients),
                       "calls": probs >= points[level].tau}
    return rows


def _level_metrics(labels, probs, calls, women, *, n_boot: int, seed: int) -> dict:
    labels = np.asarray(labels)
    metrics = {"auc": float(roc_auc(labels, probs)), **rates_from_counts(**confusion_counts(labels, calls))}
    ci = bootstrap_ci(labels, probs, list(women), n_resamples=n_boot, seed=seed)
    metrics.update(auc_low=ci["low"], auc_high=ci["high"], n=int(labels.size), n_pos=int(labels.sum()))
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in metrics.items()}


def score_fold(test_logits, test_labels, test_patients, test_lateralities, points: dict, config, *,
               seed: int) -> dict:
    """Each level's test metrics at the level's validation-chosen operating point."""
    margins = np.asarray(test_logits)[:, 1] - np.asarray(test_logits)[:, 0]
    rows = level_rows(margins, test_labels, [str(p) for p in test_patients], test_lateralities, points,
                      config.eval.patient_aggregate)
    return {level: _level_metrics(r["labels"], r["probs"], r["calls"], r["women"],
                                  n_boot=int(config.eval.bootstrap), seed=seed) for level, r in rows.items()}


def pool_folds(predictions: list[dict], folds: list[dict], config, *, n_boot: int, seed: int) -> dict:
    """Metrics over every fold's test predictions, each level at its own fold's operating point.

    Decisions are pooled as made (the level's probability against that fold's
    tau); the pooled AUC ranks calibrated probabilities of different fold
    models together. A woman is in one fold only, so her breasts and her own
    score come from one model.
    """

    pooled: dict[str, dict] = {level: {"labels": [], "probs": [], "calls": [], "women": []} for level in LEVELS}
    for fold in folds:
        part = [p for p in predictions if p["fold"] == fold["fold"]]
        if not part:
            continue
        points = {level: OperatingPoint(tau=fold[f"tau_{level}"], temperature=fold[f"temperature_{level}"],
                                        offset=fold.get(f"offset_{level}", 0.0))  # older runs: no offset
                  for level in LEVELS}
        rows = level_rows(np.array([p["margin"] for p in part]), [p["label"] for p in part],
                          [p["patient_id"] for p in part], [p["laterality"] or None for p in part], points,
                          config.eval.patient_aggregate)
        for level, r in rows.items():
            for key in pooled[level]:
                pooled[level][key].extend(list(r[key]))
    return {level: _level_metrics(np.array(r["labels"]), np.array(r["probs"]), np.array(r["calls"], bool),
                                  r["women"], n_boot=n_boot, seed=seed) for level, r in pooled.items()}


def _shortcut_checks(fold_pairs, predictions: list[dict], *, n_boot: int, seed: int) -> dict | None:
    """The metadata-only model (out of fold: fitted on each fold's training women) and within-machine AUCs.

    ``predictions`` are in the order of the folds' test records, as ``fold_pairs`` holds them.
    """

    tested = [record for _, test in fold_pairs for record in test]
    if not shortcuts.has_metadata(tested):
        return None
    metadata_scores = shortcuts.metadata_auc_cv(fold_pairs)
    return shortcuts.report_from_scores(tested, metadata_scores, np.array([p["probability"] for p in predictions]),
                                        n_boot=n_boot, seed=seed)


def _save_fold_checkpoint(directory: Path, variables: dict, config, fold: int, k: int, points: dict,
                          val_cache, val_logits: np.ndarray, *, train_records=()) -> None:
    """An inference checkpoint whose config names this fold (``eval --split val`` = its test women).

    ``tau``/``temperature`` are the CV's image-level ones (other-breast term
    included, when the config has one). ``operating_points`` (per level, read
    by ``mammojax eval``) are fitted on the inner-validation films scored one
    at a time (``val_logits``), as ``eval`` scores them: it has no other-breast term.
    """

    fold_config = config.copy_and_resolve_references()
    fold_config.data.num_folds = k
    fold_config.data.fold = fold
    records = list(val_cache.records)
    single = fit_from_config(val_logits, np.asarray(val_cache.labels), [r.patient_id for r in records],
                             [r.laterality for r in records], config)
    extra = {"cv": {"fold": fold, "tau_patient": points["patient"].tau, "tau_breast": points["breast"].tau},
             "operating_points": to_meta(single),
             **shortcuts.checkpoint_entry(train_records, seed=int(config.seed))}
    # make_meta stores the config's film scoring: tau was fitted on films scored that way.
    save_checkpoint(directory, variables, make_meta(fold_config, tau=points["image"].tau,
                                                    temperature=points["image"].temperature, extra=extra),
                    overwrite=True)


# ---------------------------------------------------------------------------
# Report


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.{digits}f}"


def _auc_cell(level: dict) -> str:
    return f"{_fmt(level['auc'])} ({_fmt(level['auc_low'], 2)}-{_fmt(level['auc_high'], 2)})"


def render_table(result: dict) -> str:
    """The Markdown summary: a row per fold and a pooled row, image, breast and patient level; shortcut checks."""
    header = "| fold | test images (pos.) | " + " | ".join(
        f"{level} AUC (95% CI) | {level} sens | {level} spec" for level in LEVELS) + " |"
    lines = [header, "|" + "---|" * (2 + 3 * len(LEVELS))]
    rows = [(f"{f['fold'] + 1}", f) for f in result["folds"]]
    rows.append(("**pooled**", result["pooled"]))
    for name, levels in rows:
        image = levels["image"]
        cells = " | ".join(f"{_auc_cell(levels[level])} | {_fmt(levels[level]['sensitivity'], 2)} | "
                           f"{_fmt(levels[level]['specificity'], 2)}" for level in LEVELS)
        lines.append(f"| {name} | {image['n']} ({image['n_pos']}) | {cells} |")
    hw, s = result["hardware"], result["settings"]
    trained = (f"trained on {s['patch']['size']} px lesion patches" if s.get("recipe") == "patches"
               else "trained on whole films")
    lines += ["", f"{result.get('dataset', 'mias')} ({result['task']}), {result['images']} images / "
                  f"{result['patients']} women, {s['num_folds']}-fold patient-wise stratified CV; {s['model']} "
                  f"({s['head_pooling']} pooling"
                  f"{', ' + str(s['ensemble']) + ' networks per fold' if s.get('ensemble', 1) > 1 else ''}) {trained} "
                  f"at {s['image_size']} px input, {s['epochs']} epochs, scored by {s.get('scoring', 'whole')}"
                  f"{' minus the other breast' if s.get('contralateral') else ''}; per level, thresholds "
                  f"({s.get('threshold_policy', 'youden')}) and temperature from an inner validation split of the "
                  f"training women; breast and patient scores: {s.get('patient_aggregate', 'max')} over views. "
                  f"95% CI: bootstrap over women. "
                  f"Wall time {result['wall_seconds'] / 60:.1f} min on {hw['cores']} cores of {hw['cpu']}."]
    if all("val_patch_auc" in f for f in result["folds"]):
        lines.append("")
        lines.append("Diagnostics on the inner-validation women of each fold: patch-level AUC (lesion vs "
                     "lesion-free breast patches) " + ", ".join(_fmt(f["val_patch_auc"]) for f in result["folds"])
                     + f"; pooled film AUC without the other-breast comparison "
                       f"{_fmt(result.get('pooled_single_breast_auc'))}.")
    at_bound = [f"fold {f['fold'] + 1}: " + bound_warning(level, f[f"temperature_{level}"])
                for f in result["folds"] for level in LEVELS if temperature_at_bound(f[f"temperature_{level}"])]
    if at_bound:
        lines += ["", "Warning: " + "; ".join(at_bound) + "."]
    if result.get("shortcuts"):
        lines += ["", shortcuts.render_shortcuts(result["shortcuts"])]
    return "\n".join(lines) + "\n"


def plot_roc(result: dict, predictions: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    for fold in result["folds"]:
        part = [p for p in predictions if p["fold"] == fold["fold"]]
        curve = roc_curve([p["label"] for p in part], [p["probability"] for p in part])
        ax.plot(curve["fpr"], curve["tpr"], lw=1, alpha=0.5, label=f"fold {fold['fold'] + 1} ({_fmt(fold['image']['auc'])})")
    curve = roc_curve([p["label"] for p in predictions], [p["probability"] for p in predictions])
    ax.plot(curve["fpr"], curve["tpr"], lw=2.5, color="black",
            label=f"pooled ({_fmt(result['pooled']['image']['auc'])})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1),
           title=f"{result.get('dataset', '')}, image level, cross-validation")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(workdir, result: dict, predictions: list[dict]) -> None:
    """The report files in ``workdir`` (a :class:`mammojax.workdir.Workdir`)."""

    root = workdir.root
    write_json(root / CV_RESULTS, result, indent=1)
    (root / CV_TABLE).write_text(render_table(result))
    with open(root / CV_PREDICTIONS, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(predictions[0]))
        writer.writeheader()
        writer.writerows(predictions)
    plot_roc(result, predictions, root / CV_ROC)
