"""Throughput at scale (issue 17): metric fetching in the training loop, evaluation over devices.

    python scripts/bench_throughput.py            # 96 px, batch 16, 3 rounds of 20 timed steps; 128 films scored (~4 min)
    python scripts/bench_throughput.py --quick    # smoke run: 64 px, batch 8, 1 round of 10 steps; 32 films

Two measurements, both through the project's own code paths:

* **Training steps/s** of the core loop, :func:`mammojax.train.loop.fit`,
  with the loss and gradient norm fetched to the host every step
  (``train.log_every_steps = 1``) against every K steps (K: the config's
  default, or ``--every``). Both runs train the same 1-channel ResNet-18 on
  the same batches of synthetic phantoms (``mammojax.data.synthetic``) from
  the same seed, so they must also end with bit-identical parameters; the
  script checks it. Epoch 1 (``--warmup`` steps, rounded up to a multiple
  of K; the compile is in it) is not timed: the span starts when the loop
  asks for epoch 2's batches, once every warm-up step is done, and ends when
  the last step's state is ready; checkpoints fall outside it (per-step
  ones are off), so only stepping and fetching are timed. The two settings
  alternate (ABBA) for ``--rounds`` rounds (this shared machine drifts by
  +-15% over minutes); the median of each is reported.
* **Evaluation images/s** of :class:`mammojax.scoring.Scorer` (what
  ``mammojax eval`` and ``predict`` score with: padded batches split over
  every local device) built from the checkpoint the last training run wrote,
  on 1 and on 8 forced host devices. The device count is fixed when JAX
  starts, so each count runs in a subprocess of this script with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=N``. Both score the same
  films; the script checks that their probabilities agree to 1e-5.

What to expect on a CPU: fetching less often buys nothing. The host and the
"device" are the same cores and the fetch is a copy of two scalars, so there
is no accelerator left idle while the host waits; on the loaded 2-core
project machine the every-K runs went at 0.80-1.04x the every-step rate
(README, "Speed on the 2-core CPU"; possibly the host thread, running
ahead, competes with XLA's two compute threads). The every-K fetch is for accelerators,
where the host queues steps ahead instead of waiting for each. Likewise,
forced host devices share the same cores, so 8 of them split each batch into
8 small ones on 2 cores and are no faster than one: on a CPU that row checks
that the sharded scorer runs and gives the same probabilities, not a
speed-up. Run it on a quiet machine; the load average is printed with the
figures.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO))

AGREEMENT = 1e-5  # largest allowed |p(1 device) - p(8 devices)|


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=None, help="default 96")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch (default 16)")
    parser.add_argument("--every", type=int, default=None,
                        help="K, steps between metric fetches (default: the config's train.log_every_steps)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (epoch 1), rounded up to a multiple of K")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run, rounded up to whole epochs")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved (every step, every K) rounds")
    parser.add_argument("--films", type=int, default=None, help="synthetic films, for training and scoring")
    parser.add_argument("--eval-batch-size", type=int, default=None, help="default 32")
    parser.add_argument("--eval-repeats", type=int, default=None, help="timed passes over the films per device count")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 8], help="forced host device counts to score on")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 px, batch 8, 1 round, 32 films")
    parser.add_argument("--eval-worker", type=int, default=None, help=argparse.SUPPRESS)  # internal: N devices
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--films-file", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"image_size": (64, 96), "batch_size": (8, 16), "warmup": (10, 10), "steps": (10, 20),
                "rounds": (1, 3), "films": (32, 128), "eval_batch_size": (16, 32), "eval_repeats": (1, 3)}
    for name, (small, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    return args


def round_up(value: int, multiple: int) -> int:
    return max(multiple, -(-value // multiple) * multiple)


def synthetic_films(count: int, config, seed: int):
    """``(images (N, S, S, 1) float32, labels (N,))``: phantoms preprocessed as files are for the model."""
    import numpy as np

    from mammojax.data.preprocess import preprocess_image
    from mammojax.data.synthetic import make_phantom

    size = int(config.data.image_size)
    images, labels = [], []
    for index in range(count):
        laterality, view = ("L", "R")[index % 2], ("CC", "MLO")[index // 2 % 2]
        label = index // 4 % 2  # both classes, both sides and both views in every 8 films
        pixels, _, _ = make_phantom(np.random.default_rng([seed, index]), size=size, positive=bool(label),
                                    laterality=laterality, view=view)
        images.append(preprocess_image(pixels, image_size=size, orient=bool(config.data.orient),
                                       laterality=laterality, crop_breast=bool(config.data.crop_breast)).image)
        labels.append(label)
    return np.stack(images), np.asarray(labels, np.int32)


def training_config(args, epochs: int):
    from mammojax.config import base_config

    config = base_config()
    config.data.dataset = "synthetic"
    config.data.image_size = args.image_size
    config.train.batch_size = args.batch_size
    config.train.epochs = epochs
    # No checkpoint inside the timed span: each save fetches the metrics first
    # and would blur the difference between the two fetch intervals. The last
    # epoch's checkpoint comes after the span ends.
    config.train.checkpoint_every_steps = 0
    config.train.checkpoint_every_minutes = 0.0
    config.train.checkpoint_every_epochs = epochs
    return config


def time_fit(config, workdir: Path, images, labels, *, epoch_steps: int):
    """``(steps/s, final params)`` of one :func:`fit` run; epoch 1 is the untimed warm-up.

    The span starts when the loop asks for epoch 2's batches (epoch ends fetch
    every pending metric, so the warm-up steps are all done; a loop that
    prefetched batches within an epoch would not move it) and ends when the
    last step's state is ready.
    """
    import jax
    import numpy as np

    from mammojax.train.checkpointing import run_identity
    from mammojax.train.loop import Feed, fit

    batch = int(config.train.batch_size)
    marks = {}

    def prepare(run):
        def batches(state, epoch, start_step, memo):
            if epoch == 1:
                jax.block_until_ready(state)
                marks["start"] = time.perf_counter()
            for step in range(epoch * epoch_steps + start_step, (epoch + 1) * epoch_steps):
                rows = np.arange(step * batch, (step + 1) * batch) % len(images)
                yield {"image": images[rows], "label": labels[rows]}

        def validate(state):
            jax.block_until_ready(state)  # the last step's update, not only its loss
            marks["end"] = time.perf_counter()
            # No validation set: the figure is the loop's. tau 0.5, T 1 go into best/.
            return {"auc": float("nan"), "tau": 0.5, "temperature": 1.0}

        return Feed(steps_per_epoch=epoch_steps, batches=batches, validate=validate,
                    class_weights=np.ones(int(config.model.num_classes), np.float32), select_epoch=False)

    with contextlib.redirect_stderr(io.StringIO()):  # the progress bar; its cost is still paid
        summary = fit(config, workdir, prepare, identity=run_identity(config))
    timed = (int(config.train.epochs) - 1) * epoch_steps
    return timed / (marks["end"] - marks["start"]), summary["state"].params


def measure_training(args, images, labels, scratch: Path):
    """Interleaved rounds of fit with K=1 and K=every; returns the result dict and the last checkpoint."""
    import jax
    import numpy as np

    every = args.every
    epoch_steps = round_up(args.warmup, every)  # a multiple of K: every epoch ends on a fetch either way
    epochs = 1 + -(-args.steps // epoch_steps)
    config = training_config(args, epochs)
    rates = {1: [], every: []}
    params = {}
    checkpoint = None
    for index in range(args.rounds):
        # ABBA order: a machine that speeds up or slows down over the run favours neither setting.
        for k in ((1, every) if index % 2 == 0 else (every, 1)):
            config.train.log_every_steps = k
            workdir = scratch / f"train_k{k}_round{index}"
            rate, params[k] = time_fit(config, workdir, images, labels, epoch_steps=epoch_steps)
            rates[k].append(rate)
            checkpoint = workdir / "best"
            print(f"  round {index + 1}: metrics every {k:>2} step(s): {rate:6.2f} steps/s", flush=True)
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(params[1]),
                                                     jax.tree_util.tree_leaves(params[every])))
    result = {"every": every, "warmup_steps": epoch_steps, "timed_steps": (epochs - 1) * epoch_steps,
              "rounds": args.rounds,
              "steps_per_s_every_step": statistics.median(rates[1]),
              f"steps_per_s_every_{every}": statistics.median(rates[every]),
              "rounds_every_step": rates[1], f"rounds_every_{every}": rates[every],
              "same_parameters": same, "devices": jax.device_count(), "device": jax.devices()[0].device_kind}
    return result, checkpoint


def eval_worker(args) -> int:
    """In a subprocess: scores the films on ``--eval-worker`` forced host devices, prints a JSON line."""
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.eval_worker}").strip()
    os.environ["JAX_PLATFORMS"] = "cpu"
    from mammojax import runtime

    runtime.setup()  # read when JAX starts: the flags above are set first
    import jax
    import numpy as np

    from mammojax.benchmark import time_fn
    from mammojax.scoring import Scorer

    if jax.local_device_count() != args.eval_worker:
        raise SystemExit(f"asked for {args.eval_worker} host devices, JAX has {jax.local_device_count()}")
    films = np.load(args.films_file)
    scorer = Scorer.from_checkpoint(args.checkpoint, batch_size=args.eval_batch_size)
    # First call compiles (or loads the persistent cache); one more warm pass, then the timed ones.
    timing = time_fn(lambda: scorer.probabilities(films), repeats=args.eval_repeats, warmup=1)
    logits = scorer.logits(films)
    np.save(args.out, scorer.probability_of(logits))
    print(json.dumps({"devices": jax.local_device_count(), "batch_size": scorer.batch_size,
                      "first_call_s": timing.compile_s, "images_per_s": len(films) / (timing.median_ms / 1000)}))
    return 0


def measure_eval(args, checkpoint: Path, films, scratch: Path) -> dict:
    import numpy as np

    films_file = scratch / "films.npy"
    np.save(films_file, films)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    rows, probabilities = [], {}
    for devices in args.devices:
        out = scratch / f"probabilities_{devices}.npy"
        command = [sys.executable, str(Path(__file__).resolve()), "--eval-worker", str(devices),
                   "--checkpoint", str(checkpoint), "--films-file", str(films_file), "--out", str(out),
                   "--eval-batch-size", str(args.eval_batch_size), "--eval-repeats", str(args.eval_repeats)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"evaluation on {devices} devices failed:\n{done.stderr[-3000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        probabilities[devices] = np.load(out)
        print(f"  {devices} device(s): {row['images_per_s']:7.1f} images/s (batch {row['batch_size']}, "
              f"first call {row['first_call_s']:.1f} s)", flush=True)
    base = probabilities[args.devices[0]]
    diff = max(float(np.max(np.abs(p - base))) for p in probabilities.values())
    return {"films": len(films), "eval_batch_size": args.eval_batch_size, "rows": rows,
            "max_probability_diff": diff, "agree": diff <= AGREEMENT,
            "probability_range": [float(base.min()), float(base.max())]}


def print_table(train: dict, evaluation: dict, args) -> None:
    k = train["every"]
    one, many = train["steps_per_s_every_step"], train[f"steps_per_s_every_{k}"]
    print(f"\ntraining, mammojax.train.loop.fit: 1-channel ResNet-18, {args.image_size} px, batch {args.batch_size}, "
          f"{train['devices']} {train['device']} device(s); median of {train['rounds']} rounds of "
          f"{train['timed_steps']} timed steps after {train['warmup_steps']}")
    print(f"{'metrics fetched':<22}{'steps/s':>9}{'images/s':>10}")
    print(f"{'every step':<22}{one:>9.2f}{one * args.batch_size:>10.1f}")
    print(f"{f'every {k} steps':<22}{many:>9.2f}{many * args.batch_size:>10.1f}")
    print(f"every {k} / every step: {many / one:.3f}; same parameters after both: {train['same_parameters']}")
    print(f"\nevaluation, Scorer.from_checkpoint(...).probabilities: {evaluation['films']} films, "
          f"{args.image_size} px, batch {evaluation['eval_batch_size']}")
    print(f"{'host devices':<22}{'images/s':>10}")
    for row in evaluation["rows"]:
        print(f"{row['devices']:<22}{row['images_per_s']:>10.1f}")
    low, high = evaluation["probability_range"]
    print(f"max |probability difference| {evaluation['max_probability_diff']:.2e} "
          f"({'agree' if evaluation['agree'] else 'DISAGREE'} to {AGREEMENT:g}; probabilities span {low:.3f}-{high:.3f})")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.eval_worker is not None:
        return eval_worker(args)
    from mammojax import runtime

    runtime.setup()  # compiles are excluded from every figure; the persistent cache only saves waiting
    load_before = os.getloadavg()[0]  # other jobs on the cores skew every figure: reported with them
    from mammojax.config import base_config

    config = base_config()
    config.data.image_size = args.image_size
    args.every = args.every or int(config.train.log_every_steps)
    images, labels = synthetic_films(args.films, config, int(config.seed))
    scratch = Path(tempfile.mkdtemp(prefix="mammojax-throughput-"))
    try:
        print(f"training: metrics every step vs every {args.every} steps", flush=True)
        train, checkpoint = measure_training(args, images, labels, scratch)
        print(f"evaluation on {' and '.join(map(str, args.devices))} forced host device(s)", flush=True)
        evaluation = measure_eval(args, checkpoint, images, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    load = [load_before, os.getloadavg()[0]]
    print_table(train, evaluation, args)
    print(f"1-minute load average before / after: {load[0]:.1f} / {load[1]:.1f} on {os.cpu_count()} cpus")
    print(json.dumps({"image_size": args.image_size, "batch_size": args.batch_size, "cpus": os.cpu_count(),
                      "load_average": load,
                      "train": train, "eval": evaluation}))
    return 0 if evaluation["agree"] and train["same_parameters"] else 1


if __name__ == "__main__":
    sys.exit(main())
