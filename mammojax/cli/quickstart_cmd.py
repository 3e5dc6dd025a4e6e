"""`mammojax quickstart`: the embedded end-to-end run, no dataset needed."""

from __future__ import annotations

import json

import click


@click.command("quickstart", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@click.option("--workdir", type=click.Path(file_okay=False), default="runs/quickstart", show_default=True,
              help="Everything is written here; rerunning resumes.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def quickstart(ctx, workdir, as_json):
    """Train the 1-channel ResNet-18 on synthetic phantoms, evaluate it on held-out
    women and write Grad-CAM overlays. Config overrides: --config.KEY=VALUE."""
    from mammojax.errors import ConfigError

    for arg in ctx.args:
        if not arg.startswith("--config."):
            raise ConfigError(f"unexpected argument {arg!r}; config overrides look like --config.KEY=VALUE")
    from mammojax.quickstart import run_quickstart

    summary = run_quickstart(workdir, overrides=ctx.args, echo=lambda m: click.echo(m, err=True))
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"
    ci = summary["test_auc_ci"] or {}
    click.echo(f"validation AUC (best epoch {summary['best_epoch']}): {fmt(summary['val_auc'])}")
    click.echo(f"test AUC: {fmt(summary['test_auc'])}  95% CI {fmt(ci.get('low'))}-{fmt(ci.get('high'))}"
               f"  sensitivity {fmt(summary['test_sensitivity'])}  specificity {fmt(summary['test_specificity'])}"
               f"  (tau {fmt(summary['tau'])})")
    click.echo(f"Grad-CAM mass inside the lesion {fmt(summary['cam_mass_inside'])} "
               f"(a uniform map: {fmt(summary['lesion_area_share'])}); pointing game "
               f"{fmt(summary['pointing_game'])} (chance {fmt(summary['pointing_chance'])}); "
               "see the table above")
    click.echo(f"report: {summary['report']}\noverlays: {summary['overlays']}\n"
               f"training curves: {summary['training_curves']}")
