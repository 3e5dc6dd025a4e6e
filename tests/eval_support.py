"""A tiny checkpoint for the predict/eval tests: a fresh ResNet-18 at 32 px.

Its scores mean nothing; the tests check plumbing (files, rows, splits,
reports), not medicine.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_SIZE = 32
TAU = 0.41  # unusual on purpose: outputs must use the checkpoint's own tau


def make_tiny_checkpoint(directory: Path, *, tau: float = TAU, temperature: float = 1.5,
                         overrides: dict | None = None) -> Path:
    """Saves an initialised resnet18 checkpoint whose config trains on phantoms."""
    import jax

    from mammojax import models
    from mammojax.checkpoint import make_meta, save_checkpoint
    from mammojax.config import base_config

    config = base_config()
    config.data.image_size = IMAGE_SIZE
    config.data.dataset = "synthetic"
    config.data.synthetic_count = 8
    config.train.eval_batch_size = 4
    config.eval.bootstrap = 50
    for key, value in (overrides or {}).items():
        section, leaf = key.split(".")
        config[section][leaf] = value
    model = models.create_model("resnet18")
    variables = models.init_variables(model, jax.random.key(0), IMAGE_SIZE)
    meta = make_meta(config, tau=tau, temperature=temperature)
    return save_checkpoint(directory, variables, meta)
