"""Two processes on localhost (jax.distributed + gloo CPU collectives) train like one."""

from __future__ import annotations

import pytest

from train_support import (assert_same_training, finish, free_port, reordered_sum_rtol, start_worker,
                           stem_positions)
from train_worker import GLOBAL_BATCH, IMAGE_SIZE

pytestmark = pytest.mark.slow  # each test trains in 2-3 processes: 30-55 s on 2 cores


def test_two_processes_match_one_process(tmp_path, one_device_training):
    multi = tmp_path / "multi.npz"
    coordinator = f"127.0.0.1:{free_port()}"
    # Each process has 2 fake devices: a 4-device mesh over 2 hosts.
    runs = [start_worker(multi, "--devices", "2", "--coordinator", coordinator, "--num-processes", "2",
                         "--process-id", str(i)) for i in range(2)]
    outputs = [finish(run) for run in runs]
    assert "process 1/2: 4 devices" in outputs[1]
    single = one_device_training.result()
    assert_same_training(single, multi, batch=GLOBAL_BATCH, image_size=IMAGE_SIZE)


def test_two_processes_read_disjoint_rows_of_one_prepared_dataset_and_train_like_one(tmp_path):
    import numpy as np

    from mammojax.config import base_config
    from mammojax.data.pipeline import epoch_plan
    from mammojax.data.preparation import write_arrays
    from mammojax.data.records import Record

    rng = np.random.default_rng(0)
    count = 3 * GLOBAL_BATCH + 2  # three steps; the last two examples are dropped this epoch
    records = [Record(str(tmp_path / f"film{i}.png"), label=i % 2, patient_id=f"w{i}") for i in range(count)]
    images = rng.normal(size=(count, IMAGE_SIZE, IMAGE_SIZE, 1)).astype(np.float32)
    dataset = write_arrays(tmp_path / "prepared", records, images, [()] * count, dataset="csv",
                           class_names=("negative", "positive"))
    pipeline = ("--prepared", str(dataset.path))
    single, multi = tmp_path / "single.npz", tmp_path / "multi.npz"
    coordinator = f"127.0.0.1:{free_port()}"
    runs = [start_worker(single, "--devices", "1", *pipeline, "--reads-out", str(tmp_path / "reads-single.npz"))]
    runs += [start_worker(multi, "--devices", "2", "--coordinator", coordinator, "--num-processes", "2",
                          "--process-id", str(i), *pipeline, "--reads-out", str(tmp_path / f"reads-{i}.npz"))
             for i in range(2)]
    for run in runs:
        finish(run)
    config = base_config()
    config.train.batch_size = GLOBAL_BATCH
    order = epoch_plan(dataset, config, 0)[0].reshape(-1, GLOBAL_BATCH)
    logs = [np.load(tmp_path / f"reads-{i}.npz") for i in range(2)]
    alone = np.load(tmp_path / "reads-single.npz")
    half = GLOBAL_BATCH // 2
    for process, log in enumerate(logs):  # each host read exactly its own rows of every global batch
        assert sorted(log["rows"].tolist()) == sorted(order[:, process * half:(process + 1) * half].ravel().tolist())
    assert not set(logs[0]["rows"].tolist()) & set(logs[1]["rows"].tolist())
    assert sorted(np.concatenate([log["rows"] for log in logs]).tolist()) == sorted(alone["rows"].tolist())
    # The two hosts' augmented rows, side by side, are the one-process global batches.
    np.testing.assert_array_equal(np.concatenate([logs[0]["images"], logs[1]["images"]], axis=1), alone["images"])
    # Same data, so the first step agrees to the rounding of BatchNorm and loss sums taken in
    # another order (per device, then across devices and processes): the bound derived in
    # reordered_sum_rtol, not a figure fitted to one CPU (AVX-512 came to 6.9e-6, AVX2 below 5e-6).
    # Adam's first updates are lr * sign(gradient): where a gradient is at rounding level its sign
    # may flip, so each parameter may end up to one 2 lr step per update apart, and the later losses
    # are those of slightly different parameters: they agree to first order in that difference,
    # |dL| <= |gradient| |d params| (Cauchy-Schwarz; the final difference, which the flips only
    # add to, stands for each step's), not to a fixed tolerance (a 1e-3 one failed at 3.2e-3 on
    # an AVX-512 Xeon when one flip landed on a sensitive BatchNorm scale).
    x, y = np.load(single), np.load(multi)
    rtol = reordered_sum_rtol(stem_positions(GLOBAL_BATCH, IMAGE_SIZE))
    np.testing.assert_allclose(x["losses"][0], y["losses"][0], rtol=rtol)
    np.testing.assert_allclose(x["grad_norms"][0], y["grad_norms"][0], rtol=rtol)
    keys = [k for k in x.files if k not in ("losses", "grad_norms", "devices")]
    diff = np.concatenate([np.abs(x[k] - y[k]).ravel() for k in keys])
    assert diff.max() <= 2 * base_config().optim.lr * len(x["losses"]) * 1.01
    params_diff = np.concatenate([np.abs(x[k] - y[k]).ravel() for k in keys if k.startswith("['params']")])
    first_order = x["grad_norms"] * np.linalg.norm(params_diff) + rtol * np.abs(x["losses"])
    assert np.all(np.abs(x["losses"] - y["losses"]) <= first_order), (x["losses"], y["losses"], first_order)
    assert not np.allclose(x["losses"][0], x["losses"][-1])  # training moved


def test_two_process_cli_training_exports_one_best_checkpoint(tmp_path):
    # The whole loop across 2 processes: data feeding, validation, orbax
    # training checkpoints (all processes) and the best/ export (process 0 only,
    # which must not wait on the other process).
    import subprocess
    import sys

    from mammojax.checkpoint import load_checkpoint
    from train_support import subprocess_env

    # Neither process finds the phantoms: process 0 writes them while the other waits.
    assert not (tmp_path / "phantoms").exists()
    coordinator = f"127.0.0.1:{free_port()}"
    workdir = tmp_path / "wd"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "mammojax", "train", "--config", "configs/quickstart.py",
         "--workdir", str(workdir), "--coordinator", coordinator, "--num-processes", "2",
         "--process-id", str(i), "--config.data.image_size=32", "--config.train.epochs=1",
         "--config.data.synthetic_count=64", "--config.train.batch_size=8",
         f"--config.data.data_dir={tmp_path / 'phantoms'}"],
        env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    for proc in procs:
        finish(proc)
    assert load_checkpoint(workdir).model_name == "resnet18"
    assert len([f for f in (tmp_path / "phantoms").rglob("*.png") if f.parent.name == "images"]) == 64
