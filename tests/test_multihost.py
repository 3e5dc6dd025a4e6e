"""Two processes on localhost (jax.distributed + gloo CPU collectives) train like one."""

from __future__ import annotations

import pytest

from train_support import assert_same_training, finish, free_port, start_worker


def test_two_processes_match_one_process(tmp_path):
    single, multi = tmp_path / "single.npz", tmp_path / "multi.npz"
    coordinator = f"127.0.0.1:{free_port()}"
    runs = [start_worker(single, "--devices", "1")]
    # Each process has 2 fake devices: a 4-device mesh over 2 hosts.
    runs += [start_worker(multi, "--devices", "2", "--coordinator", coordinator, "--num-processes", "2",
                          "--process-id", str(i)) for i in range(2)]
    outputs = [finish(run) for run in runs]
    assert "process 1/2: 4 devices" in outputs[2]
    assert_same_training(single, multi)
