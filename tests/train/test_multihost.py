"""Two processes on localhost (jax.distributed + gloo CPU collectives) train like one."""

from __future__ import annotations


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
