"""Subprocess worker for the sharding and multi-host tests (not collected by pytest).

Runs a few optimizer steps of the real 1-channel ResNet-18 (32 px) on fixed,
seeded in-memory batches through the production train state, sharding and
jitted step, then writes the parameters as ``.npz`` (process 0 only). The
device count and the multi-process setup come from the command line, so a
test can compare 1 device, 8 fake devices and 2 processes on one global batch.
"""

from __future__ import annotations

import argparse
import os
import sys

GLOBAL_BATCH = 8
IMAGE_SIZE = 32


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--devices", type=int, default=1, help="fake CPU devices in this process")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--coordinator")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    args = parser.parse_args(argv)
    # Must be set before JAX initializes its CPU backend.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}").strip()
    from mammojax import runtime

    runtime.setup()
    from mammojax.train.sharding import maybe_initialize_distributed

    maybe_initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    import jax
    import numpy as np

    from mammojax import models
    from mammojax.config import base_config
    from mammojax.train import sharding
    from mammojax.train.optim import make_optimizer
    from mammojax.train.state import create_train_state, jit_steps

    config = base_config()
    config.optim.grad_clip_norm = 1.0
    mesh = sharding.make_mesh()
    sharding.check_batch_size(GLOBAL_BATCH, mesh)
    tx, _ = make_optimizer(config.optim, steps_per_epoch=args.steps, epochs=1)
    state = create_train_state(models.create_model("resnet18"), tx, rng=jax.random.key(0),
                               image_size=IMAGE_SIZE, mesh=mesh)
    train_step = jit_steps(state, mesh, label_smoothing=0.1)
    weights = jax.device_put(np.array([0.7, 1.3], np.float32), sharding.replicated(mesh))
    rng = np.random.default_rng(0)
    losses, grad_norms = [], []
    for _ in range(args.steps):
        batch = {"image": rng.normal(size=(GLOBAL_BATCH, IMAGE_SIZE, IMAGE_SIZE, 1)).astype(np.float32),
                 "label": rng.integers(0, 2, GLOBAL_BATCH).astype(np.int32)}
        state, metrics = train_step(state, sharding.global_batch(sharding.process_slice(batch), mesh), weights)
        losses.append(float(metrics["loss"].addressable_data(0)))
        grad_norms.append(float(metrics["grad_norm"].addressable_data(0)))
    leaves = jax.tree_util.tree_leaves_with_path({"params": state.params, "batch_stats": state.batch_stats})
    arrays = {jax.tree_util.keystr(path): np.asarray(leaf.addressable_data(0)) for path, leaf in leaves}
    if jax.process_index() == 0:
        np.savez(args.out, losses=np.array(losses), grad_norms=np.array(grad_norms), devices=np.array(jax.device_count()), **arrays)
    print(f"process {jax.process_index()}/{jax.process_count()}: {jax.device_count()} devices, "
          f"losses {losses}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
