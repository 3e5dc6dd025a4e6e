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


def test_every_spelling_of_an_input_size_is_one_run_identity(tmp_path):
    import pytest

    from mammojax.config import base_config
    from mammojax.errors import CheckpointError
    from mammojax.train.checkpointing import run_identity

    def identity(size):
        config = base_config()
        config.data.image_size = size
        return run_identity(config)

    # What a workdir from before non-square inputs saved: the int.
    assert identity(256)["data.image_size"] == 256
    assert identity(256) == identity("256x256") == identity((256, 256)) == identity("256")
    assert identity("1024x832") == identity((1024, 832)) == identity(" 1024 X 832")
    checkpoints = TrainCheckpoints(tmp_path / "checkpoints", best_metric="auc", best_mode="max")
    checkpoints.save(1, {"w": np.zeros(2, np.float32)}, {"identity": identity((1024, 832))})
    checkpoints.check_identity(identity("1024x832"))
    with pytest.raises(CheckpointError, match=r"data.image_size='1024x832' \(config: '832x1024'\)"):
        checkpoints.check_identity(identity("832x1024"))
    checkpoints.close()
