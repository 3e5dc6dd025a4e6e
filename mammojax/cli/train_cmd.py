"""``mammojax train``: a thin wrapper over :func:`mammojax.train.trainers.train_and_evaluate`."""

from __future__ import annotations

import click


def load_run_config(config_path, args):
    """The config file with the command line's ``--config.KEY=VALUE`` overrides (train and cv alike).

    The whole config is validated here, before any data is read or a workdir exists.
    """
    from mammojax.config import load_config
    from mammojax.errors import ConfigError
    from mammojax.train.config_check import validate_config

    for arg in args:
        if not arg.startswith("--config."):
            raise ConfigError(f"unexpected argument {arg!r}; config overrides look like --config.KEY=VALUE")
    config = load_config(config_path, args)
    validate_config(config)
    return config


@click.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), required=True,
              help="Config file with get_config(), e.g. configs/default.py.")
@click.option("--workdir", type=click.Path(file_okay=False), required=True,
              help="Checkpoints, logs and the best model go here; rerun to resume.")
@click.option("--coordinator", default=None, metavar="HOST:PORT",
              help="Multi-host: address of process 0 (or MAMMOJAX_COORDINATOR).")
@click.option("--num-processes", type=int, default=None, help="Multi-host: number of processes.")
@click.option("--process-id", type=int, default=None, help="Multi-host: this process's index.")
@click.pass_context
def train(ctx, config_path, workdir, coordinator, num_processes, process_id):
    """Train a model from a config file.

    Override any config field with --config.KEY=VALUE, e.g.
    --config.optim.lr=3e-4 --config.train.epochs=5. Killed runs resume from the
    latest checkpoint when the same command is run again.
    """
    config = load_run_config(config_path, ctx.args)

    from mammojax import runtime

    runtime.setup()
    from mammojax.train.sharding import maybe_initialize_distributed

    maybe_initialize_distributed(coordinator, num_processes, process_id)
    from mammojax.train.trainers import train_and_evaluate

    summary = train_and_evaluate(config, workdir)
    import jax

    if jax.process_index() == 0:
        metrics = summary["best_metrics"]
        shown = "  ".join(f"{k} {metrics[k]:.3f}" for k in ("auc", "sensitivity", "specificity", "accuracy", "f1")
                          if isinstance(metrics.get(k), float))
        if not summary["epoch_selected"]:  # a fixed schedule: the last epoch, not a selected one
            click.echo(f"final model (epoch {summary['best_epoch']}, no epoch selection), validation: {shown}")
        else:
            click.echo(f"best epoch {summary['best_epoch']}: {shown}")
        click.echo(f"best checkpoint: {summary['best_checkpoint']}")
        for warning in summary.get("calibration_warnings") or []:
            click.echo(f"warning: {warning}", err=True)
