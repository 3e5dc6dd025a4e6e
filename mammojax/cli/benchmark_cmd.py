"""`mammojax benchmark`: the paper's Table 4.1, measured on this machine."""

from __future__ import annotations

import json

import click

from mammojax.cli.params import InputShape
from mammojax.errors import MammojaxError

DEFAULT_MODELS = "resnet18,resnet18_rgb,resnet50,densenet121,mobilenet_v2"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise MammojaxError(f"--batch-sizes: expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise MammojaxError(f"--batch-sizes: expected positive integers, got {text!r}")
    return values


def _checkpoint_map(items: tuple[str, ...]) -> dict[str, str]:
    mapping = {}
    for item in items:
        if "=" not in item:
            raise MammojaxError(f"--checkpoint {item!r}: expected MODEL=DIR")
        name, path = item.split("=", 1)
        mapping[name] = path
    return mapping


@click.command("benchmark")
@click.option("--models", "model_names", default=DEFAULT_MODELS, show_default=True,
              help="Comma-separated model names (see `mammojax models`).")
@click.option("--image-size", default="224", show_default=True, type=InputShape(16, 4096),
              help="Model input: S (S x S) or HxW, e.g. 1024x832.")
@click.option("--batch-sizes", default="1,16", show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True,
              help="Compute dtype; bfloat16 is for GPUs/TPUs.")
@click.option("--repeats", default=10, show_default=True, type=click.IntRange(1, 1000),
              help="Timed runs after warm-up (median and p95 are reported).")
@click.option("--checkpoint", "checkpoints", multiple=True, metavar="MODEL=DIR",
              help="Trained checkpoint for a model; with --dataset adds sensitivity, specificity, AUC.")
@click.option("--dataset", default=None, help="Dataset for the quality columns (e.g. mias, synthetic).")
@click.option("--data-dir", default="", help="Dataset root for --dataset.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def benchmark(model_names, image_size, batch_sizes, dtype, repeats, checkpoints, dataset, data_dir, as_json):
    """Parameters, GFLOPs, compile time, latency (median/p95) for predict and
    predict + Grad-CAM, throughput and memory for each model; quality columns
    when trained checkpoints and a dataset are given."""
    from mammojax import runtime

    runtime.setup()
    import jax

    from mammojax import benchmark as bench
    from mammojax import models

    names = [n.strip() for n in model_names.split(",") if n.strip()]
    for name in names:
        models.create_model(name)  # fails early, listing valid names
    sizes = _int_list(batch_sizes)
    ckpts = _checkpoint_map(checkpoints)
    unknown = set(ckpts) - set(names)
    if unknown:
        raise MammojaxError(f"--checkpoint given for models not benchmarked: {', '.join(sorted(unknown))}")
    if ckpts and not dataset:
        raise MammojaxError("--checkpoint needs --dataset (and --data-dir) for the quality columns")

    click.echo(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, "
               f"image {image_size[0]}x{image_size[1]}, "
               f"dtype {dtype}", err=True)
    rows = []
    for name in names:
        loaded = None
        if name in ckpts:
            from mammojax.checkpoint import load_checkpoint

            loaded = load_checkpoint(ckpts[name], expect_model=name)
        quality = _quality(loaded, dataset, data_dir) if loaded is not None else None
        for batch_size in sizes:
            click.echo(f"  {name} batch {batch_size} ...", err=True)
            row = bench.benchmark_model(
                name, image_size=image_size, batch_size=batch_size, dtype=dtype, repeats=repeats,
                variables=loaded.variables if loaded is not None else None)
            row.quality = quality
            rows.append(row)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        click.echo(bench.format_table(rows))


def _quality(checkpoint, dataset, data_dir) -> dict:
    from mammojax.evaluation.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(checkpoint, dataset=dataset, data_dir=data_dir, split="test")
    image = result["levels"]["image"]
    return {k: image.get(k) for k in ("sensitivity", "specificity", "auc")}
