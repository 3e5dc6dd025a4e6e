"""`mammojax train` end to end: outputs of a run, divergence handling, CLI errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from paths import REPO
from train_support import checkpoint_steps, run_train, subprocess_env

pytestmark = pytest.mark.slow


def test_run_writes_logs_curves_config_and_best_checkpoint(small_run):
    # The shared run (tests/train/conftest.py) trains with every optimizer option at once.
    workdir, result = small_run
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    for key in ("val_auc", "val_sensitivity", "val_specificity", "val_accuracy", "val_f1", "train_loss"):
        assert key in epochs[-1]
    # 48 phantoms = 12 patients; 15% of each class for validation = 2 patients = 8 images,
    # evaluated in one padded batch of 8: each counted exactly once.
    assert epochs[-1]["val_n"] == 8
    train = [r for r in records if r["kind"] == "train"]
    lrs = [r["lr"] for r in train]
    assert lrs[0] < lrs[1] and lrs[-1] < max(lrs)  # warmup, then cosine decay
    assert all(r["images_per_second"] is None or r["images_per_second"] > 0 for r in train)
    assert (workdir / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((workdir / "config.json").read_text())["optim"]["name"] == "adamw"
    assert "best epoch" in result.stdout and "train:" in result.stderr  # summary + progress bar

    from mammojax.checkpoint import load_checkpoint

    best = load_checkpoint(workdir)
    assert best.model_name == "resnet18" and best.image_size == 32
    val = best.meta["val_metrics"]
    assert best.tau == pytest.approx(val["tau"]) and best.temperature == pytest.approx(val["temperature"])
    assert best.offset == pytest.approx(val["offset"])  # the image point is the validation fit, offset included
    # best/ says itself which level fits ended at their bound (none, or one sentence per such level).
    from mammojax.evaluation.operating_points import calibration_warnings

    assert best.meta["calibration_warnings"] == calibration_warnings(best.operating_points)
    assert best.meta["epoch"] in (1, 2)


def test_diverging_run_stops_naming_the_step_and_keeps_last_good_checkpoint(tmp_path):
    workdir = tmp_path / "nan"
    result = run_train(workdir, "--config.optim.lr=1e30", "--config.train.checkpoint_every_steps=1")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("mammojax: error: training diverged: loss is")
    import re

    step = int(re.search(r"at step (\d+)", last).group(1))
    saved = checkpoint_steps(workdir)
    assert saved and max(saved) < step and f"step {max(saved)}" in last


def test_unknown_config_key_is_one_line_error(tmp_path, capsys):
    from mammojax.cli import main

    from train_support import REPO

    code = main(["train", "--config", str(REPO / "configs" / "default.py"), "--workdir", str(tmp_path / "w"),
                 "--config.optim.lrr=1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "unknown config key 'optim.lrr'" in err and "optim.lr" in err
    assert not (tmp_path / "w").exists()


def test_a_run_at_hxw_trains_prepares_and_scores_at_hxw(tmp_path):
    # A mammogram-shaped input end to end: the dataset is prepared at 48x40, the
    # network trains on it, and the best checkpoint scores a file as eval does.
    import numpy as np

    from mammojax.checkpoint import load_checkpoint
    from mammojax.scoring import Scorer

    workdir = tmp_path / "hxw"
    result = run_train(workdir, "--config.data.image_size=48x40", "--config.train.epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((workdir / "config.json").read_text())["data"]["image_size"] == "48x40"
    best = load_checkpoint(workdir)
    assert best.image_shape == (48, 40) and best.meta["data"]["image_size"] == "48x40"
    scorer = Scorer.from_checkpoint(best, batch_size=1)
    film = np.random.default_rng(0).uniform(0.0, 1.0, (120, 90)).astype(np.float32)
    prepared = scorer.prepare(film, None)
    assert prepared.image.shape == (48, 40, 1)
    maps, _ = scorer.explain(prepared.image[None])
    assert maps.shape == (1, 48, 40)


@pytest.mark.slow
def test_training_on_a_prepared_dataset_takes_its_name_task_and_shape(tmp_path, run_cli):
    # The outside check of issue 16: a csv dataset prepared at HxW, then the quickstart
    # config (synthetic, 96 px) pointed at it with --config.data.prepared.
    from app_support import png_bytes
    from mammojax.checkpoint import load_checkpoint

    raw = tmp_path / "raw"
    raw.mkdir()
    rows = ["path,label,patient_id"]
    for i in range(24):
        (raw / f"f{i}.png").write_bytes(png_bytes(70 + i, 56, seed=i))
        rows.append(f"f{i}.png,{i % 2},w{i // 2}")
    (raw / "manifest.csv").write_text("\n".join(rows) + "\n")
    prepared = tmp_path / "prepared"
    run_cli(["data", "prepare", "--dataset", "csv", "--data-dir", raw / "manifest.csv", "--out", prepared,
             "--image-size", "40x32", "--workers", "1"])
    chunks = sorted(p.name for p in (prepared / ".chunks").iterdir())
    workdir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "mammojax", "train", "--config", str(REPO / "configs" / "quickstart.py"),
         "--workdir", str(workdir), f"--config.data.prepared={prepared}", "--config.train.epochs=1",
         "--config.train.batch_size=4", "--config.train.eval_batch_size=4"],
        env=subprocess_env(), text=True, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((workdir / "config.json").read_text())["data"]
    assert (data["dataset"], data["image_size"]) == ("csv", "40x32")
    best = load_checkpoint(workdir)
    assert best.image_shape == (40, 32) and best.class_names == ["negative", "positive"]
    assert sorted(p.name for p in (prepared / ".chunks").iterdir()) == chunks  # nothing decoded again
