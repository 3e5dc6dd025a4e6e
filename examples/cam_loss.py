"""A custom loss on a Grad-CAM heatmap, differentiated with jax.grad, jitted, on a device mesh.

    python examples/cam_loss.py            # 64 phantoms at 64 px, 30 Adam steps (about a minute on 2 cores)
    python examples/cam_loss.py --quick    # 8 phantoms at 32 px, 2 steps (what the tests run)
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python examples/cam_loss.py   # an 8-device mesh on a CPU

Copy from here. ``mammojax.explain.cam.compute_cam`` is a pure function of
``(model, variables, images)``, so a loss written on its heatmap is an
ordinary JAX function: ``jax.value_and_grad`` differentiates through the
Grad-CAM itself (its gradient-of-the-logit step included, a second-order
derivative that PyTorch users get from hooks plus ``create_graph=True``),
``jax.jit`` compiles it, and the batch is sharded over every device of a
``data`` mesh with the parameters replicated. The training core's own guided
loss (``train.cam_loss_weight``, ``mammojax.train.losses``) is the same idea,
with the energy loss; here the custom objective is different on purpose: the
distance between the heatmap's centre of mass and the lesion's, which no
config option offers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def phantom_batch(count: int, size: int, seed: int):
    """``(images (N, S, S, 1) z-scored, labels (N,), lesion masks (N, S, S))``: half of them with a mass."""
    import numpy as np

    from mammojax.data.synthetic import make_phantom

    rng = np.random.default_rng(seed)
    images, labels, masks = [], [], []
    for index in range(count):
        image, mask, _ = make_phantom(rng, size=size, positive=index % 2 == 1)
        images.append((image - image.mean()) / (image.std() + 1e-8))
        labels.append(index % 2)
        masks.append(mask)
    return (np.stack(images)[..., None].astype(np.float32), np.array(labels, np.int32),
            np.stack(masks).astype(np.float32))


def centre_of_mass(maps):
    """``(B, 2)`` row/column centres of mass of non-negative ``(B, H, W)`` maps, in pixels."""
    import jax.numpy as jnp

    rows = jnp.arange(maps.shape[1], dtype=maps.dtype)[None, :, None]
    cols = jnp.arange(maps.shape[2], dtype=maps.dtype)[None, None, :]
    total = maps.sum(axis=(1, 2)) + 1e-6
    return jnp.stack([(maps * rows).sum(axis=(1, 2)) / total, (maps * cols).sum(axis=(1, 2)) / total], axis=-1)


def make_loss(model, weight: float):
    """Cross-entropy plus ``weight`` x (heatmap centre of mass - lesion centre of mass)^2 / side^2, on films with a lesion."""
    import jax
    import jax.numpy as jnp

    from mammojax.explain.cam import compute_cam, upsample_cam

    def loss(params, batch_stats, images, labels, masks):
        variables = {"params": params, "batch_stats": batch_stats}
        # train=True: batch statistics, as in any training step; mutable returns their update.
        (heatmaps, logits), updates = compute_cam(model, variables, images, layer="stage3", train=True,
                                                  mutable=["batch_stats"])
        heatmaps = upsample_cam(heatmaps, images.shape[1:3])
        ce = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))
        has_lesion = masks.sum(axis=(1, 2)) > 0
        offset = centre_of_mass(heatmaps) - centre_of_mass(masks)
        distance = jnp.sum(offset ** 2, axis=-1) / images.shape[1] ** 2
        cam_term = jnp.sum(jnp.where(has_lesion, distance, 0.0)) / jnp.maximum(has_lesion.sum(), 1)
        return ce + weight * cam_term, (ce, cam_term, updates["batch_stats"])

    return loss


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--weight", type=float, default=1.0, help="weight of the centre-of-mass term")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="8 phantoms at 32 px, 2 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.size, args.steps = 8, 32, 2

    from mammojax import runtime

    runtime.setup()
    import jax
    import optax

    from mammojax import models
    from mammojax.train import sharding

    mesh = sharding.make_mesh()  # a 1-D "data" mesh over every device
    sharding.check_batch_size(args.count, mesh, name="--count")
    model = models.create_model("resnet18")
    variables = models.init_variables(model, jax.random.key(args.seed), args.size)
    images, labels, masks = phantom_batch(args.count, args.size, args.seed)
    batch = sharding.global_batch({"image": images, "label": labels, "mask": masks}, mesh)  # split over devices
    params, batch_stats = jax.device_put((variables["params"], variables["batch_stats"]),
                                         sharding.replicated(mesh))
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)
    loss = make_loss(model, args.weight)

    @jax.jit
    def step(params, batch_stats, opt_state, batch):
        (total, (ce, cam_term, batch_stats)), grads = jax.value_and_grad(loss, has_aux=True)(
            params, batch_stats, batch["image"], batch["label"], batch["mask"])
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, (total, ce, cam_term)

    print(f"{jax.device_count()} device(s); batch {args.count} at {args.size} px; weight {args.weight}")
    for index in range(args.steps):
        params, batch_stats, opt_state, (total, ce, cam_term) = step(params, batch_stats, opt_state, batch)
        if index in (0, args.steps - 1) or (index + 1) % 10 == 0:
            print(f"step {index + 1}: loss {float(total):.4f} = cross-entropy {float(ce):.4f} "
                  f"+ {args.weight} x centre-of-mass {float(cam_term):.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
