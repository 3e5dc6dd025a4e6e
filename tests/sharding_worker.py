"""Subprocess worker for the 8-device sharding and BatchNorm tests (not collected by pytest).

The device count of a JAX process is fixed when its CPU backend starts, and a
test session runs on one device, so these checks run here, on 8 forced host
devices, and write what they saw to an ``.npz`` that the tests assert on:

* ``--check sharding``: where the project's batch sharding puts a global batch
  (``sharding.global_batch``), shard by shard, and which rows of the batch the
  compiled train step of ``state.jit_steps`` expects on each device.
* ``--check batch_norm``: the BatchNorm running statistics and parameters after
  one jitted train step on a batch split over 8 devices, and after the same
  step on one device.
* ``--check guided``: loss, CAM loss, gradient norm and parameters after one
  explanation-guided step (``state.guided_train_step``) on 8 devices and on 1.
"""

from __future__ import annotations

import argparse
import os
import sys

DEVICES = 8
PER_DEVICE = 2
GLOBAL_BATCH = DEVICES * PER_DEVICE
IMAGE_SIZE = 4
CHANNELS = 2
MOMENTUM = 0.9


def probe_batch():
    """A global batch whose per-device slices have very different means and spreads.

    Device ``d``'s rows are drawn around ``10 d`` with spread ``1 + d``: a
    statistic of one device's slice is far from the statistic of the whole batch.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    rows = np.arange(GLOBAL_BATCH) // PER_DEVICE  # the device each row should land on
    shape = (GLOBAL_BATCH, IMAGE_SIZE, IMAGE_SIZE, CHANNELS)
    image = (10.0 * rows[:, None, None, None] + (1.0 + rows[:, None, None, None]) * rng.normal(size=shape))
    return {"image": image.astype(np.float32), "label": (rows % 2).astype(np.int32)}


def _probe_model():
    import flax.linen as nn

    from mammojax.models.batch_norm import BatchNorm

    class BatchNormProbe(nn.Module):
        """BatchNorm straight on the input, then a linear head: the running
        statistics after one step are those of the images themselves."""

        in_channels: int = CHANNELS

        @nn.compact
        def __call__(self, x, train: bool = False):
            h = BatchNorm(use_running_average=not train, momentum=MOMENTUM)(x)
            return nn.Dense(2)(h.mean(axis=(1, 2))), {"pre_logits": h}

    return BatchNormProbe()


def _one_step(mesh, batch):
    """Running statistics and parameters after one jitted train step over ``mesh``."""
    import jax
    import numpy as np
    import optax

    from mammojax.train import sharding
    from mammojax.train.state import create_train_state, jit_steps

    state = create_train_state(_probe_model(), optax.sgd(0.1), rng=jax.random.key(0),
                               image_size=IMAGE_SIZE, mesh=mesh)
    train_step = jit_steps(state, mesh, label_smoothing=0.0)
    state, _ = train_step(state, sharding.global_batch(batch, mesh), None)
    leaves = jax.tree_util.tree_leaves_with_path({"params": state.params, "batch_stats": state.batch_stats})
    return {"/".join(str(key.key) for key in path): np.asarray(leaf.addressable_data(0)) for path, leaf in leaves}


def check_batch_norm(out: str) -> None:
    import jax
    import numpy as np

    from mammojax.train import sharding

    batch = probe_batch()
    eight = _one_step(sharding.make_mesh(), batch)
    one = _one_step(sharding.make_mesh(jax.devices()[:1]), batch)
    np.savez(out, devices=jax.device_count(), image=batch["image"],
             **{f"eight/{k}": v for k, v in eight.items()}, **{f"one/{k}": v for k, v in one.items()})


GUIDED_SIZE = 32
GUIDED_LR = 0.05


def _guided_step(mesh, batch):
    """Loss, CAM loss, gradient norm and parameters after one jitted guided step over ``mesh``."""
    import jax
    import numpy as np
    import optax

    from mammojax.models.resnet import BasicBlock, ResNet
    from mammojax.train import sharding
    from mammojax.train.losses import CamGuidance
    from mammojax.train.state import create_train_state, jit_steps

    model = ResNet(stage_sizes=(1, 1, 1, 1), block_cls=BasicBlock, width=4)
    state = create_train_state(model, optax.sgd(GUIDED_LR), rng=jax.random.key(0), image_size=GUIDED_SIZE,
                               mesh=mesh)
    train_step = jit_steps(state, mesh, label_smoothing=0.0,
                           guidance=CamGuidance(model=model, weight=2.0, layer="stage3"))
    state, metrics = train_step(state, sharding.global_batch(batch, mesh), None)
    out = {k: np.asarray(v.addressable_data(0)) for k, v in metrics.items()}
    for path, leaf in jax.tree_util.tree_leaves_with_path(state.params):
        out["params/" + "/".join(str(key.key) for key in path)] = np.asarray(leaf.addressable_data(0))
    return out


def check_guided(out: str) -> None:
    import jax
    import numpy as np

    from mammojax.train import sharding

    rng = np.random.default_rng(1)
    masks = np.zeros((GLOBAL_BATCH, GUIDED_SIZE, GUIDED_SIZE), bool)
    # Annotated films on devices 0, 0 and 5 only: the mean is over 3 films, not 16 or 2.
    for row, (top, left) in ((0, (4, 4)), (1, (12, 18)), (10, (20, 6))):
        masks[row, top:top + 8, left:left + 8] = True
    batch = {"image": rng.normal(size=(GLOBAL_BATCH, GUIDED_SIZE, GUIDED_SIZE, 1)).astype(np.float32),
             "label": (np.arange(GLOBAL_BATCH) % 2).astype(np.int32), "lesion_mask": masks}
    batch["label"][[0, 1, 10]] = 1
    eight = _guided_step(sharding.make_mesh(), batch)
    one = _guided_step(sharding.make_mesh(jax.devices()[:1]), batch)
    np.savez(out, devices=jax.device_count(), batch=GLOBAL_BATCH, image_size=GUIDED_SIZE, lr=GUIDED_LR,
             **{f"eight/{k}": v for k, v in eight.items()}, **{f"one/{k}": v for k, v in one.items()})


def _rows(index) -> tuple[int, int]:
    """(start, stop) of a shard's first-axis slice; a whole axis reads as (0, GLOBAL_BATCH)."""
    first = index[0]
    return (first.start or 0, GLOBAL_BATCH if first.stop is None else first.stop)


def check_sharding(out: str) -> None:
    import jax
    import numpy as np
    import optax

    from mammojax.train import sharding
    from mammojax.train.state import create_train_state, jit_steps

    mesh = sharding.make_mesh()
    batch = probe_batch()
    placed = sharding.global_batch(batch, mesh)["image"]
    shards = sorted(placed.addressable_shards, key=lambda shard: shard.device.id)
    # The batch layout the compiled train step asks for, whatever array it is handed.
    state = create_train_state(_probe_model(), optax.sgd(0.1), rng=jax.random.key(0),
                               image_size=IMAGE_SIZE, mesh=mesh)
    train_step = jit_steps(state, mesh, label_smoothing=0.0)
    shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}  # no placement of its own
    compiled = train_step.lower(state, shapes, None).compile()
    step_sharding = compiled.input_shardings[0][1]["image"]
    step_map = step_sharding.devices_indices_map(batch["image"].shape)
    step_devices = sorted(step_map, key=lambda device: device.id)
    np.savez(out, devices=jax.device_count(), image=batch["image"],
             shard_devices=np.array([shard.device.id for shard in shards]),
             shard_rows=np.array([_rows(shard.index) for shard in shards]),
             shard_data=np.stack([np.asarray(shard.data) for shard in shards]),
             step_devices=np.array([device.id for device in step_devices]),
             step_rows=np.array([_rows(step_map[device]) for device in step_devices]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--check", choices=("sharding", "batch_norm", "guided"), required=True)
    args = parser.parse_args(argv)
    # Before JAX starts its CPU backend: 8 host devices, and CPU even on a GPU machine.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={DEVICES}").strip()
    os.environ["JAX_PLATFORMS"] = "cpu"
    from mammojax import runtime

    runtime.setup()
    import jax

    assert jax.device_count() == DEVICES, jax.devices()
    {"sharding": check_sharding, "batch_norm": check_batch_norm, "guided": check_guided}[args.check](args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
