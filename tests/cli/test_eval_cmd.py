"""`mammojax eval` end to end on phantoms with a tiny checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from eval_support import TAU, make_tiny_checkpoint

PHANTOMS = 24  # 6 women x 4 views


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A training-workdir look-alike: WORKDIR/best holds the checkpoint."""
    root = tmp_path_factory.mktemp("workdir")
    make_tiny_checkpoint(root / "best", overrides={"data.synthetic_count": PHANTOMS,
                                                   "data.val_fraction": 0.2,
                                                   "data.test_fraction": 0.35})
    return root


def _cli():
    from mammojax.cli import cli

    return cli


def test_eval_all_writes_metrics_and_report(workdir, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "eval"
    result = CliRunner().invoke(_cli(), ["eval", "--checkpoint", str(workdir), "--dataset", "synthetic",
                                         "--data-dir", str(tmp_path / "phantoms"), "--split", "all",
                                         "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    stored = json.loads((out / "metrics.json").read_text())
    assert printed == stored
    assert stored["n_images"] == PHANTOMS and stored["n_patients"] == PHANTOMS // 4
    assert stored["tau"] == pytest.approx(TAU) and stored["tau_source"] == "checkpoint"
    levels = stored["levels"]
    assert (levels["image"]["n"], levels["breast"]["n"], levels["patient"]["n"]) == (24, 12, 6)
    assert levels["image"]["auc_ci"]["n_resamples"] == 50  # the checkpoint's eval.bootstrap
    assert levels["image"]["tp"] + levels["image"]["fn"] == levels["image"]["n_pos"]
    for name in ("report.html", "report.md", "scores.csv", "figures/roc.png"):
        assert (out / name).is_file()


def test_eval_test_split_matches_the_training_split(workdir, tmp_path, monkeypatch):
    from mammojax.data.records import load_dataset
    from mammojax.data.splits import split_patients

    monkeypatch.setenv("MAMMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    phantoms = tmp_path / "phantoms"
    out = tmp_path / "eval"
    result = CliRunner().invoke(_cli(), ["eval", "--checkpoint", str(workdir), "--dataset", "synthetic",
                                         "--data-dir", str(phantoms), "--split", "test",
                                         "--threshold-policy", "youden", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    records = load_dataset("synthetic", phantoms, count=PHANTOMS, seed=0).records
    expected = split_patients(records, val_fraction=0.2, test_fraction=0.35, seed=0)["test"]
    assert metrics["n_images"] == len(expected) > 0
    assert metrics["tau_optimistic"] and "optimistic" in result.stderr
    assert "optimistic" in (out / "report.html").read_text()


def test_another_seed_changes_the_bootstrap_never_the_trained_datasets_test_women(workdir, tmp_path, monkeypatch):
    import csv

    monkeypatch.setenv("MAMMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    phantoms = tmp_path / "phantoms"
    scored = {}
    for seed in (None, 123):
        out = tmp_path / f"eval-{seed}"
        args = ["eval", "--checkpoint", str(workdir), "--dataset", "synthetic", "--data-dir", str(phantoms),
                "--split", "test", "--out", str(out)] + ([] if seed is None else ["--seed", str(seed)])
        result = CliRunner().invoke(_cli(), args)
        assert result.exit_code == 0, result.output
        metrics = json.loads((out / "metrics.json").read_text())
        assert (metrics["seed"], metrics["split_seed"]) == (0 if seed is None else seed, 0)
        with open(out / "scores.csv") as handle:
            scored[seed] = sorted(row["path"] for row in csv.DictReader(handle))
    assert scored[None] and scored[123] == scored[None]


def test_eval_skips_unreadable_images_and_exits_partial(workdir, tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    monkeypatch.setenv("MAMMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "own"
    data.mkdir()
    rows = ["path,label,patient_id"]
    for i in range(6):
        pixels = np.random.default_rng(i).integers(20, 220, (40, 36), dtype=np.uint8)
        Image.fromarray(pixels).save(data / f"img{i}.png")
        rows.append(f"img{i}.png,{i % 2},p{i // 2}")
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
    rows.append("broken.png,1,p9")
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "eval"
    result = CliRunner().invoke(_cli(), ["eval", "--checkpoint", str(workdir), "--dataset", "csv",
                                         "--data-dir", str(data), "--split", "all", "--out", str(out)])
    assert result.exit_code == 3, result.output  # partial: one skipped, six scored
    skipped = [l for l in result.stderr.splitlines() if l.startswith("mammojax: skipped")]
    assert len(skipped) == 1 and skipped[0].startswith(f"mammojax: skipped {data / 'broken.png'}: ")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 6 and metrics["n_excluded"] == 1
    assert [e["path"] for e in metrics["excluded"]] == [str(data / "broken.png")]


def test_eval_writes_beside_the_model_and_keeps_earlier_results(workdir, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the user's current folder gets nothing
    args = ["eval", "--checkpoint", str(workdir / "best"), "--dataset", "synthetic",
            "--data-dir", str(tmp_path / "phantoms"), "--split", "val", "--bootstrap", "0"]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 0, result.output
    out = workdir / "eval-synthetic-val"  # the training workdir, also when given its best/
    assert (out / "metrics.json").is_file() and f"report: {out}/report.html" in result.stderr
    assert list(elsewhere.iterdir()) == []

    before = (out / "metrics.json").stat().st_mtime_ns
    refused = CliRunner().invoke(_cli(), args)
    assert refused.exit_code != 0 and "already holds results" in str(refused.exception)
    assert (out / "metrics.json").stat().st_mtime_ns == before
    assert CliRunner().invoke(_cli(), args + ["--overwrite"]).exit_code == 0
    assert (out / "metrics.json").stat().st_mtime_ns != before


def test_eval_default_for_a_plain_checkpoint_is_inside_it(tmp_path):
    from mammojax.cli.eval_cmd import default_out_dir

    ckpt = make_tiny_checkpoint(tmp_path / "converted")
    assert default_out_dir(ckpt, "mias", "test") == ckpt.absolute() / "eval-mias-test"


def test_eval_with_no_readable_image_is_one_error_line(workdir, tmp_path, monkeypatch, capsys):
    from mammojax.cli import main

    monkeypatch.setenv("MAMMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "own"
    data.mkdir()
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
    (data / "manifest.csv").write_text("path,label\nbroken.png,1\n")
    out = tmp_path / "eval"
    code = main(["eval", "--checkpoint", str(workdir), "--dataset", "csv", "--data-dir", str(data),
                 "--split", "all", "--out", str(out)])
    errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith("mammojax: error:")]
    assert code == 2 and len(errors) == 1 and "could not read any of the 1 images" in errors[0]
    assert str(data / "broken.png") in errors[0] and not out.exists()
