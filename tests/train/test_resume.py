"""Exact resume: a SIGKILLed run, restarted, ends bit-identical to an uninterrupted one.

Also: a corrupt latest checkpoint falls back to the previous one, and a workdir
of another model is refused without touching it. These run the real
``mammojax train`` (ResNet-18 at 32 px on synthetic phantoms) in subprocesses.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import jax
import numpy as np
import pytest

from train_support import OPTIMIZER_RUN, checkpoint_steps, restore_state, run_train, start_train

pytestmark = pytest.mark.slow
FINAL_STEP = 8  # 2 epochs x 4 steps


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_run):
    """An uninterrupted run (the shared ``small_run``), and one of its config killed right after its
    first checkpoint then restarted."""
    full = small_run[0]
    killed = tmp_path_factory.mktemp("resume") / "killed"
    victim = start_train(killed, *OPTIMIZER_RUN)
    deadline = time.monotonic() + 240
    while not checkpoint_steps(killed) and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert victim.poll() is None, f"run ended before its first checkpoint:\n{victim.communicate()[1][-2000:]}"
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    steps_at_kill = checkpoint_steps(killed)
    resumed = run_train(killed, *OPTIMIZER_RUN)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return {"full": full, "killed": killed, "steps_at_kill": steps_at_kill, "resumed": resumed}


def test_killed_and_resumed_run_is_bit_identical(runs):
    assert runs["steps_at_kill"] and runs["steps_at_kill"][-1] < FINAL_STEP
    a = restore_state(runs["full"], FINAL_STEP)
    b = restore_state(runs["killed"], FINAL_STEP)
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):  # params, BN statistics, Adam moments, step, rng
        np.testing.assert_array_equal(x, y)
    assert int(a["step"]) == FINAL_STEP


def test_resumed_run_logs_each_step_once(runs):
    def records(workdir):
        lines = (workdir / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    full, resumed = records(runs["full"]), records(runs["killed"])
    train_steps = [r["step"] for r in resumed if r["kind"] == "train"]
    assert train_steps == list(range(1, FINAL_STEP + 1))
    # The epoch summaries (mean train loss, validation metrics) match the uninterrupted run.
    epochs_full = [(r["epoch"], r["train_loss"], r["val_auc"]) for r in full if r["kind"] == "epoch"]
    epochs_resumed = [(r["epoch"], r["train_loss"], r["val_auc"]) for r in resumed if r["kind"] == "epoch"]
    assert epochs_full == epochs_resumed and len(epochs_full) == 2


def test_corrupt_latest_checkpoint_falls_back_to_previous(runs, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(runs["full"], workdir)
    steps = checkpoint_steps(workdir)
    latest, previous = steps[-1], steps[-2]
    assert latest == FINAL_STEP
    # Truncate the biggest array file of the latest checkpoint.
    files = [p for p in (workdir / "checkpoints" / str(latest) / "state").rglob("*") if p.is_file()]
    biggest = max(files, key=lambda p: p.stat().st_size)
    with open(biggest, "r+b") as f:
        f.truncate(biggest.stat().st_size // 3)
    result = run_train(workdir, *OPTIMIZER_RUN, "--config.train.epochs=3")
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if "unreadable checkpoint" in line]
    assert len(warnings) == 1, result.stderr[-3000:]
    # Orbax's background threads may print to stderr at the same moment and run into
    # this line's start, so the warning is read from its own prefix on.
    warning = warnings[0][warnings[0].find("mammojax: warning:"):]
    assert warning.startswith("mammojax: warning:") and f"checkpoints/{latest}" in warning
    assert checkpoint_steps(workdir)[-1] == 12
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    steps_logged = [r["step"] for r in records if r["kind"] == "train"]
    assert steps_logged == list(range(1, 13)), f"resumed from {previous}: {steps_logged}"


def test_workdir_of_another_model_is_refused_untouched(runs):
    workdir = runs["full"]

    def snapshot():
        return sorted((str(p.relative_to(workdir)), p.stat().st_mtime_ns) for p in workdir.rglob("*"))

    before = snapshot()
    result = run_train(workdir, *OPTIMIZER_RUN, "--config.model.name=resnet34")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("mammojax: error:") and "different run" in last and "resnet34" in last
    assert snapshot() == before
