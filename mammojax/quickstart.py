"""The embedded end-to-end run: phantoms -> train -> evaluate -> Grad-CAM.

`mammojax quickstart` (and ``scripts/quickstart.sh``) call :func:`run_quickstart`,
which needs no dataset: it trains the paper's 1-channel ResNet-18 on seeded
synthetic mammogram phantoms (``configs/quickstart.py``), evaluates the best
checkpoint on held-out women, writes Grad-CAM overlays for a few test images
and scores how well the heatmaps point at the known lesions. Every step is
the same library call the individual commands make, and a rerun resumes.
"""

from __future__ import annotations

import json
from pathlib import Path

from mammojax import runtime
from mammojax.checkpoint import load_checkpoint
from mammojax.config import apply_override, quickstart_config
from mammojax.data.records import load_dataset
from mammojax.evaluation.evaluate import dataset_options_for, evaluate_checkpoint, select_split
from mammojax.explain import explain as explain_lib
from mammojax.train.config_check import validate_config
from mammojax.train.trainers import train_and_evaluate
from mammojax.workdir import QUICKSTART_EVAL, QUICKSTART_EXPLAIN, QUICKSTART_SUMMARY, QUICKSTART_TRAIN, Workdir

EXPLAIN_PER_CLASS = 4  # overlays written per class, for a quick look


def run_quickstart(workdir: str | Path, *, overrides=(), echo=print) -> dict:
    """Runs the whole pipeline in ``workdir``; returns the summary it prints."""
    runtime.setup()
    workdir = Path(workdir).absolute()
    train_dir = workdir / QUICKSTART_TRAIN
    config = quickstart_config()
    for item in overrides:
        apply_override(config, item)
    validate_config(config)  # before any data is read or the workdir exists

    echo(f"[1/3] training {config.model.name} on {config.data.synthetic_count} synthetic phantoms "
         f"({config.data.image_size} px, {config.train.epochs} epochs) in {train_dir}")
    trained = train_and_evaluate(config, train_dir)

    echo("[2/3] evaluating the best checkpoint on the held-out test women")
    evaluation = evaluate_checkpoint(train_dir, "synthetic", "", split="test",
                                     out_dir=workdir / QUICKSTART_EVAL)

    echo(f"[3/3] Grad-CAM ({config.explain.method}, {config.explain.layer}) on the test phantoms")
    ckpt = load_checkpoint(train_dir)
    data_dir, options = dataset_options_for("synthetic", "", ckpt, ckpt.meta["config"], int(config.seed))
    records = select_split(load_dataset("synthetic", data_dir, **options).records,
                           ckpt.meta["config"], "test", int(config.seed))
    explainer = explain_lib.Explainer(ckpt)  # the checkpoint's heatmap: config.explain
    out_dir = workdir / QUICKSTART_EXPLAIN
    out_dir.mkdir(parents=True, exist_ok=True)
    shown = ([r for r in records if r.label == 1][:EXPLAIN_PER_CLASS]
             + [r for r in records if r.label == 0][:EXPLAIN_PER_CLASS])
    stems = explain_lib.output_stems([r.path for r in shown])
    with open(out_dir / "explanations.jsonl", "w") as lines:
        for record, stem in zip(shown, stems):
            explanation = explainer.explain_path(record.path, laterality=record.laterality)
            line = explain_lib.write_explanation(explanation, out_dir, stem, lesions=record.lesions)
            lines.write(explain_lib.dumps_line(line) + "\n")
    localization = explain_lib.evaluate_localization(ckpt, records, explainer=explainer,
                                                     seed=int(config.seed))
    (out_dir / "localization.json").write_text(
        explain_lib.dumps_line(localization["summary"]))

    image, patient = evaluation["levels"]["image"], evaluation["levels"]["patient"]
    summary = {
        "workdir": str(workdir),
        "best_epoch": trained["best_epoch"],
        "val_auc": trained["best_metrics"].get("auc"),
        "test_auc": image.get("auc"),
        "test_auc_ci": image.get("auc_ci"),
        "test_sensitivity": image.get("sensitivity"),
        "test_specificity": image.get("specificity"),
        "test_patient_sensitivity": patient.get("sensitivity"),
        "test_patient_specificity": patient.get("specificity"),
        "tau": evaluation.get("tau"),
        # Each localization measure beside what a heatmap that knows nothing scores.
        "cam_mass_inside": localization["summary"].get("mass_inside"),
        "lesion_area_share": localization["summary"].get("lesion_area_share"),
        "pointing_game": localization["summary"].get("pointing_game"),
        "pointing_chance": localization["summary"].get("pointing_chance"),
        "localization_skipped": localization["summary"].get("skipped_reasons"),
        "report": str(workdir / QUICKSTART_EVAL / "report.html"),
        "overlays": str(out_dir),
        "training_curves": str(Workdir(train_dir).curves),
    }
    (workdir / QUICKSTART_SUMMARY).write_text(json.dumps(summary, indent=2, default=str))
    echo(explain_lib.format_localization_table(localization["summary"]))
    return summary
