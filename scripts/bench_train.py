"""Training throughput: mammojax (jit, Adam) vs a PyTorch eager step, side by side.

    python scripts/bench_train.py            # 224 px, batch 16, 1-channel ResNet-18
    python scripts/bench_train.py --quick    # smoke run: 64 px, few steps

Both sides run the same model (1-channel ResNet-18, 2 classes), loss
(cross-entropy) and optimizer (Adam 1e-4) on the same random batch, with 2
threads each. Compilation (jit) is timed separately from the steady state.
After warm-up, the two sides alternate ``--rounds`` times, ``--steps`` steps
each; the median images/s of each side and the median per-round ratio are
printed. Run it on a quiet machine: other processes skew both numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from statistics import median
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build_jax(args):
    """A compiled mammojax training step and its inputs; returns ``(run(n) -> seconds, compile_s)``."""
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
    model = models.create_model(getattr(args, "model", "resnet18"), dtype=getattr(args, "dtype", "float32"))
    state = create_train_state(model, tx, rng=jax.random.key(0),
                               image_size=args.image_size, mesh=mesh)
    train_step = jit_steps(state, mesh, label_smoothing=0.0)
    rng = np.random.default_rng(0)
    batch = sharding.global_batch({
        "image": rng.normal(size=(args.batch_size, *args.image_size, 1)).astype(np.float32),
        "label": rng.integers(0, 2, args.batch_size).astype(np.int32)}, mesh)
    return timed_steps(train_step, state, batch, warmup=args.warmup)


def timed_steps(train_step, state, batch, *, warmup: int):
    """Compiles ``train_step`` for ``(state, batch)`` (unit class weights); returns ``(run(n) -> seconds, compile_s)``.

    ``run(n)`` takes n steps from where the last call left the state, and
    waits for the last one; ``warmup`` steps are taken before returning.
    bench_cam_loss.py times its plain and guided steps with it too.
    """
    import jax
    import numpy as np

    weights = np.ones(2, np.float32)
    start = time.perf_counter()
    compiled = train_step.lower(state, batch, weights).compile()
    compile_s = time.perf_counter() - start
    holder = {"state": state}

    def run(steps: int) -> float:
        state = holder["state"]
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = compiled(state, batch, weights)
        jax.block_until_ready(metrics)
        holder["state"] = state
        return time.perf_counter() - start

    run(warmup)
    return run, compile_s


def build_torch(args, *, channels_last: bool = False):
    """The same step in PyTorch eager (NCHW, or channels_last: NHWC memory, oneDNN's fast layout); ``run(n) -> s``."""
    import torch

    sys.path.insert(0, str(REPO / "tests"))
    from torch_reference import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=2, in_channels=1).train()
    images = torch.randn(args.batch_size, 1, *args.image_size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    labels = torch.randint(0, 2, (args.batch_size,))

    def run(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()
        return time.perf_counter() - start

    run(args.warmup)
    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", default="224", help="S or HxW (e.g. 1024x832)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per side per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 px, 1 warm-up, 2 timed steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size, args.warmup, args.steps, args.rounds = "64", 1, 2, 2
    from mammojax.data.preprocess import input_shape
    from mammojax.errors import MammojaxError

    try:
        args.image_size = input_shape(args.image_size, name="--image-size")
    except MammojaxError as err:
        parser.error(str(err))
    # XLA's CPU client has no thread-count flag: it uses every core (2 on the
    # project machines), so torch gets the same number.
    import torch

    torch.set_num_threads(args.threads)
    height, width = args.image_size
    print(f"training step, 1-channel ResNet-18, batch {args.batch_size}, {height}x{width}, "
          f"Adam, {args.threads} threads; {args.rounds} interleaved rounds of {args.steps} steps each side "
          f"after {args.warmup} warm-up")
    jax_run, compile_s = build_jax(args)
    torch_run = build_torch(args)
    # Interleaved rounds: this shared machine's speed drifts by +-15% over
    # minutes, so each ratio compares two neighbouring measurements.
    rows = []
    for index in range(args.rounds):
        jax_ips = args.steps * args.batch_size / jax_run(args.steps)
        torch_ips = args.steps * args.batch_size / torch_run(args.steps)
        rows.append((jax_ips, torch_ips, jax_ips / torch_ips))
        print(f"  round {index + 1}: mammojax {jax_ips:6.2f} img/s, PyTorch {torch_ips:6.2f} img/s, "
              f"ratio {jax_ips / torch_ips:.2f}", flush=True)
    jax_ips, torch_ips, ratios = (sorted(column) for column in zip(*rows))
    print(f"mammojax (jit):  {median(jax_ips):7.2f} images/s median   (compile {compile_s:.1f} s, not included)")
    print(f"PyTorch eager:   {median(torch_ips):7.2f} images/s median")
    print(f"ratio mammojax / PyTorch: {median(ratios):.2f} median (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
