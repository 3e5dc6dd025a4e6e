"""`mammojax export`: a checkpoint -> serialized jax.export artifacts + export.json (mammojax.export)."""

from __future__ import annotations

import click


@click.command("export")
@click.option("--checkpoint", required=True, type=click.Path(),
              help="Checkpoint directory or training workdir (its best/ is used).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Export directory to write.")
@click.option("--platforms", default="cpu,cuda", show_default=True,
              help="Comma-separated platforms to lower for (jax names: cpu, cuda, rocm, tpu).")
@click.option("--no-heatmap", is_flag=True, help="Export the logits program only (no heatmap.jax).")
@click.option("--overwrite", is_flag=True, help="Replace an existing export directory.")
def export(checkpoint, out, platforms, no_heatmap, overwrite):
    """Write CHECKPOINT as a portable model: logits.jax (and heatmap.jax), StableHLO
    with the weights inside and a symbolic batch dimension, plus export.json
    (input shape, preprocessing, tau and temperature per level, classes). Any
    process with jax and numpy runs it without mammojax; `mammojax predict
    --checkpoint OUT` runs from it too."""
    from mammojax import runtime

    runtime.setup()
    from mammojax.export import META_FILE, export_checkpoint

    names = tuple(p.strip() for p in platforms.split(",") if p.strip())
    if not names:
        raise click.BadParameter("name at least one platform", param_hint="--platforms")
    path = export_checkpoint(checkpoint, out, platforms=names, heatmap=not no_heatmap, overwrite=overwrite)
    click.echo(f"wrote exported model to {path} (see {META_FILE})")
