"""`mammojax eval`: metrics with confidence intervals and a report for a checkpoint.

A thin layer over :func:`mammojax.evaluation.evaluate.evaluate_checkpoint`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from mammojax.cli.outcome import EXIT_STATUS_HELP

_POLICIES = ("fixed", "youden", "sensitivity", "specificity")


@click.command("eval", epilog=EXIT_STATUS_HELP)
@click.option("--checkpoint", required=True, type=click.Path(),
              help="Checkpoint directory or training workdir (its best/ is used).")
@click.option("--dataset", required=True, help="Dataset name (mias, inbreast, synthetic, ...).")
@click.option("--data-dir", default="", help="Dataset root directory.")
@click.option("--prepared", default=None, type=click.Path(file_okay=False),
              help="A prepared dataset (mammojax data prepare --out DIR) to read instead of --data-dir; "
                   "default: the dataset is prepared once into the user cache.")
@click.option("--task", default=None, help="Label definition; default: the checkpoint's own task.")
@click.option("--split", type=click.Choice(["all", "train", "val", "test"]), default="test",
              show_default=True, help="Which patients to evaluate (the checkpoint's split settings).")
@click.option("--seed", type=int, default=None,
              help="Bootstrap seed (default: the checkpoint's). On the dataset the checkpoint trained on, the "
                   "split always comes from the checkpoint's own seed, so no training woman enters the test "
                   "split; on another dataset this seed also draws the split.")
@click.option("--tta-hflip", is_flag=True, default=None,
              help="Average over the image and its mirror (default: the checkpoint's eval.tta_hflip).")
@click.option("--threshold-policy", type=click.Choice(_POLICIES), default=None,
              help="Recompute tau on the evaluated data (optimistic; flagged in the report). "
                   "Default: the checkpoint's tau, chosen on validation data.")
@click.option("--target", type=float, default=None,
              help="Target sensitivity/specificity for those policies.")
@click.option("--bootstrap", "n_bootstrap", type=click.IntRange(0, 100_000), default=None,
              help="Bootstrap resamples for the AUC CI (default: the checkpoint's eval.bootstrap).")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=None)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output directory for metrics.json, scores.csv, report.html/.md. Default: "
                   "beside the model, WORKDIR/eval-<dataset>-<split> for a training workdir "
                   "(or its best/), else CHECKPOINT/eval-<dataset>-<split>.")
@click.option("--overwrite", is_flag=True, help="Replace the results already in the output directory.")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json to stdout.")
def eval_(checkpoint, dataset, data_dir, prepared, task, split, seed, tta_hflip, threshold_policy, target,
          n_bootstrap, batch_size, out_dir, overwrite, as_json):
    """Evaluate a checkpoint on a dataset split: AUC with a patient-bootstrap CI,
    sensitivity/specificity/PPV/NPV/F1 at image, breast and patient level,
    calibration, and a self-contained HTML + Markdown report. Unreadable images
    are skipped, named on stderr and counted in the report. scores.csv columns:
    path, patient_id, laterality, truth (the dataset's class), probability (of
    the positive class), decision (the class called at tau); classes by name."""
    from mammojax import runtime
    from mammojax.cli import outcome

    # Cheap checks first, before JAX loads.
    out_dir = Path(out_dir) if out_dir else default_out_dir(checkpoint, dataset, split)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        from mammojax.errors import MammojaxError

        raise MammojaxError(f"{out_dir}: already holds results; pass --overwrite to replace them "
                            "or --out to write elsewhere")
    runtime.setup()
    from mammojax.evaluation.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(checkpoint, dataset, data_dir, prepared=prepared, task=task, split=split,
                                 seed=seed,
                                 tta_hflip=tta_hflip, out_dir=out_dir,
                                 threshold_policy=threshold_policy, target=target,
                                 batch_size=batch_size, n_bootstrap=n_bootstrap,
                                 progress=not as_json)
    for warning in result["warnings"]:
        click.echo(f"mammojax: warning: {warning}", err=True)
    for skipped in result["excluded"]:
        outcome.report_skipped(skipped["path"], skipped["reason"])
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _print_summary(result, out_dir)
    outcome.finish(result["n_images"], result["n_excluded"])


def default_out_dir(checkpoint, dataset: str, split: str) -> Path:
    """``eval-<dataset>-<split>`` beside the model, never in the current folder.

    A training workdir (given as such or as its ``best/``) holds it; any
    other checkpoint holds it in its own directory.
    """
    from mammojax.checkpoint import resolve_checkpoint_dir

    directory = resolve_checkpoint_dir(checkpoint).absolute()
    home = directory.parent if directory.name == "best" else directory
    return home / f"eval-{dataset}-{split}"


def _print_summary(result: dict, out_dir) -> None:
    levels = result["levels"]
    for name in ("image", "breast", "patient"):
        m, ci = levels[name], levels[name]["auc_ci"]
        click.echo(f"{name:>8}: AUC {_f(m['auc'])} [{_f(ci['low'])}, {_f(ci['high'])}]  "
                   f"sens {_f(m['sensitivity'])}  spec {_f(m['specificity'])}  "
                   f"n={m['n']} pos={m['n_pos']}")
    if result["tau_optimistic"]:
        click.echo("note: tau was chosen on the evaluated data: thresholded metrics are optimistic",
                   err=True)
    click.echo(f"report: {out_dir}/report.html", err=True)


def _f(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
