"""Explanation-guided training step: its cost over the plain step, and against PyTorch.

    python scripts/bench_cam_loss.py                      # batch 8, 96 px, Grad-CAM on stage3
    python scripts/bench_cam_loss.py --image-size 128 --layer stage4
    python scripts/bench_cam_loss.py --quick              # smoke run: 64 px, few steps

Three training steps of the same 1-channel ResNet-18 (2 classes, Adam 1e-4)
on the same random batch, half of whose films carry a lesion mask:

* **JAX plain**: mammojax's jitted ``train_step`` (cross-entropy), what
  ``train.cam_loss_weight = 0`` runs;
* **JAX guided**: ``state.guided_train_step`` (``train.cam_loss_weight = 1``,
  ``train.cam_loss = "energy"``): cross-entropy + the energy loss of Rao et
  al. 2023 (1 - the share of the Grad-CAM mass inside the lesion), the
  heatmap from ``compute_cam`` on the step's own training-mode forward pass,
  differentiated by ``jax.grad`` (second order);
* **PyTorch plain** (for reference) and **PyTorch guided**: the same loss the way pytorch-grad-cam users must write
  it: a forward hook keeps the layer's activations, ``torch.autograd.grad(...,
  create_graph=True)`` gives their gradient as part of the graph, and
  ``loss.backward()`` differentiates through it (double backward), eager,
  with the threads set by ``--threads``.

Compilation (jit) is timed separately. After warm-up the three alternate
``--rounds`` times, ``--steps`` steps each; medians and ranges of the step
times and of the per-round ratios are printed (this shared machine's speed
drifts over minutes: a ratio compares neighbouring measurements). PyTorch is
a benchmark-only dependency: mammojax never imports it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

from bench_train import timed_steps  # scripts/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parents[1]
TORCH_LAYERS = {"stage1": "layer1", "stage2": "layer2", "stage3": "layer3", "stage4": "layer4"}


def lesion_masks(batch_size: int, shape: tuple[int, int]):
    """Discs on the even films (label 1), none on the odd ones (label 0): ``(masks bool, labels)``."""
    import numpy as np

    height, width = shape
    rows, cols = np.mgrid[:height, :width]
    masks = np.zeros((batch_size, height, width), bool)
    for i in range(0, batch_size, 2):
        masks[i] = (rows - height * (0.3 + 0.05 * i)) ** 2 + (cols - width * 0.4) ** 2 <= (0.08 * height) ** 2
    labels = (np.arange(batch_size) % 2 == 0).astype(np.int32)
    return masks, labels


def build_jax(args, guided: bool):
    """A compiled mammojax step and its inputs; returns ``(run(n) -> seconds, compile_s)``."""
    import jax
    import numpy as np

    from mammojax import models
    from mammojax.config import base_config
    from mammojax.train import sharding
    from mammojax.train.losses import CamGuidance
    from mammojax.train.optim import make_optimizer
    from mammojax.train.state import create_train_state, jit_steps

    mesh = sharding.make_mesh(jax.devices()[:1])
    tx, _ = make_optimizer(base_config().optim, steps_per_epoch=1, epochs=1)
    model = models.create_model("resnet18")
    state = create_train_state(model, tx, rng=jax.random.key(0), image_size=args.image_size, mesh=mesh)
    guidance = CamGuidance(model=model, weight=1.0, loss="energy", method="gradcam", layer=args.layer) \
        if guided else None
    train_step = jit_steps(state, mesh, label_smoothing=0.0, guidance=guidance)
    rng = np.random.default_rng(0)
    masks, labels = lesion_masks(args.batch_size, args.image_size)
    local = {"image": rng.normal(size=(args.batch_size, *args.image_size, 1)).astype(np.float32), "label": labels}
    if guided:
        local["lesion_mask"] = masks
    batch = sharding.global_batch(local, mesh)
    return timed_steps(train_step, state, batch, warmup=args.warmup)


def build_torch(args, guided: bool = True):
    """The guided step in PyTorch eager (hooks + create_graph double backward), or with
    ``guided=False`` its plain cross-entropy step; returns ``run(n) -> seconds``."""
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(REPO / "tests"))
    from torch_reference import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=2, in_channels=1).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    masks, labels = lesion_masks(args.batch_size, args.image_size)
    masks = torch.from_numpy(masks).float()
    labels = torch.from_numpy(labels).long()
    valid = (masks.sum(dim=(1, 2)) > 0).float()
    images = torch.randn(args.batch_size, 1, *args.image_size)
    kept = {}
    getattr(model, TORCH_LAYERS[args.layer]).register_forward_hook(lambda module, inputs, out: kept.update(a=out))

    def plain_step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = model(images)
        activations = kept["a"]
        # Grad-CAM of class 1, kept in the graph so the loss can be differentiated through it.
        (grads,) = torch.autograd.grad(logits[:, 1].sum(), activations, create_graph=True)
        cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1))
        up = F.interpolate(cam[:, None], size=tuple(args.image_size), mode="bilinear", align_corners=False)[:, 0]
        total = up.sum(dim=(1, 2))
        inside = (up * masks).sum(dim=(1, 2))
        energy = torch.where(total > 1e-12, 1.0 - inside / total.clamp_min(1e-12), torch.ones_like(total))
        cam_loss = (energy * valid).sum() / valid.sum().clamp_min(1.0)
        loss = F.cross_entropy(logits, labels) + 1.0 * cam_loss
        loss.backward()
        optimizer.step()

    def run(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            (step if guided else plain_step)()
        return time.perf_counter() - start

    run(args.warmup)
    return run


def cpu_model() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "lscpu: not available"
    wanted = [line for line in lines if line.startswith(("Model name", "CPU family", "Model:"))]
    flags = next((line for line in lines if line.startswith("Flags")), "")
    return "; ".join(" ".join(line.split()) for line in wanted) + f"; AVX-512: {'yes' if 'avx512f' in flags else 'no'}"


def _spread(values) -> str:
    values = sorted(values)
    return f"{median(values):.3f} (range {values[0]:.3f}-{values[-1]:.3f})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", default="96", help="S or HxW")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--layer", default="stage3", choices=list(TORCH_LAYERS), help="the Grad-CAM layer")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 px, 1 warm-up, 2 timed steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size, args.warmup, args.steps, args.rounds = "64", 1, 2, 2
    from mammojax import runtime

    runtime.setup(compilation_cache=False)  # cold compile on purpose: the compile time is part of the report
    from mammojax.data.preprocess import input_shape
    from mammojax.errors import MammojaxError

    try:
        args.image_size = input_shape(args.image_size, name="--image-size")
    except MammojaxError as err:
        parser.error(str(err))
    import torch

    # XLA's CPU client has no thread-count flag: it uses every core, so torch gets the same number.
    torch.set_num_threads(args.threads)
    height, width = args.image_size
    print(cpu_model())
    print(f"training step, 1-channel ResNet-18, batch {args.batch_size}, {height}x{width}, Adam, energy loss on "
          f"Grad-CAM {args.layer} ({args.batch_size // 2 + args.batch_size % 2} of {args.batch_size} films "
          f"annotated), {args.threads} torch threads; {args.rounds} interleaved rounds of {args.steps} steps "
          f"each after {args.warmup} warm-up", flush=True)
    plain, plain_compile = build_jax(args, guided=False)
    guided, guided_compile = build_jax(args, guided=True)
    torch_guided = build_torch(args)
    torch_plain = build_torch(args, guided=False)
    rows = []
    for index in range(args.rounds):
        times = [run(args.steps) / args.steps for run in (plain, guided, torch_guided, torch_plain)]
        rows.append(times)
        print(f"  round {index + 1}: JAX plain {times[0]:.3f} s, JAX guided {times[1]:.3f} s, "
              f"PyTorch guided {times[2]:.3f} s, PyTorch plain {times[3]:.3f} s per step; "
              f"guided/plain {times[1] / times[0]:.2f}, PyTorch/JAX guided {times[2] / times[1]:.2f}", flush=True)
    plain_s, guided_s, torch_s, torch_plain_s = zip(*rows)
    print(f"JAX plain step:      {_spread(plain_s)} s   (compile {plain_compile:.1f} s, not included)")
    print(f"JAX guided step:     {_spread(guided_s)} s   (compile {guided_compile:.1f} s, not included)")
    print(f"PyTorch guided step: {_spread(torch_s)} s   (eager, hooks + create_graph double backward)")
    print(f"PyTorch plain step:  {_spread(torch_plain_s)} s   (eager, for reference)")
    print(f"JAX guided / JAX plain:         {_spread([r[1] / r[0] for r in rows])} (target <= 2)")
    print(f"PyTorch guided / PyTorch plain: {_spread([r[2] / r[3] for r in rows])}")
    print(f"PyTorch guided / JAX guided:    {_spread([r[2] / r[1] for r in rows])} (> 1: JAX faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
