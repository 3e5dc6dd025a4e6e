"""`mammojax explain`: Grad-CAM heatmaps, overlays and localization metrics.

A thin layer over :mod:`mammojax.explain.explain` (output format documented there).
"""

from __future__ import annotations

from pathlib import Path

import click

from mammojax.cli.outcome import EXIT_STATUS_HELP


@click.command("explain", epilog=EXIT_STATUS_HELP)
@click.option("--checkpoint", required=True, type=click.Path(),
              help="Checkpoint directory or training workdir (its best/ is used).")
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder for overlays, panels, heatmaps and explanations.jsonl.")
@click.option("--method", default=None, type=click.Choice(["gradcam", "gradcam++", "hirescam"]),
              help="Heatmap method (default: the checkpoint's; window-scored models show window margins).")
@click.option("--layer", default=None, help="Feature map to explain (default: the checkpoint's, e.g. stage3).")
@click.option("--alpha", default=0.4, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Heatmap opacity in the overlay.")
@click.option("--colormap", default="jet", show_default=True,
              type=click.Choice(["jet", "inferno", "viridis", "turbo"]))
@click.option("--overwrite", is_flag=True, help="Replace existing outputs in --out.")
@click.option("--json", "as_json", is_flag=True, help="Also print each JSON line to stdout.")
@click.option("--evaluate", is_flag=True,
              help="Score heatmaps against the lesions of --dataset (pointing game, deletion).")
@click.option("--dataset", default=None, help="Dataset name for --evaluate (e.g. mias, synthetic).")
@click.option("--data-dir", default="", type=click.Path(), help="Dataset root for --evaluate.")
@click.option("--task", default="default", show_default=True, help="Dataset task for --evaluate.")
@click.option("--option", "dataset_options", multiple=True, metavar="KEY=VALUE",
              help="Dataset adapter option for --evaluate (repeatable), e.g. count=64.")
@click.option("--tolerance", default=0.0, show_default=True, type=click.FloatRange(0.0),
              help="Pointing game: grow lesions by this many original pixels.")
@click.option("--fraction", default=0.05, show_default=True, type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
              help="Deletion test: share of input pixels removed.")
@click.option("--limit", default=0, type=click.IntRange(0), help="Evaluate at most N lesion images (0 = all).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random deletion regions.")
def explain(checkpoint, inputs, out, method, layer, alpha, colormap, overwrite, as_json, evaluate,
            dataset, data_dir, task, dataset_options, tolerance, fraction, limit, seed):
    """Explain INPUTS (image files, folders, or .csv manifests): for each image
    write OUT/<stem>_overlay.png, OUT/<stem>_panel.png, OUT/<stem>_cam.npy (the
    raw heatmap at model-input resolution) and a line in OUT/explanations.jsonl.
    Overlays, panels, the peaks in the JSON lines and --evaluate use the map
    over the breast only (the model input's breast mask: never the padding or
    the background; "heatmap_masked": true).
    Unreadable files are skipped with an error line and the rest go on. With --evaluate,
    also score the heatmaps of --dataset's lesion images and write
    OUT/localization.json."""
    from mammojax.cli import outcome
    from mammojax.errors import MammojaxError
    from mammojax.explain import explain as lib
    from mammojax.predict import collect_inputs

    # Cheap checks first, before JAX loads.
    if not inputs and not evaluate:
        raise MammojaxError("nothing to explain: give INPUTS and/or --evaluate --dataset NAME")
    if evaluate and not dataset:
        raise MammojaxError("--evaluate needs --dataset NAME (and --data-dir PATH for real datasets)")
    from mammojax.cli.data_cmd import parse_adapter_options

    options = parse_adapter_options(dataset_options)
    items = collect_inputs(inputs) if inputs else []
    if inputs:
        outcome.require_images(items, inputs)
    paths = [item.path for item in items]
    stems = lib.output_stems(paths)
    out_dir = Path(out)
    lib.check_outputs_free(out_dir, stems, overwrite=overwrite)
    report_path = out_dir / "localization.json"
    if evaluate and report_path.exists() and not overwrite:
        raise MammojaxError(f"{report_path}: already exists; pass --overwrite to replace")
    out_dir.mkdir(parents=True, exist_ok=True)

    from mammojax import runtime

    runtime.setup()
    explainer = lib.Explainer(checkpoint, method=method, layer=layer)
    failed = 0
    if items or not evaluate:
        with open(out_dir / lib.JSONL_NAME, "w") as jsonl:
            for path, stem in zip(paths, stems):
                try:
                    explanation = explainer.explain_path(path)
                    line = lib.write_explanation(explanation, out_dir, stem, alpha=alpha, colormap=colormap)
                except MammojaxError as err:
                    failed += 1
                    line = {"path": path, "error": str(err)}
                    outcome.report_skipped(path, err)
                text = lib.dumps_line(line)
                jsonl.write(text + "\n")
                jsonl.flush()
                if as_json:
                    click.echo(text)
        click.echo(f"{len(paths) - failed} explained, {failed} failed -> {out_dir}", err=True)

    if evaluate:
        from mammojax.data.records import load_dataset

        records = load_dataset(dataset, data_dir, task=task, **options).records
        records = [r for r in records if lib.localizable(r)]
        if limit:
            records = records[:limit]
        if not records:
            raise MammojaxError(f"dataset {dataset!r}: no positive image with a located lesion")
        report = lib.evaluate_localization(None, records, tolerance=tolerance, fraction=fraction,
                                           seed=seed, explainer=explainer)
        report["summary"]["dataset"] = dataset
        report_path.write_text(lib.dumps_line(report) + "\n")
        click.echo(lib.format_localization_table(report["summary"]), err=as_json)
        if as_json:
            click.echo(lib.dumps_line({"localization": report["summary"]}))
    if paths:
        outcome.finish(len(paths) - failed, failed, verb="explain")
