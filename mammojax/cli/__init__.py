"""The ``mammojax`` command line: a thin layer over library functions.

Each command lives in its own module under ``mammojax.cli`` and is imported
only when it runs, so ``mammojax --help`` never loads JAX or TensorFlow. The
table below is the single list of commands (no registration by import side
effects): name -> (module, attribute, one-line help).
"""

from __future__ import annotations

import importlib
import sys

import click

from mammojax.errors import MammojaxError, TrainingStopped

COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("mammojax.cli.train_cmd", "train", "Train a model from a config file."),
    "cv": ("mammojax.cli.cv_cmd", "cv", "Patient-wise k-fold cross-validation of a patch-trainer config."),
    "eval": ("mammojax.cli.eval_cmd", "eval_", "Evaluate a checkpoint: metrics, ROC, report."),
    "predict": ("mammojax.cli.predict_cmd", "predict", "Score images, folders or a manifest."),
    "explain": ("mammojax.cli.explain_cmd", "explain", "Grad-CAM heatmaps and overlays."),
    "benchmark": ("mammojax.cli.benchmark_cmd", "benchmark", "Speed and size of the model zoo."),
    "export": ("mammojax.cli.export_cmd", "export", "Write a checkpoint as a portable jax.export model."),
    "app": ("mammojax.cli.app_cmd", "app", "Start the clinical web page (Streamlit)."),
    "models": ("mammojax.cli.models_cmd", "models", "List the model zoo with parameter counts."),
    "convert-weights": ("mammojax.cli.convert_cmd", "convert_weights",
                        "Import torchvision/timm weights into a checkpoint."),
    "data": ("mammojax.cli.data_cmd", "data", "Inspect, screen and cache datasets."),
    "quickstart": ("mammojax.cli.quickstart_cmd", "quickstart",
                   "Train, evaluate and explain on built-in synthetic phantoms."),
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when it is invoked."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module_name, attr, short_help = COMMANDS[name]
        if ctx.resilient_parsing or _only_listing(ctx):
            # Listing commands for --help: a placeholder with the help text.
            return click.Command(name, short_help=short_help, help=short_help)
        module = importlib.import_module(module_name)
        return getattr(module, attr)


def _only_listing(ctx) -> bool:
    return ctx.invoked_subcommand is None and any(a in ("--help", "-h") for a in sys.argv[1:2])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mammojax")
def cli():
    """mammojax: breast-cancer detection on mammograms with JAX/Flax.

    Run `mammojax COMMAND --help` for the options of a command.
    """


def main(argv=None) -> int:
    """Console entry point: user errors become one line and a non-zero exit."""
    try:
        # Without standalone mode, a command that ends with click's Exit(code)
        # (a batch's partial status, the web server's status) returns the code.
        code = cli.main(args=argv, prog_name="mammojax", standalone_mode=False)
    except TrainingStopped as stop:
        click.echo(f"mammojax: {stop}", err=True)
        return 0
    except MammojaxError as err:
        click.echo(f"mammojax: error: {err}", err=True)
        return err.exit_code
    except OSError as err:
        # A full disk, a read-only folder, a vanished file: the user's
        # environment, not a bug in mammojax, so one line and no traceback.
        where = f"{err.filename}: " if err.filename else ""
        click.echo(f"mammojax: error: {where}{err.strerror or err}", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("mammojax: aborted", err=True)
        return 130
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.exceptions.Exit as err:
        return err.exit_code
    except KeyboardInterrupt:
        click.echo("mammojax: interrupted", err=True)
        return 130
    return code if isinstance(code, int) else 0


def run() -> None:
    sys.exit(main())
