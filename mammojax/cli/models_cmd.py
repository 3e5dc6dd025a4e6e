"""`mammojax models`: the model zoo with parameter counts."""

from __future__ import annotations

import json

import click


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--in-channels", type=click.IntRange(1, 3), default=1, show_default=True,
              help="Input channels of the stem (resnet18_rgb always takes 3).")
@click.option("--num-classes", type=click.IntRange(min=1), default=2, show_default=True,
              help="Classes of the head.")
def models(as_json: bool, in_channels: int, num_classes: int) -> None:
    """List every model of the zoo with its parameter count (from shapes only)."""
    from mammojax import runtime

    runtime.setup()
    from mammojax import models as zoo

    rows = []
    for name in zoo.MODELS:
        channels = zoo.FIXED_IN_CHANNELS.get(name, in_channels)
        rows.append({"name": name, "in_channels": channels, "num_classes": num_classes,
                     "params": zoo.param_count(name, num_classes=num_classes, in_channels=channels),
                     "default": name == "resnet18"})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'model':<14} {'channels':>8} {'classes':>7} {'parameters':>12}")
    for row in rows:
        mark = "  (default)" if row["default"] else ""
        click.echo(f"{row['name']:<14} {row['in_channels']:>8} {row['num_classes']:>7} "
                   f"{row['params']:>12,}{mark}")
