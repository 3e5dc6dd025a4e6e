"""The core loop's step bookkeeping: metrics fetched in windows, divergence named, SIGTERM as a request."""

from __future__ import annotations

import math
import os
import signal

import numpy as np
import pytest

from mammojax.errors import MammojaxError
from mammojax.train.loop import _PendingMetrics, _StopRequest


class _Bar:
    images_per_second = 12.5

    def __init__(self):
        self.updates = []

    def update(self, step, *, epoch, loss):
        self.updates.append((step, epoch, loss))


class _Writer:
    def __init__(self):
        self.records = []

    def write(self, record):
        self.records.append(record)


def _pending(log_every=2, steps_per_epoch=4):
    progress = {"epoch_loss_sum": 0.0, "epoch_loss_count": 0}
    bar, writer = _Bar(), _Writer()
    pending = _PendingMetrics(progress=progress, bar=bar, writer=writer, schedule=lambda step: 1e-3 * (step + 1),
                              steps_per_epoch=steps_per_epoch, log_every=log_every, directory="/wd/checkpoints")
    return pending, progress, bar, writer


def _metrics(loss, grad_norm=1.0):
    return {"loss": np.float32(loss), "grad_norm": np.float32(grad_norm)}


def test_steps_are_fetched_together_and_logged_as_each_step_would_be():
    pending, progress, bar, writer = _pending(log_every=2)
    losses = [0.7, 0.6, 0.5]
    for step, loss in enumerate(losses, 1):
        pending.add(step, _metrics(loss, grad_norm=step))
    assert bar.updates == [] and writer.records == []  # nothing read from the device yet
    pending.flush(last_saved=None)
    total = 0.0
    for loss in losses:
        total += float(np.float32(loss))
    assert progress == {"epoch_loss_sum": total, "epoch_loss_count": 3}
    assert bar.updates == [(3, 1, pytest.approx(0.5))]
    assert [(r["step"], r["grad_norm"], r["lr"]) for r in writer.records] == [(2, 2.0, pytest.approx(2e-3))]
    assert writer.records[0]["train_loss"] == pytest.approx(0.6) and writer.records[0]["epoch"] == 0.5
    pending.flush(last_saved=None)  # nothing pending: nothing changes
    assert progress["epoch_loss_count"] == 3 and len(bar.updates) == 1


def test_a_non_finite_loss_names_its_step_and_the_steps_checked_with_it():
    pending, progress, _, _ = _pending(log_every=4, steps_per_epoch=2)
    for step, loss in enumerate([0.7, 0.6, math.nan, 0.5], 1):
        pending.add(step, _metrics(loss))
    with pytest.raises(MammojaxError, match=r"loss is nan at step 3 \(epoch 2; steps 1-4 checked together\); "
                                            r"last good checkpoint in /wd/checkpoints: step 2; lower optim.lr"):
        pending.flush(last_saved=2)
    assert progress["epoch_loss_count"] == 0  # a diverged window adds nothing


def test_sigterm_becomes_a_request_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    stop = _StopRequest()
    try:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested  # and the process is still alive
    finally:
        stop.close()
    assert signal.getsignal(signal.SIGTERM) == before
