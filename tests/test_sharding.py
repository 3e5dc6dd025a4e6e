"""Data parallelism: 8 fake CPU devices train exactly like 1 device on the same global batch."""

from __future__ import annotations

import pytest

from train_support import assert_same_training, finish, start_worker


def test_eight_devices_match_one_device(tmp_path):
    one, eight = tmp_path / "one.npz", tmp_path / "eight.npz"
    runs = [start_worker(one, "--devices", "1"), start_worker(eight, "--devices", "8")]
    for run in runs:
        finish(run)
    import numpy as np

    assert int(np.load(eight)["devices"]) == 8
    assert_same_training(one, eight)


def test_batch_not_divisible_by_devices_is_a_clear_error():
    import numpy as np

    from mammojax.errors import ConfigError
    from mammojax.train.sharding import check_batch_size

    # Only the mesh's device count matters here; 3 devices need no real hardware.
    three = type("ThreeDeviceMesh", (), {"devices": np.zeros(3)})()
    check_batch_size(9, three)
    with pytest.raises(ConfigError, match="train.batch_size=8 is not divisible by the 3 devices"):
        check_batch_size(8, three)
