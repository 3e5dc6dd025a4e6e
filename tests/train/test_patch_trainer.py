"""The patch trainer on the core loop: exact resume after SIGKILL, 8 devices = 1 device, the best/ it writes.

Real ``mammojax train`` runs of configs/mias_smoke.py on synthetic phantoms at
32 px (16 px patches, batch 8, 2 epochs of a few steps, mining in the second).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from train_support import REPO, checkpoint_steps, restore_state, subprocess_env

pytestmark = pytest.mark.slow

PATCH_RUN = ("--config.data.dataset=synthetic", "--config.data.task=default", "--config.data.synthetic_count=48",
             "--config.data.image_size=32", "--config.patch.size=16", "--config.patch.window_stride=8",
             "--config.train.batch_size=8", "--config.train.checkpoint_every_steps=2",
             "--config.train.log_every_steps=1", "--config.optim.lr=1e-4")


def patch_command(workdir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "mammojax", "train", "--config", str(REPO / "configs" / "mias_smoke.py"),
            "--workdir", str(workdir), *PATCH_RUN, *overrides]


def start(workdir: Path, *overrides: str, devices: int = 1) -> subprocess.Popen:
    env = subprocess_env(**({"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"} if devices > 1 else {}))
    return subprocess.Popen(patch_command(workdir, *overrides), env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen, timeout: float = 400) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out + err


def records(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def first_epoch_end(workdir: Path) -> int | None:
    """The step of a run's first epoch record, once written (complete lines only: the run may be writing)."""
    path = workdir / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    return next((json.loads(line)["step"] for line in lines
                 if line.endswith("\n") and json.loads(line)["kind"] == "epoch"), None)


def best_variables(workdir: Path) -> dict:
    from mammojax.checkpoint import load_checkpoint

    return load_checkpoint(workdir).variables


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run; one SIGKILLed right after a mid-epoch checkpoint of its mining epoch, then rerun;
    and the uninterrupted run again on 8 forced host devices."""
    root = tmp_path_factory.mktemp("patch_runs")
    full, killed, eight = root / "full", root / "killed", root / "eight"
    # The three runs start together (threads read the pipes of two); the victim learns the length of an
    # epoch from its own log, so it need not wait for the uninterrupted run.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    eight_run = pool.submit(lambda: finish(start(eight, devices=8)))
    full_run = pool.submit(lambda: finish(start(full)))
    victim = start(killed)
    deadline = time.monotonic() + 300
    mid = []
    while victim.poll() is None and time.monotonic() < deadline:
        per_epoch = first_epoch_end(killed)
        mid = [s for s in checkpoint_steps(killed) if per_epoch and per_epoch < s < 2 * per_epoch]
        if mid:
            os.kill(victim.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    victim.communicate()
    output = full_run.result()
    epochs = [r for r in records(full) if r["kind"] == "epoch"]
    steps_per_epoch = epochs[0]["step"]
    assert len(epochs) == 2 and steps_per_epoch >= 4, output[-2000:]
    assert first_epoch_end(killed) == steps_per_epoch
    assert mid, "the run ended before a mid-epoch checkpoint of its second epoch"
    at_kill = checkpoint_steps(killed)
    resumed = finish(start(killed))
    eight_output = eight_run.result()
    pool.shutdown()
    return {"full": full, "killed": killed, "eight": eight, "steps_per_epoch": steps_per_epoch,
            "at_kill": at_kill, "resumed": resumed, "eight_output": eight_output}


def test_killed_mid_epoch_then_resumed_ends_bit_identical(runs):
    final = 2 * runs["steps_per_epoch"]
    latest = runs["at_kill"][-1]
    assert runs["steps_per_epoch"] < latest < final  # resumed inside the mining epoch
    from mammojax.train.checkpointing import TrainCheckpoints

    # What made the resume exact: the epoch's mined negatives, kept in the checkpoint it resumed from.
    saved = TrainCheckpoints(runs["full"] / "checkpoints", best_metric="auc", best_mode="max")
    assert checkpoint_steps(runs["full"])[-1] == final
    memo = saved.read_progress(final)["memo"]
    saved.close()
    assert memo["hard_negatives_epoch"] == 1 and len(memo["hard_negatives"]) > 0

    import jax

    a, b = restore_state(runs["full"], final), restore_state(runs["killed"], final)
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):  # params, BN statistics, AdamW moments, step, rng
        np.testing.assert_array_equal(x, y)
    for x, y in zip(jax.tree_util.tree_leaves(best_variables(runs["full"])),
                    jax.tree_util.tree_leaves(best_variables(runs["killed"]))):
        np.testing.assert_array_equal(x, y)
    # Every step logged once, and the same epoch summaries.
    steps = [r["step"] for r in records(runs["killed"]) if r["kind"] == "train"]
    assert steps == list(range(1, final + 1))

    def epochs(workdir):
        return [(r["epoch"], r["train_loss"], r.get("val_auc")) for r in records(workdir) if r["kind"] == "epoch"]

    assert epochs(runs["full"]) == epochs(runs["killed"])


def test_sigterm_mid_epoch_saves_exits_0_and_the_rerun_ends_bit_identical(runs, tmp_path):
    import re

    import jax

    workdir = tmp_path / "stopped"
    proc = start(workdir)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        metrics = workdir / "metrics.jsonl"
        if metrics.exists() and '"kind": "train"' in metrics.read_text():  # training has begun
            os.kill(proc.pid, signal.SIGTERM)
            break
        time.sleep(0.01)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    lines = [line[line.find("mammojax: stopped"):] for line in err.splitlines() if "mammojax: stopped" in line]
    assert len(lines) == 1 and lines[0].endswith("run the same command to resume"), err[-3000:]
    stopped_at = int(re.search(r"stopped by SIGTERM at step (\d+)", lines[0]).group(1))
    assert stopped_at % runs["steps_per_epoch"], "stopped at an epoch end: the test wants mid-epoch"
    assert checkpoint_steps(workdir)[-1] == stopped_at
    finish(start(workdir))
    final = 2 * runs["steps_per_epoch"]
    for x, y in zip(jax.tree_util.tree_leaves(restore_state(runs["full"], final)),
                    jax.tree_util.tree_leaves(restore_state(workdir, final))):
        np.testing.assert_array_equal(x, y)


def test_eight_devices_train_like_one(runs):
    """The sharding tests' tolerance (tests/train_support.assert_same_training) on the whole run."""
    import jax

    def losses(workdir):
        return np.array([r["train_loss"] for r in records(workdir) if r["kind"] == "train"])

    assert "; 8 devices" in runs["eight_output"] and "; 1 devices" not in runs["eight_output"]
    np.testing.assert_allclose(losses(runs["full"]), losses(runs["eight"]), rtol=5e-5, atol=1e-5)
    one = jax.tree_util.tree_leaves(best_variables(runs["full"]))
    eight = jax.tree_util.tree_leaves(best_variables(runs["eight"]))
    diff = np.concatenate([np.abs(np.asarray(x) - np.asarray(y)).ravel() for x, y in zip(one, eight)])
    assert diff.max() < 1e-4, f"largest parameter difference {diff.max():.3g}"
    assert (diff > 1e-6).mean() < 1e-3, f"{(diff > 1e-6).mean():.2%} of elements differ by more than 1e-6"
    assert not np.allclose(losses(runs["full"])[0], losses(runs["full"])[-1])


def test_two_processes_train_like_one(runs, tmp_path):
    """Two processes (jax.distributed, gloo) of one device each share every global patch batch."""
    import jax
    from train_support import free_port

    coordinator = f"127.0.0.1:{free_port()}"
    workdir = tmp_path / "two"
    procs = [subprocess.Popen(patch_command(workdir, "--coordinator", coordinator, "--num-processes", "2",
                                            "--process-id", str(i)),
                              env=subprocess_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(2)]
    outputs = [finish(proc) for proc in procs]
    assert "; 2 devices" in outputs[0]

    def losses(path):
        return np.array([r["train_loss"] for r in records(path) if r["kind"] == "train"])

    np.testing.assert_allclose(losses(runs["full"]), losses(workdir), rtol=5e-5, atol=1e-5)
    one = jax.tree_util.tree_leaves(best_variables(runs["full"]))
    two = jax.tree_util.tree_leaves(best_variables(workdir))
    diff = np.concatenate([np.abs(np.asarray(x) - np.asarray(y)).ravel() for x, y in zip(one, two)])
    assert diff.max() < 1e-4 and (diff > 1e-6).mean() < 1e-3


def test_best_holds_the_window_scoring_and_tau_fitted_on_validation_window_scores(runs):
    from mammojax.checkpoint import load_checkpoint
    from mammojax.config import load_config
    from mammojax.evaluation.operating_points import read_operating_points
    from mammojax.train.validation import evaluate

    workdir = runs["full"]
    best = load_checkpoint(workdir)
    assert {k: best.meta["scoring"][k] for k in ("kind", "size", "stride", "top_k")} == \
        {"kind": "windows", "size": 16, "stride": 8, "top_k": 3}
    assert best.meta["recipe"] == "patches" and best.meta["epoch"] == 2
    config = load_config(REPO / "configs" / "mias_smoke.py", PATCH_RUN)
    # The validation films, as the run split and decoded them: refit tau and temperature on their window scores.
    from mammojax.train.data import prepare_training_data

    data = prepare_training_data(config, workdir, progress=False)
    val = evaluate(best.model, best.variables, data.val, config, batch_size=8)
    # This process runs XLA without the trainer's CPU flags (runtime.setup): logits agree to float noise,
    # which the temperature's line search turns into a few 1e-6 of relative difference (held to 1e-4).
    # tau is a probability p = sigmoid(m / T): relative changes r in the margin m and in T move it by
    # p (1 - p) |logit p| 2r, plus p (1 - p) r for float noise in m / T itself, to first order.
    rel = 1e-4

    def tau_tolerance(p: float) -> float:
        return p * (1 - p) * (2 * abs(np.log(p / (1 - p))) + 1) * rel

    assert best.temperature == pytest.approx(val["temperature"], rel=rel)
    assert best.tau == pytest.approx(val["tau"], abs=tau_tolerance(best.tau))
    patient = read_operating_points(best.meta)["patient"]  # each level's own, fitted on the same films
    assert patient.tau == pytest.approx(val["operating_points"]["patient"]["tau"], abs=tau_tolerance(patient.tau))
    assert (workdir / "training_curves.png").stat().st_size > 0
    # Running the finished command again trains nothing and leaves best/ as it was.
    before = (workdir / "best" / "mammojax.json").read_bytes()
    output = finish(start(workdir))
    assert "final model (epoch 2, no epoch selection)" in output
    assert (workdir / "best" / "mammojax.json").read_bytes() == before


def test_training_starts_from_model_init_checkpoint(tmp_path):
    """model.init_checkpoint (converted pretrained weights) is where the patch trainer starts: with lr 0
    the weights come back untouched (and without it, from the seeded random init)."""
    import jax

    from mammojax.checkpoint import make_meta, save_checkpoint
    from mammojax.config import load_config
    from mammojax.models import create_model, init_variables
    from mammojax.train.loop import host_variables
    from mammojax.train.trainers import train_and_evaluate

    config = load_config(REPO / "configs" / "mias_smoke.py", PATCH_RUN + ("--config.train.epochs=1",
                                                                          "--config.optim.lr=0.0"))
    model = create_model("resnet18", num_classes=2, head_pooling="topk")
    start_vars = jax.device_get(init_variables(model, jax.random.key(7), 32))
    save_checkpoint(tmp_path / "init", start_vars, make_meta(config))
    config.model.init_checkpoint = str(tmp_path / "init")
    kept = host_variables(train_and_evaluate(config, tmp_path / "run")["state"])
    for x, y in zip(jax.tree_util.tree_leaves(kept["params"]), jax.tree_util.tree_leaves(start_vars["params"])):
        np.testing.assert_array_equal(x, y)
