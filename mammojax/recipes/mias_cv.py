"""Patient-wise k-fold cross-validation of a patch-trainer config (``mammojax cv``, configs/mias.py).

For each fold the held-out women are the *test* set and are touched only to be
scored. The remaining women are split again, patient-wise, into an inner
training part and an inner validation part that fixes the temperature and the
decision thresholds (image level, and patient level on the max over a woman's
views). No fold's test images influence any choice.

Each fold's network (``cv.ensemble`` of them, seeds differ) is trained by the
patch trainer of the core loop (:func:`mammojax.train.patch_trainer.train`) in
its own training workdir ``networks/fold<k>-member<m>/``: a killed CV resumes
inside the network it was training, a rerun reads finished networks back, and
a larger ``cv.ensemble`` adds members to those already trained.

Results pool the folds' test predictions (every woman scored exactly once, by
the model that never saw her): AUC with a 95% bootstrap interval that resamples
women, and sensitivity/specificity at each fold's validation-chosen threshold.
Outputs in ``workdir`` (names in :mod:`mammojax.workdir`): ``results.json``,
``table.md``, ``roc.png``, ``predictions.csv`` and one inference checkpoint per
fold (``fold<k>/``), whose metadata names the fold so ``mammojax eval --split
val`` re-scores its test women.
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

from mammojax.checkpoint import make_meta, save_checkpoint
from mammojax.data.preprocess import image_size_of
from mammojax.data.splits import check_no_leakage, kfold_patients, split_patients
from mammojax.errors import MammojaxError
from mammojax.evaluation.aggregate import aggregate
from mammojax.evaluation.bootstrap import bootstrap_ci
from mammojax.evaluation.calibration import fit_temperature, probabilities
from mammojax.evaluation.metrics import classification_metrics, confusion_counts, rates_from_counts, roc_auc, roc_curve
from mammojax.evaluation.operating_points import fit_from_config, to_meta
from mammojax.evaluation.thresholds import choose_threshold
from mammojax.jsonio import write_json
from mammojax.scoring import FilmScoring, Scorer
from mammojax.train import patch_trainer
from mammojax.train.data import TrainingData, adopt_prepared_options, prepared_dataset
from mammojax.train.loop import host_variables
from mammojax.train.patches import PatchSettings, PatchSource, plan_epoch
from mammojax.train.validation import validation_logits
from mammojax.workdir import CV_PREDICTIONS, CV_RESULTS, CV_ROC, CV_TABLE, Workdir

PURPOSE_INNER_SPLIT = 303
PURPOSE_PATCH_AUC = 304


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


def run_mias_cv(config, workdir: str | os.PathLike, *, log: Callable[[str], None] = print) -> dict:
    """Runs the k-fold CV of ``config`` on its dataset (``data.dataset``, ``data.data_dir``) and writes the report.

    ``config.cv.num_folds`` folds (>= 2), inner validation share
    ``config.data.val_fraction``. Returns the dict written to ``results.json``.
    """
    from mammojax.models import create_model  # the zoo imports JAX and flax at the top

    started = time.time()
    workdir = Workdir(workdir)
    if config.train.recipe != "patches":
        raise MammojaxError(f"cross-validation trains the patch recipe; train.recipe is {config.train.recipe!r}")
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
    # Decoding and resizing learn nothing from labels: one prepared dataset serves every fold.
    cache = prepared_dataset(config, progress=False)
    labels = np.asarray(cache.labels)
    position = {record.path: i for i, record in enumerate(cache.records)}
    patients = np.asarray(cache.patient_ids)
    settings = PatchSettings.from_config(config.patch)
    log(f"{config.data.dataset}: {len(labels)} images, {len(set(patients))} women, {int(labels.sum())} abnormal; "
        f"{k} folds, input {config.data.image_size} px, patches {settings.size} px")

    model = create_model(config.model.name, num_classes=int(config.model.num_classes),
                         head_pooling=config.model.head_pooling, dtype=config.model.dtype)
    folds = []
    predictions = []
    for fold, (train_records, test_records) in enumerate(kfold_patients(list(cache.records), k=k, seed=seed)):
        fold_started = time.time()
        inner = split_patients(train_records, val_fraction=float(config.data.val_fraction), test_fraction=0.0,
                               seed=seed * 1000 + PURPOSE_INNER_SPLIT + fold)
        # Guard, not hope: the women who fix tau/temperature are none of the test women.
        check_no_leakage({"inner train": inner["train"], "inner val": inner["val"], "test": test_records})
        fit_idx = np.array([position[r.path] for r in inner["train"]])
        val_idx = np.array([position[r.path] for r in inner["val"]])
        test_idx = np.array([position[r.path] for r in test_records])
        log(f"fold {fold + 1}/{k}: train {len(fit_idx)} images, inner val {len(val_idx)}, test {len(test_idx)}")
        data = TrainingData(train=cache.subset(fit_idx), val=cache.subset(val_idx))
        members = []
        for member in range(ensemble):
            members.append(_trained_network(workdir.network(fold, member), config, data, fold=fold,
                                            member=member, log=log))
        variables = members if ensemble > 1 else members[0]
        val_patch_auc = patch_auc(model, variables, data.val, settings, seed=seed * 1000 + fold)
        weight = float(config.eval.contralateral)
        # Films scored by the one scorer, as each fold checkpoint's eval will score them.
        val_raw = validation_logits(model, variables, data.val, config, batch_size=64)[0]
        test_raw = validation_logits(model, variables, cache.subset(test_idx), config, batch_size=64)[0]
        val_logits = contralateral_logits(val_raw, patients[val_idx], weight)
        test_logits = contralateral_logits(test_raw, patients[test_idx], weight)
        operating = choose_operating_point(val_logits, labels[val_idx], patients[val_idx], config)
        # The same network without the other-breast comparison, for the ablation row.
        single = choose_operating_point(val_raw, labels[val_idx], patients[val_idx], config)
        fold_result = score_fold(test_logits, labels[test_idx], patients[test_idx], operating,
                                 n_boot=int(config.eval.bootstrap), seed=seed)
        fold_result.update(fold=fold, seconds=time.time() - fold_started, train_images=int(len(fit_idx)),
                           val_images=int(len(val_idx)), val_auc=operating["val_auc"], val_patch_auc=val_patch_auc, **{
                               k_: operating[k_] for k_ in ("tau_image", "tau_patient", "temperature")})
        folds.append(fold_result)
        if ensemble == 1:  # one network = one inference checkpoint; an ensemble's members are in networks/
            _save_fold_checkpoint(workdir.fold_checkpoint(fold), variables, config, fold, k, operating,
                                  data.val, val_raw)
        probs = probabilities(test_logits, operating["temperature"])
        probs_single = probabilities(test_raw, single["temperature"])
        for j, i in enumerate(test_idx):
            predictions.append({"fold": fold, "path": Path(cache.records[i].path).name,
                                "patient_id": patients[i], "label": int(labels[i]),
                                "probability": float(probs[j]), "tau_image": operating["tau_image"],
                                "tau_patient": operating["tau_patient"],
                                "probability_single_breast": float(probs_single[j])})
        log(f"fold {fold + 1}: test AUC image {fold_result['image']['auc']:.3f}, "
            f"patient {fold_result['patient']['auc']:.3f} (inner val AUC {operating['val_auc']:.3f}); "
            f"inner val patch AUC {val_patch_auc:.3f}; {fold_result['seconds']:.0f} s")

    result = {
        "task": config.data.task, "folds": folds, "pooled": pool_folds(predictions, int(config.eval.bootstrap), seed),
        "pooled_single_breast_auc": _single_breast_auc(predictions),
        "settings": {"image_size": image_size_of(config.data.image_size),
                     "patch": {**vars(settings), "epochs": int(config.train.epochs),
                               "batch_size": int(config.train.batch_size)},
                     "optim": config.optim.to_dict(), "model": config.model.name,
                     "head_pooling": config.model.head_pooling, "num_folds": k, "ensemble": ensemble,
                     "inner_val_fraction": float(config.data.val_fraction),
                     "tta_hflip": bool(config.eval.tta_hflip), "seed": seed,
                     "contralateral": float(config.eval.contralateral), "scoring": config.eval.scoring,
                     "threshold_policy": config.eval.threshold_policy},
        "images": int(len(labels)), "patients": int(len(set(patients))),
        "wall_seconds": time.time() - started, "hardware": hardware_summary(),
    }
    write_outputs(workdir, result, predictions)
    return result


def _trained_network(directory: Path, config, data, *, fold: int, member: int, log) -> dict:
    """The variables of network ``member`` of ``fold``, trained by the patch trainer in ``directory``.

    The trainer resumes there: a finished network is read back (no step runs),
    a killed one continues from its latest checkpoint. Its seed differs per
    fold and member (member 0 keeps the seed single-network runs used), and
    its checkpoints also record which films it trains on, so a workdir of
    another configuration or split is refused, never reused or overwritten.
    """
    network_config = config.copy_and_resolve_references()
    network_config.seed = int(config.seed) * 1000 + fold + 100 * member
    films = sorted(Path(r.path).name for r in data.train.records) + ["|"] + \
        sorted(Path(r.path).name for r in data.val.records)
    identity = {"cv.fold": fold, "cv.member": member,
                "cv.films_sha256": hashlib.sha256("\n".join(films).encode()).hexdigest()[:16]}
    summary = patch_trainer.train(network_config, directory, data=data, identity_extra=identity)
    if summary["trained_steps"] == 0:
        log(f"  fold {fold + 1} member {member + 1}: trained network read from {directory}")
    return host_variables(summary["state"])


def patch_auc(model, variables, cache, settings, *, seed: int) -> float:
    """Patch-level AUC: lesion patches vs random lesion-free breast patches of these films.

    A diagnostic on inner-validation women: it separates "the patch classifier
    does not generalise" from "film-level pooling loses what it learned".
    """
    source = PatchSource(cache, settings)
    plan = plan_epoch(source, np.random.default_rng([seed, PURPOSE_PATCH_AUC]), mine=False)
    if len(set(plan.label.tolist())) < 2:
        return float("nan")
    patches = plan.batch(source, np.arange(len(plan)))["image"]
    return float(roc_auc(plan.label, Scorer(model, variables, FilmScoring()).patch_margins(patches)))


def contralateral_logits(logits: np.ndarray, patients, weight: float) -> np.ndarray:
    """Each film's lesion margin minus ``weight`` times that of the woman's other film.

    Why: radiologists read a breast against its partner (asymmetry is itself a
    finding). What the patch network scores high in *both* breasts of a woman
    (dense tissue, exposure) is her, not a lesion; 76 of mini-MIAS's 81
    abnormal women have one normal breast. Returns two-class logits
    ``[0, margin]``; a film without a partner in ``patients`` keeps its own margin.
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


def _single_breast_auc(predictions: list[dict]) -> float:
    return float(roc_auc([p["label"] for p in predictions], [p["probability_single_breast"] for p in predictions]))


def _by_patient(labels, scores, patients):
    """Per-woman labels and scores (max over her views): :mod:`mammojax.evaluation.aggregate`."""
    patients = [str(p) for p in patients]
    grouped = aggregate(labels, scores, patients, patients, "max")
    return grouped.labels, grouped.scores, grouped.keys


def choose_operating_point(val_logits: np.ndarray, val_labels: np.ndarray, val_patients, config) -> dict:
    """Temperature (image NLL) and thresholds (config policy) from inner-validation data only."""
    temperature = fit_temperature(val_logits, val_labels) if config.eval.calibrate else 1.0
    probs = probabilities(val_logits, temperature)
    policy = dict(policy=config.eval.threshold_policy, tau=float(config.eval.tau), target=float(config.eval.target))
    tau_image = choose_threshold(val_labels, probs, policy.pop("policy"), **policy)
    y_pat, s_pat, _ = _by_patient(val_labels, probs, val_patients)
    tau_patient = choose_threshold(y_pat, s_pat, config.eval.threshold_policy, tau=float(config.eval.tau),
                                   target=float(config.eval.target))
    return {"temperature": float(temperature), "tau_image": float(tau_image), "tau_patient": float(tau_patient),
            "val_auc": float(roc_auc(val_labels, probs))}


def _level_metrics(labels, scores, groups, tau: float, n_boot: int, seed: int) -> dict:
    metrics = classification_metrics(labels, scores, tau)
    ci = bootstrap_ci(labels, scores, groups, n_resamples=n_boot, seed=seed)
    metrics.update(auc_low=ci["low"], auc_high=ci["high"])
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in metrics.items()}


def score_fold(test_logits, test_labels, test_patients, operating: dict, *, n_boot: int, seed: int) -> dict:
    """Image- and patient-level test metrics at the validation-chosen thresholds."""
    probs = probabilities(test_logits, operating["temperature"])
    y_pat, s_pat, _ = _by_patient(test_labels, probs, test_patients)
    return {"image": _level_metrics(test_labels, probs, list(test_patients), operating["tau_image"], n_boot, seed),
            "patient": _level_metrics(y_pat, s_pat, None, operating["tau_patient"], n_boot, seed)}


def pool_folds(predictions: list[dict], n_boot: int, seed: int) -> dict:
    """Metrics over every fold's test predictions, each at its own fold's thresholds.

    Decisions are pooled as made (``probability >= tau`` of that fold); the
    pooled AUC ranks calibrated probabilities of different fold models together.
    """
    labels = np.array([p["label"] for p in predictions])
    probs = np.array([p["probability"] for p in predictions])
    patients = [p["patient_id"] for p in predictions]
    calls = probs >= np.array([p["tau_image"] for p in predictions])
    image = {"auc": float(roc_auc(labels, probs)), **rates_from_counts(**confusion_counts(labels, calls))}
    ci = bootstrap_ci(labels, probs, patients, n_resamples=n_boot, seed=seed)
    image.update(auc_low=ci["low"], auc_high=ci["high"], n=int(labels.size), n_pos=int(labels.sum()))

    tau_patient = {p["patient_id"]: p["tau_patient"] for p in predictions}
    y_pat, s_pat, ids = _by_patient(labels, probs, patients)
    pat_calls = s_pat >= np.array([tau_patient[i] for i in ids])
    patient = {"auc": float(roc_auc(y_pat, s_pat)), **rates_from_counts(**confusion_counts(y_pat, pat_calls))}
    ci = bootstrap_ci(y_pat, s_pat, None, n_resamples=n_boot, seed=seed)
    patient.update(auc_low=ci["low"], auc_high=ci["high"], n=int(y_pat.size), n_pos=int(y_pat.sum()))
    return {"image": image, "patient": patient}


def _save_fold_checkpoint(directory: Path, variables: dict, config, fold: int, k: int, operating: dict,
                          val_cache, val_logits: np.ndarray) -> None:
    """An inference checkpoint whose config names this fold (``eval --split val`` = its test women).

    ``tau``/``temperature`` are the CV's image-level ones (other-breast term
    included). ``operating_points`` (per level, read by ``mammojax eval``) are
    fitted on the inner-validation films scored one at a time (``val_logits``),
    as ``eval`` scores them: it has no other-breast term.
    """
    fold_config = config.copy_and_resolve_references()
    fold_config.data.num_folds = k
    fold_config.data.fold = fold
    # make_meta stores the config's film scoring: tau was fitted on films scored that way.
    records = list(val_cache.records)
    points = fit_from_config(val_logits, np.asarray(val_cache.labels), [r.patient_id for r in records],
                             [r.laterality for r in records], config)
    extra = {"cv": {"fold": fold, "tau_patient": operating["tau_patient"], "inner_val_auc": operating["val_auc"]},
             "operating_points": to_meta(points)}
    save_checkpoint(directory, variables, make_meta(fold_config, tau=operating["tau_image"],
                                                    temperature=operating["temperature"], extra=extra),
                    overwrite=True)


# ---------------------------------------------------------------------------
# Report


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.{digits}f}"


def _auc_cell(level: dict) -> str:
    return f"{_fmt(level['auc'])} ({_fmt(level['auc_low'], 2)}-{_fmt(level['auc_high'], 2)})"


def render_table(result: dict) -> str:
    """The Markdown table: one row per fold and a pooled row, image and patient level."""
    header = ("| fold | test images (abn.) | image AUC (95% CI) | image sens | image spec | "
              "patient AUC (95% CI) | patient sens | patient spec |")
    lines = [header, "|" + "---|" * 8]
    rows = [(f"{f['fold'] + 1}", f["image"], f["patient"]) for f in result["folds"]]
    rows.append(("**pooled**", result["pooled"]["image"], result["pooled"]["patient"]))
    for name, image, patient in rows:
        lines.append(f"| {name} | {image['n']} ({image['n_pos']}) | {_auc_cell(image)} | "
                     f"{_fmt(image['sensitivity'], 2)} | {_fmt(image['specificity'], 2)} | {_auc_cell(patient)} | "
                     f"{_fmt(patient['sensitivity'], 2)} | {_fmt(patient['specificity'], 2)} |")
    hw, s = result["hardware"], result["settings"]
    lines += ["", f"mini-MIAS {result['task']} vs normal, {result['images']} images / {result['patients']} women, "
                  f"{s['num_folds']}-fold patient-wise CV; {s['model']} ({s['head_pooling']} pooling"
                  f"{', ' + str(s['ensemble']) + ' networks per fold' if s.get('ensemble', 1) > 1 else ''}) trained on "
                  f"{s['patch']['size']} px lesion patches at {s['image_size']} px input, "
                  f"{s['patch']['epochs']} epochs, scored by {s.get('scoring', 'whole')}"
                  f"{' minus the other breast' if s.get('contralateral') else ''}; thresholds ({s.get('threshold_policy', 'youden')}) and temperature from an inner "
                  f"validation split of the training women. 95% CI: bootstrap over women. "
                  f"Wall time {result['wall_seconds'] / 60:.1f} min on {hw['cores']} cores of {hw['cpu']}."]
    if all("val_patch_auc" in f for f in result["folds"]):
        lines.append("")
        lines.append("Diagnostics on the inner-validation women of each fold: patch-level AUC (lesion vs "
                     "lesion-free breast patches) " + ", ".join(_fmt(f["val_patch_auc"]) for f in result["folds"])
                     + f"; pooled film AUC without the other-breast comparison "
                       f"{_fmt(result.get('pooled_single_breast_auc'))}.")
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
           title="mini-MIAS, image level, cross-validation")
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


__all__ = ["run_mias_cv", "contralateral_logits", "choose_operating_point", "score_fold", "pool_folds", "render_table",
           "hardware_summary"]
