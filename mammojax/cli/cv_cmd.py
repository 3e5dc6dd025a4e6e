"""``mammojax cv``: a thin wrapper over :func:`mammojax.train.cross_validation.run_cv`."""

from __future__ import annotations

import click

from mammojax.cli.train_cmd import load_run_config


@click.command("cv", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), required=True,
              help="Config file with get_config(), e.g. configs/rsna.py or configs/mias.py.")
@click.option("--data-dir", default=None, metavar="PATH",
              help="Dataset folder or archive (sets data.data_dir; e.g. all-mias-dev.tar.gz).")
@click.option("--workdir", type=click.Path(file_okay=False), required=True,
              help="Networks, fold checkpoints and the report go here; rerun to resume.")
@click.pass_context
def cv(ctx, config_path, data_dir, workdir):
    """Patient-wise, label-stratified k-fold cross-validation of any config.

    Trains cv.num_folds x cv.ensemble networks with the config's trainer
    (train.recipe: whole_image or patches), scores each fold's test women
    with the networks that never saw them, and writes table.md, results.json,
    predictions.csv and roc.png to WORKDIR. Override any config field with
    --config.KEY=VALUE, e.g. --config.cv.num_folds=3. A killed run resumes
    where it stopped when the same command is run again.
    """
    # --data-dir is one more override, so the config is checked with it in place.
    overrides = [*ctx.args, *([f"--config.data.data_dir={data_dir}"] if data_dir is not None else [])]
    config = load_run_config(config_path, overrides)

    from mammojax import runtime

    runtime.setup()
    from mammojax.train.cross_validation import render_table, run_cv
    from mammojax.workdir import CV_PREDICTIONS, CV_RESULTS, CV_ROC, CV_TABLE, Workdir

    result = run_cv(config, workdir, log=lambda line: click.echo(line, err=True))
    click.echo(render_table(result))
    root = Workdir(workdir).root
    click.echo(f"wrote {root / CV_TABLE}, {CV_ROC}, {CV_RESULTS}, {CV_PREDICTIONS}")
