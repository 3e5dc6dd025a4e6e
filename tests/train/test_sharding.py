"""Data parallelism on 8 forced host devices: the batch is split, not replicated,
and 8 devices train exactly like 1 device on the same global batch."""

from __future__ import annotations

import numpy as np
import pytest

from train_support import assert_same_training, finish, run_sharding_check, start_worker
from train_worker import GLOBAL_BATCH, IMAGE_SIZE


def _assert_split(rows: np.ndarray, batch_size: int, devices: int) -> None:
    """``rows[d] = (start, stop)`` per device: equal, disjoint slices that cover the batch once."""
    per = batch_size // devices
    assert rows.shape == (devices, 2)
    assert (rows[:, 1] - rows[:, 0] == per).all(), f"a device holds other than 1/{devices} of the batch: {rows}"
    assert sorted(rows[:, 0].tolist()) == list(range(0, batch_size, per)), f"slices overlap: {rows}"


def test_each_device_holds_a_different_slice_of_the_global_batch(tmp_path):
    seen = run_sharding_check("sharding", tmp_path / "sharding.npz")
    image, devices = seen["image"], int(seen["devices"])
    assert devices == 8 and sorted(seen["shard_devices"].tolist()) == list(range(8))
    # Where sharding.global_batch put the batch, read back from each device's shard.
    _assert_split(seen["shard_rows"], len(image), devices)
    per = len(image) // devices
    assert seen["shard_data"].shape == (devices, per, *image.shape[1:])
    for (start, stop), data in zip(seen["shard_rows"], seen["shard_data"]):
        np.testing.assert_array_equal(data, image[start:stop])
    assert len({data.tobytes() for data in seen["shard_data"]}) == devices  # no two devices alike
    order = np.argsort(seen["shard_rows"][:, 0])
    np.testing.assert_array_equal(np.concatenate(seen["shard_data"][order]), image)
    # And the compiled train step of jit_steps takes its batch split the same way.
    assert sorted(seen["step_devices"].tolist()) == list(range(8))
    _assert_split(seen["step_rows"], len(image), devices)


def test_eight_devices_match_one_device(tmp_path, one_device_training):
    eight = tmp_path / "eight.npz"
    finish(start_worker(eight, "--devices", "8"))
    one = one_device_training.result()
    import numpy as np

    assert int(np.load(eight)["devices"]) == 8
    assert_same_training(one, eight, batch=GLOBAL_BATCH, image_size=IMAGE_SIZE)


def test_batch_not_divisible_by_devices_is_a_clear_error():
    import numpy as np

    from mammojax.errors import ConfigError
    from mammojax.train.sharding import check_batch_size

    # Only the mesh's device count matters here; 3 devices need no real hardware.
    three = type("ThreeDeviceMesh", (), {"devices": np.zeros(3)})()
    check_batch_size(9, three)
    with pytest.raises(ConfigError, match="train.batch_size=8 is not divisible by the 3 devices"):
        check_batch_size(8, three)
