"""Shared helpers for the training tests (subprocess runs, parameter comparison)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from mammojax.workdir import Workdir

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("train_worker.py")
SHARDING_WORKER = Path(__file__).with_name("sharding_worker.py")
META_KEYS = ("devices", "losses", "grad_norms")


def subprocess_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # Each test sets its own device count; never inherit one.
    env.pop("XLA_FLAGS", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_worker(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), "--out", str(out), *extra], env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        raise AssertionError(f"worker timed out:\n{output[-3000:]}")
    assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{output[-3000:]}"
    return output


def run_sharding_check(check: str, out: Path) -> dict[str, np.ndarray]:
    """Runs ``sharding_worker.py --check CHECK`` on 8 forced host devices; returns what it saw."""
    finish(subprocess.Popen([sys.executable, str(SHARDING_WORKER), "--check", check, "--out", str(out)],
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    with np.load(out) as saved:
        return {key: saved[key] for key in saved.files}


FLOAT32_UNIT_ROUNDOFF = 2.0 ** -24


def reordered_sum_rtol(terms: int) -> float:
    """How far two float32 computations may differ when they add the same ``terms`` values in other orders.

    Each order's sum is within (n - 1) u of the exact one (u = 2^-24, the
    classic bound for recursive or blocked summation, whatever the grouping),
    so the two differ by at most 2 (n - 1) u relative. Sharded training takes
    its sums in another order than one device: a BatchNorm layer's mean and
    variance over ``batch x height x width`` positions (per device, then
    across devices and processes) and the loss over the batch. The largest of
    those reductions, the stem's BatchNorm, bounds the loss: each later
    BatchNorm renormalises, so its error stays of the same relative order
    rather than compounding. It is a worst-case bound: measured differences
    are 10-30x smaller (6.9e-6 at n = 2048 on an AVX-512 EPYC, under 5e-6 on
    AVX2), and how close a CPU comes to it depends on its vector width.
    """
    return 2 * (terms - 1) * FLOAT32_UNIT_ROUNDOFF


def stem_positions(batch: int, image_size: int) -> int:
    """Values each stem BatchNorm channel sums over: batch x (image / 2)^2 (the 7x7 stem has stride 2)."""
    return batch * (image_size // 2) ** 2


def assert_same_training(a: Path, b: Path, *, batch: int, image_size: int) -> None:
    """Same losses and gradient norms per step, and the same parameters.

    Adam turns float-rounding noise in near-zero gradients into updates of
    about one learning rate (1e-4) on a handful of elements, so parameters are
    compared by their worst element (at most one lr step) and by how many
    elements differ at all (almost none). Losses and gradient norms agree to
    the float32 rounding of sums taken in another order
    (:func:`reordered_sum_rtol` of the stem's BatchNorm reduction).
    """
    x, y = np.load(a), np.load(b)
    rtol = reordered_sum_rtol(stem_positions(batch, image_size))
    np.testing.assert_allclose(x["losses"], y["losses"], rtol=rtol)
    np.testing.assert_allclose(x["grad_norms"], y["grad_norms"], rtol=rtol)
    keys = [k for k in x.files if k not in META_KEYS]
    assert keys and set(keys) == {k for k in y.files if k not in META_KEYS}
    diff = np.concatenate([np.abs(x[k] - y[k]).ravel() for k in keys])
    assert diff.max() < 1e-4, f"largest parameter difference {diff.max():.3g}"
    assert (diff > 1e-6).mean() < 1e-3, f"{(diff > 1e-6).mean():.2%} of elements differ by more than 1e-6"
    # And training really moved the parameters (the comparison is not vacuous).
    assert not np.allclose(x["losses"][0], x["losses"][-1])


# ---------------------------------------------------------------------------
# Full `mammojax train` runs on small synthetic data (resnet18 at 32 px).

# 48 phantoms -> 32 train images -> 4 steps of 8 per epoch; checkpoints every 2 steps.
SMALL_RUN = ("--config.data.image_size=32", "--config.data.synthetic_count=48",
             "--config.train.batch_size=8", "--config.train.eval_batch_size=8",
             "--config.train.epochs=2", "--config.train.checkpoint_every_steps=2",
             "--config.train.log_every_steps=1")


# Every optimizer option at once: AdamW, warmup + cosine, clipping, smoothing, class weights. The shared
# finished run (tests/train/conftest.py ``small_run``) trains with these; a run that resumes or is compared
# with it passes them too.
OPTIMIZER_RUN = ("--config.optim.name=adamw", "--config.optim.weight_decay=1e-4",
                 "--config.optim.schedule=cosine", "--config.optim.warmup_epochs=0.5",
                 "--config.optim.grad_clip_norm=1.0", "--config.optim.label_smoothing=0.1",
                 "--config.optim.class_weighting=true", "--config.optim.lr=1e-3")


def train_command(workdir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "mammojax", "train", "--config", str(REPO / "configs" / "default.py"),
            "--workdir", str(workdir), *SMALL_RUN, *overrides]


def start_train(workdir: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(train_command(workdir, *overrides), env=subprocess_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run_train(workdir: Path, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(train_command(workdir, *overrides), env=subprocess_env(), text=True,
                          capture_output=True, timeout=timeout)


def checkpoint_steps(workdir: Path) -> list[int]:
    directory = Workdir(workdir).checkpoints
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.exists() else []


def restore_state(workdir: Path, step: int) -> dict:
    """A training checkpoint's state as NumPy arrays (no template needed)."""
    import jax
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        state = ckptr.restore(Workdir(workdir).checkpoints / str(step) / "state")
    return jax.tree_util.tree_map(np.asarray, state)
