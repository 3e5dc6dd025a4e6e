"""`mammojax convert-weights`: torchvision/timm weights -> a mammojax checkpoint."""

from __future__ import annotations

import click

from mammojax.cli.params import InputShape


@click.command("convert-weights")
@click.argument("src", type=click.Path(dir_okay=False))
@click.option("--model", "model_name", required=True, help="Target model, e.g. resnet18 (see `mammojax models`).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Checkpoint directory to write.")
@click.option("--num-classes", type=click.IntRange(min=1), default=2, show_default=True,
              help="Classes of the head; a different count in the weights gets a fresh head.")
@click.option("--image-size", type=InputShape(32), default="224", show_default=True,
              help="Model input recorded in the checkpoint for preprocessing: S or HxW (e.g. 1024x832).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for a fresh head.")
@click.option("--overwrite", is_flag=True, help="Replace an existing checkpoint directory.")
def convert_weights(src: str, model_name: str, out: str, num_classes: int, image_size: tuple[int, int],
                    seed: int, overwrite: bool) -> None:
    """Convert a .safetensors, .npz or .pth state dict SRC into an inference checkpoint.

    torchvision names are understood for every model, timm names for ResNet,
    DenseNet and MobileNet-V2. A 1-channel model sums 3-channel stem weights
    over RGB. .pth files need PyTorch and are read with weights_only=True.
    """
    from mammojax import runtime

    runtime.setup()
    from mammojax import models, weights

    models.create_model(model_name)  # an unknown name fails before any file is read
    path, notes = weights.convert_to_checkpoint(src, model_name, out, num_classes=num_classes,
                                                image_size=image_size, overwrite=overwrite, seed=seed)
    for note in notes:
        click.echo(f"note: {note}")
    click.echo(f"wrote {model_name} checkpoint to {path}")
