"""Is the input pipeline fast enough to keep training busy?

Measures, per image size, in images/s:

* decode: ``prepare_dataset`` (read + preprocess into the prepared TFDS dataset, done once
  per dataset; ``--workers`` processes);
* train pipeline: ``train_batches`` from the prepared dataset, with the configured augmentation;
* eval pipeline: ``eval_batches`` from the prepared dataset;
* train step: the 1-channel ResNet-18 at batch 16 (the jitted step of
  ``mammojax.train.state`` when present, else a minimal Adam step here),
  after a separately timed compile;

and prints the ratio train pipeline / train step (target: at least 2x, so the
pipeline is never what the accelerator waits for).

    python scripts/bench_pipeline.py                  # synthetic phantoms, 224 and 512
    python scripts/bench_pipeline.py --data mias      # the mini-MIAS archive in ../shared
    python scripts/bench_pipeline.py --quick          # smoke run: tiny sizes and counts

Run it on a quiet machine (never beside another benchmark on the 2-core boxes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIAS_ARCHIVE = REPO.parent / "shared" / "data" / "mias" / "all-mias-dev.tar.gz"
if str(REPO) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("synthetic", "mias"), default="synthetic")
    parser.add_argument("--mias-path", default=str(MIAS_ARCHIVE), help="mini-MIAS archive or folder")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="image sizes (default 224 512)")
    parser.add_argument("--count", type=int, default=None, help="synthetic images (default 128)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 16")
    parser.add_argument("--pipeline-images", type=int, default=None,
                        help="images timed per pipeline measurement (default 512)")
    parser.add_argument("--train-steps", type=int, default=None, help="timed train steps (default 5)")
    parser.add_argument("--out", default=None, help="where the prepared datasets go (default: a temporary folder)")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: every core)")
    parser.add_argument("--skip-train-step", action="store_true", help="measure the pipelines only")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: sizes 32 64, 16 images, batch 4, 2 train steps")
    args = parser.parse_args(argv)
    quick = args.quick
    args.sizes = args.sizes or ([32, 64] if quick else [224, 512])
    args.count = args.count or (16 if quick else 128)
    args.batch_size = args.batch_size or (4 if quick else 16)
    args.pipeline_images = args.pipeline_images or (32 if quick else 512)
    args.train_steps = args.train_steps or (2 if quick else 5)
    return args


def load_records(args, scratch: Path):
    from mammojax.data.records import load_dataset

    if args.data == "mias":
        loaded = load_dataset("mias", args.mias_path, task="abnormal", cache_dir=str(scratch / "mias"))
    else:
        phantom_size = max(64, max(args.sizes))
        loaded = load_dataset("synthetic", str(scratch / "synthetic"), count=args.count,
                              size=phantom_size, seed=0)
    return list(loaded.records)


def time_decode(records, out: Path, size: int, workers: int | None):
    from mammojax.data.prepared import PixelOptions
    from mammojax.data.preparation import prepare_dataset

    start = time.perf_counter()
    prepared, _ = prepare_dataset(records, out, dataset="bench", class_names=("normal", "abnormal"),
                                  options=PixelOptions(image_shape=(size, size)), workers=workers, progress=False)
    return prepared, len(records) / (time.perf_counter() - start)


def time_train_pipeline(cache, config, images_wanted: int) -> float:
    """Steady-state images/s; the first batch (graph building, thread start) is not timed."""
    from mammojax.data.pipeline import train_batches

    batch = int(config.train.batch_size)
    counted, epoch, start = 0, 0, None
    while counted < images_wanted:
        for item in train_batches(cache, config, epoch=epoch):
            if start is None:
                start = time.perf_counter()
                continue
            counted += len(item["label"])
            if counted >= images_wanted:
                break
        epoch += 1
    return counted / (time.perf_counter() - start) if counted else float("nan")


def time_eval_pipeline(cache, batch_size: int, images_wanted: int) -> float:
    from mammojax.data.pipeline import eval_batches

    counted, start = 0, time.perf_counter()
    while counted < images_wanted:
        for item in eval_batches(cache, batch_size):
            counted += int(item["mask"].sum())
    return counted / (time.perf_counter() - start)


def time_train_step(size: int, batch_size: int, steps: int) -> tuple[float, float, str]:
    """(images/s, compile seconds, which step) for the 1-channel ResNet-18."""
    import jax
    import numpy as np

    from mammojax import models

    model = models.create_model("resnet18", num_classes=2)
    rng = np.random.default_rng(0)
    batch = {"image": rng.standard_normal((batch_size, size, size, 1)).astype(np.float32),
             "label": rng.integers(0, 2, batch_size).astype(np.int32)}
    step, state, extra, which = _package_step(model, size)
    if step is None:
        step, state, extra, which = _minimal_step(model, size)
    batch = jax.device_put(batch)
    start = time.perf_counter()
    state, metrics = step(state, batch, *extra)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch, *extra)
    jax.block_until_ready(metrics)
    return steps * batch_size / (time.perf_counter() - start), compile_s, which


def _package_step(model, size: int):
    try:
        import jax
        import jax.numpy as jnp

        from mammojax.train.optim import make_optimizer
        from mammojax.train.sharding import make_mesh, replicated
        from mammojax.train.state import create_train_state, jit_steps
    except ImportError:
        return None, None, (), ""
    from mammojax.config import base_config

    mesh = make_mesh(jax.devices()[:1])
    tx, _ = make_optimizer(base_config().optim, steps_per_epoch=100, epochs=1)
    state = create_train_state(model, tx, rng=jax.random.key(0), image_size=size, mesh=mesh)
    train_step = jit_steps(state, mesh, label_smoothing=0.0)
    weights = jax.device_put(jnp.ones(2, jnp.float32), replicated(mesh))
    return train_step, state, (weights,), "mammojax.train.state"


def _minimal_step(model, size: int):
    import jax
    import optax

    variables = models_init(model, size)
    tx = optax.adam(1e-4)
    state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))

    def loss_fn(params, batch_stats, batch):
        (logits, _), updates = model.apply({"params": params, "batch_stats": batch_stats},
                                           batch["image"], train=True, mutable=["batch_stats"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        return loss, updates["batch_stats"]

    @jax.jit
    def step(state, batch):
        params, batch_stats, opt_state = state
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

    return step, state, (), "minimal Adam step (script)"


def models_init(model, size: int):
    import jax

    from mammojax import models

    return models.init_variables(model, jax.random.key(0), size)


def print_table(rows, batch_size: int) -> None:
    header = (f"{'size':>5} {'decode':>9} {'train pipe':>11} {'eval pipe':>10} "
              f"{'train step':>11} {'compile s':>10} {'pipe/train':>11}")
    print(f"\nimages/s (train step: 1-channel ResNet-18, batch {batch_size}, steady state)")
    print(header)
    print("-" * len(header))
    for row in rows:
        step = row.get("train_step")
        if step:
            ratio = row["train_pipe"] / step
            tail = (f"{step:>11.2f} {row['compile']:>10.1f} {ratio:>10.1f}x"
                    f"{'  ok' if ratio >= 2 else '  below 2x'}")
        else:
            tail = f"{'-':>11} {'-':>10} {'-':>11}"
        print(f"{row['size']:>5} {row['decode']:>9.1f} {row['train_pipe']:>11.1f} "
              f"{row['eval_pipe']:>10.1f} {tail}")


def main(argv=None) -> int:
    args = parse_args(argv)
    from mammojax import runtime

    runtime.setup(compilation_cache=False)  # time real compiles, not cache hits
    import jax

    from mammojax.config import base_config

    scratch = Path(tempfile.mkdtemp(prefix="mammojax-bench-"))
    prepared_root = Path(args.out) if args.out else scratch / "prepared"
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, cpus: {os.cpu_count()}, "
          f"data: {args.data}", file=sys.stderr)
    try:
        records = load_records(args, scratch)
        print(f"{len(records)} images; sizes {args.sizes}; batch {args.batch_size}", file=sys.stderr)
        config = base_config()
        config.train.batch_size = args.batch_size
        rows = []
        for size in args.sizes:
            cache, decode = time_decode(records, prepared_root / f"{size}px", size, args.workers)
            row = {"size": size, "decode": decode,
                   "train_pipe": time_train_pipeline(cache, config, args.pipeline_images),
                   "eval_pipe": time_eval_pipeline(cache, args.batch_size, args.pipeline_images)}
            if not args.skip_train_step:
                row["train_step"], row["compile"], which = time_train_step(
                    size, args.batch_size, args.train_steps)
                print(f"size {size}: train step from {which}", file=sys.stderr)
            rows.append(row)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # phantoms, unpacked MIAS, default caches
    print_table(rows, args.batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
