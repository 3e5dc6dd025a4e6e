"""SIGKILL a training run at random moments; the resumed result must be bit-identical.

Trains a small config (ResNet-18 at 32 px on synthetic phantoms, checkpoint
every 2 steps) once without interruption, then again in a second workdir,
SIGKILLing the process at ``--kills`` seeded random moments and restarting the
same command each time, and finally letting it finish. Prints the kill times,
the steps each attempt reached, then compares:

- the final training state (params, BN statistics, Adam moments, step, rng)
  leaf by leaf, bitwise;
- the per-epoch summaries in metrics.jsonl (train loss, validation AUC...);
- the ``best/`` inference checkpoint's variables, bitwise;

and checks after every kill that each checkpoint directory orbax exposes
(numeric step dirs) is complete and restorable (orbax's temporary dirs are
listed but ignored), and that every training step is logged exactly once.

    python scripts/kill_resume.py                       # 5 kills, seed 0
    python scripts/kill_resume.py --kills 8 --seed 3 --epochs 4

Exit status 0 when everything matches. Keep it short on shared machines: each
attempt pays the JAX start-up and compile time (~10 s).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # train_support: the test suite's train helpers
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from train_support import checkpoint_steps, restore_state, run_train, start_train  # noqa: E402

from mammojax.workdir import Workdir  # noqa: E402


def logged_records(workdir: Path) -> list[dict]:
    path = Workdir(workdir).metrics
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            records.append({"kind": "unparsable"})  # a line cut by the kill
    return records


def epoch_summaries(workdir: Path) -> list[dict]:
    """Epoch records without wall-clock fields (those legitimately differ)."""
    skip = ("time", "seconds", "elapsed", "wall", "per_s", "throughput")
    return [{k: v for k, v in r.items() if not any(s in k for s in skip)}
            for r in logged_records(workdir) if r.get("kind") == "epoch"]


def audit_checkpoints(workdir: Path) -> tuple[list[int], list[str], list[str]]:
    """(numeric steps, other entries, problems): every numeric step must restore."""
    directory = Workdir(workdir).checkpoints
    if not directory.exists():
        return [], [], []
    others = sorted(p.name for p in directory.iterdir() if not p.name.isdigit())
    problems = []
    steps = checkpoint_steps(workdir)
    for step in steps:
        try:
            restore_state(workdir, step)
        except Exception as e:  # a half-written checkpoint exposed under its final name
            problems.append(f"checkpoints/{step}: {type(e).__name__}: {str(e)[:120]}")
    return steps, others, problems


def wait_first_metrics_write(proc, workdir: Path) -> float:
    """Monotonic time at which this process first wrote metrics.jsonl (or ended)."""
    path = Workdir(workdir).metrics
    before = path.stat().st_mtime_ns if path.exists() else 0
    while proc.poll() is None:
        if path.exists() and path.stat().st_mtime_ns != before:
            break
        time.sleep(0.01)
    return time.monotonic()


def compare_trees(a, b) -> tuple[int, int]:
    """(number of leaves, number of leaves that differ bitwise)."""
    import jax
    import numpy as np

    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    if tree_a != tree_b:
        return len(leaves_a), len(leaves_a)
    differ = sum(1 for x, y in zip(leaves_a, leaves_b)
                 if np.asarray(x).tobytes() != np.asarray(y).tobytes() or np.shape(x) != np.shape(y))
    return len(leaves_a), differ


def best_variables(workdir: Path):
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    from mammojax.checkpoint import VARIABLES_DIR

    with ocp.StandardCheckpointer() as ckptr:
        return jax.tree_util.tree_map(np.asarray, ckptr.restore(Workdir(workdir).best / VARIABLES_DIR))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=4, help="4 steps per epoch")
    parser.add_argument("--workdir", help="keep the two runs here (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    overrides = (f"--config.train.epochs={args.epochs}",)
    final_step = 4 * args.epochs
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="mammojax-kill-"))
    full, killed = root / "full", root / "killed"
    for d in (full, killed):
        shutil.rmtree(d, ignore_errors=True)
    rng = random.Random(args.seed)
    failures: list[str] = []

    proc = start_train(full, *overrides)
    first_write = wait_first_metrics_write(proc, full)
    _, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        print(err[-3000:])
        return 2
    training_s = time.monotonic() - first_write
    print(f"uninterrupted run: training phase {training_s:.1f} s after start-up, "
          f"checkpoints kept {checkpoint_steps(full)}")

    # Each kill lands a seeded random time after the attempt starts writing
    # metrics (start-up and compile take most of an attempt on a busy CPU, and
    # a kill there would test nothing): anywhere in the remaining training,
    # checkpoint writes included.
    print(f"{'attempt':>7} {'kill at s':>9} {'after 1st log':>13} {'outcome':>9} {'ckpt steps after':<22} "
          f"{'last step logged':>16} other entries")
    for attempt in range(1, args.kills + 1):
        delay = rng.uniform(0.0, 0.9) * training_s
        proc = start_train(killed, *overrides)
        begun = time.monotonic()
        first_write = wait_first_metrics_write(proc, killed)
        while proc.poll() is None and time.monotonic() - first_write < delay:
            time.sleep(0.01)
        outcome = "finished"
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            outcome = "killed"
        proc.communicate()
        steps, others, problems = audit_checkpoints(killed)
        failures += [f"after kill {attempt}: {p}" for p in problems]
        train_steps = [r["step"] for r in logged_records(killed) if r.get("kind") == "train"]
        print(f"{attempt:>7} {time.monotonic() - begun:>9.2f} {delay:>13.2f} {outcome:>9} {str(steps):<22} "
              f"{(train_steps[-1] if train_steps else 0):>16} {others or ''}", flush=True)
        if outcome == "finished":
            break
    result = run_train(killed, *overrides, timeout=600)
    if result.returncode != 0:
        print(result.stderr[-3000:])
        return 2
    kept_full, kept_killed = checkpoint_steps(full), checkpoint_steps(killed)
    print(f"final resumed attempt: exit 0; checkpoints kept: uninterrupted {kept_full}, killed {kept_killed}"
          + ("" if kept_full == kept_killed else "  <- retained sets differ (reported, not a failure:"
             " resume uses the latest, which matches)"))

    n, differ = compare_trees(restore_state(full, final_step), restore_state(killed, final_step))
    print(f"final train state (step {final_step}): {n} leaves, {differ} differ bitwise")
    if differ:
        failures.append(f"{differ} of {n} state leaves differ")
    n, differ = compare_trees(best_variables(full), best_variables(killed))
    print(f"best/ inference variables: {n} leaves, {differ} differ bitwise")
    if differ:
        failures.append(f"{differ} of {n} best/ leaves differ")
    epochs_full, epochs_killed = epoch_summaries(full), epoch_summaries(killed)
    for a, b in zip(epochs_full, epochs_killed):
        keys = [k for k in ("epoch", "train_loss", "val_loss", "val_auc") if k in a]
        pairs = ", ".join(f"{k} {a[k]!r}/{b.get(k)!r}" for k in keys if k != "epoch")
        print(f"epoch {a.get('epoch')}: {pairs} (uninterrupted/killed)")
    if epochs_full != epochs_killed:
        failures.append("epoch summaries differ")
    train_steps = [r["step"] for r in logged_records(killed) if r.get("kind") == "train"]
    if train_steps != list(range(1, final_step + 1)):
        failures.append(f"train steps logged {train_steps}")
    print(f"train steps logged once each: {train_steps == list(range(1, final_step + 1))}")
    if not args.workdir:
        shutil.rmtree(root, ignore_errors=True)
    for failure in failures:
        print("FAIL", failure)
    print("RESULT", "identical" if not failures else "MISMATCH")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
