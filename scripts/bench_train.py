"""Training throughput: mammojax (jit, Adam) vs a PyTorch eager step, side by side.

    python scripts/bench_train.py            # 224 px, batch 16, 1-channel ResNet-18
    python scripts/bench_train.py --quick    # smoke run: 64 px, few steps

Both sides run the same model (1-channel ResNet-18, 2 classes), loss
(cross-entropy) and optimizer (Adam 1e-4) on the same random batch, with 2
threads each. Compilation (jit) is timed separately from the steady state:
after warm-up steps, ``--steps`` timed steps each, images/s reported with the
ratio. Run it on a quiet machine: other processes skew both numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def bench_jax(args) -> dict:
    from mammojax import runtime

    # Cold compile on purpose: the compile time is part of the report.
    runtime.setup(compilation_cache=False)
    import jax
    import numpy as np

    from mammojax import models
    from mammojax.config import base_config
    from mammojax.train import sharding
    from mammojax.train.optim import make_optimizer
    from mammojax.train.state import create_train_state, jit_steps

    mesh = sharding.make_mesh(jax.devices()[:1])
    tx, _ = make_optimizer(base_config().optim, steps_per_epoch=1, epochs=1)
    state = create_train_state(models.create_model("resnet18"), tx, rng=jax.random.key(0),
                               image_size=args.image_size, mesh=mesh)
    train_step, _ = jit_steps(state, mesh, label_smoothing=0.0)
    rng = np.random.default_rng(0)
    batch = sharding.global_batch({
        "image": rng.normal(size=(args.batch_size, args.image_size, args.image_size, 1)).astype(np.float32),
        "label": rng.integers(0, 2, args.batch_size).astype(np.int32)}, mesh)
    weights = np.ones(2, np.float32)
    start = time.perf_counter()
    compiled = train_step.lower(state, batch, weights).compile()
    compile_s = time.perf_counter() - start
    for _ in range(args.warmup):
        state, metrics = compiled(state, batch, weights)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = compiled(state, batch, weights)
    jax.block_until_ready(metrics)
    elapsed = time.perf_counter() - start
    return {"images_per_second": args.steps * args.batch_size / elapsed, "compile_s": compile_s}


def bench_torch(args) -> dict:
    import torch

    sys.path.insert(0, str(REPO / "tests"))
    from torch_reference import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=2, in_channels=1).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    images = torch.randn(args.batch_size, 1, args.image_size, args.image_size)
    labels = torch.randint(0, 2, (args.batch_size,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    elapsed = time.perf_counter() - start
    return {"images_per_second": args.steps * args.batch_size / elapsed, "compile_s": 0.0}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 px, 1 warm-up, 2 timed steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size, args.warmup, args.steps = 64, 1, 2
    # XLA's CPU client has no thread-count flag: it uses every core (2 on the
    # project machines), so torch gets the same number.
    import torch

    torch.set_num_threads(args.threads)
    print(f"training step, 1-channel ResNet-18, batch {args.batch_size}, {args.image_size}x{args.image_size}, "
          f"Adam, {args.threads} threads, {args.steps} timed steps after {args.warmup} warm-up")
    jax_result = bench_jax(args)
    torch_result = bench_torch(args)
    print(f"mammojax (jit):  {jax_result['images_per_second']:7.2f} images/s   "
          f"(compile {jax_result['compile_s']:.1f} s, not included)")
    print(f"PyTorch eager:   {torch_result['images_per_second']:7.2f} images/s")
    print(f"ratio mammojax / PyTorch: {jax_result['images_per_second'] / torch_result['images_per_second']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
