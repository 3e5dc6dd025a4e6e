"""Subprocess worker for the sharding and multi-host tests (not collected by pytest).

Runs a few optimizer steps of the real 1-channel ResNet-18 (32 px) through the
production train state, sharding and jitted step, then writes the parameters
as ``.npz`` (process 0 only). Batches are fixed seeded in-memory arrays, or,
with ``--prepared DIR``, one epoch of the real input pipeline
(:func:`mammojax.data.pipeline.train_batches`) over a prepared dataset, each
process reading only its own rows; ``--reads-out`` then records which stored
examples this process read. The
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
    parser.add_argument("--prepared", help="a prepared dataset: train one epoch of the real pipeline on it")
    parser.add_argument("--reads-out", help="with --prepared: write the stored rows this process read (.npy)")
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
    losses, grad_norms = [], []
    for local in (pipeline_batches(args, config) if args.prepared else in_memory_batches(args.steps)):
        IMAGES.append(local["image"])
        state, metrics = train_step(state, sharding.global_batch(local, mesh), weights)
        losses.append(float(metrics["loss"].addressable_data(0)))
        grad_norms.append(float(metrics["grad_norm"].addressable_data(0)))
    leaves = jax.tree_util.tree_leaves_with_path({"params": state.params, "batch_stats": state.batch_stats})
    arrays = {jax.tree_util.keystr(path): np.asarray(leaf.addressable_data(0)) for path, leaf in leaves}
    if args.reads_out:
        np.savez(args.reads_out, rows=np.array(READS, np.int64), images=np.array(IMAGES, np.float32))
    if jax.process_index() == 0:
        np.savez(args.out, losses=np.array(losses), grad_norms=np.array(grad_norms), devices=np.array(jax.device_count()), **arrays)
    print(f"process {jax.process_index()}/{jax.process_count()}: {jax.device_count()} devices, "
          f"losses {losses}", file=sys.stderr)
    return 0


READS: list[int] = []  # stored rows this process read
IMAGES: list = []  # the (augmented) local batches it trained on


def in_memory_batches(steps: int):
    """This process's rows of ``steps`` seeded global batches that every process draws in full."""
    import numpy as np

    from mammojax.train import sharding

    rng = np.random.default_rng(0)
    for _ in range(steps):
        batch = {"image": rng.normal(size=(GLOBAL_BATCH, IMAGE_SIZE, IMAGE_SIZE, 1)).astype(np.float32),
                 "label": rng.integers(0, 2, GLOBAL_BATCH).astype(np.int32)}
        yield sharding.process_slice(batch)


def pipeline_batches(args, config):
    """One epoch of the real training pipeline; every image this process reads is logged in READS."""
    import jax

    from mammojax.data import prepared as prepared_lib
    from mammojax.data.pipeline import train_batches

    dataset = prepared_lib.open_prepared(args.prepared)
    original = prepared_lib.ExampleReader.get

    def logged(self, index):
        READS.append(int(self._rows[index]))
        return original(self, index)

    prepared_lib.ExampleReader.get = logged
    config.train.batch_size = GLOBAL_BATCH
    for batch in train_batches(dataset, config, epoch=0, process_index=jax.process_index(),
                               process_count=jax.process_count()):
        yield batch


if __name__ == "__main__":
    sys.exit(main())
