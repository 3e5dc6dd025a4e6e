"""Training checkpoints keep the best by metric across restarts, not only the latest."""

from __future__ import annotations

import numpy as np

from mammojax.train.checkpointing import TrainCheckpoints


def test_best_checkpoint_survives_a_resumed_run(tmp_path):
    state = {"w": np.arange(3, dtype=np.float32)}
    first = TrainCheckpoints(tmp_path, best_metric="auc", best_mode="max")
    first.save(1, state, {"epoch": 1}, metric=0.9)
    first.save(2, state, {"epoch": 2}, metric=0.5)
    # A new manager over the same directory is what a killed-and-restarted run sees:
    # it must read the saved metrics back rather than forget which step was best.
    resumed = TrainCheckpoints(tmp_path, best_metric="auc", best_mode="max")
    resumed.save(3, state, {"epoch": 3}, metric=0.6)
    resumed.save(4, state, {"epoch": 4}, metric=0.4)
    assert 1 in resumed.steps()
    assert 4 in resumed.steps()  # the latest, for resuming
    assert 2 not in resumed.steps()
