"""A checkpoint trained on phantoms says so when it scores real films (issue 19 item 9).

One rule (``mammojax.checkpoint.training_data_warning``), applied by
``predict``, ``eval`` and the page: one ``mammojax: warning:`` line per run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_support import make_tiny_checkpoint

from mammojax.checkpoint import training_data_warning

WARNING = "mammojax: warning: this checkpoint was trained on synthetic phantoms only"


def test_the_rule():
    synthetic = {"data": {"dataset": "synthetic"}}
    assert "synthetic phantoms only" in training_data_warning(synthetic)  # files
    assert "'mias'" in training_data_warning(synthetic, dataset="mias")
    assert training_data_warning(synthetic, dataset="synthetic") is None
    assert training_data_warning({"data": {"dataset": "mias"}}) is None
    assert training_data_warning({**synthetic, "converted_from": "resnet18.pth"}) is None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("warn") / "best")  # trained on "synthetic"


@pytest.fixture(scope="module")
def films(phantom_films) -> Path:
    return phantom_films


def test_predict_warns_once_per_run(checkpoint, films, run_cli):
    result = run_cli(["predict", "--checkpoint", checkpoint, "--batch-size", "2", "--json", films])
    assert result.stderr.count(WARNING) == 1
    assert len(result.stdout.splitlines()) == 4 + 2  # the rows are still written


def test_eval_warns_and_the_report_says_so(checkpoint, films, run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "eval"
    result = run_cli(["eval", "--checkpoint", checkpoint, "--dataset", "csv", "--data-dir", films / "manifest.csv",
                   "--split", "all", "--out", out])
    assert result.stderr.count(WARNING) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["warnings"]) == 1 and "'csv'" in metrics["warnings"][0]
    assert "synthetic phantoms only" in (out / "report.md").read_text()
    assert "synthetic phantoms only" in (out / "report.html").read_text()


def test_page_model_carries_the_warning(checkpoint):
    from mammojax.app.logic import load_app_model

    model = load_app_model(checkpoint, warm_up=False)
    assert "synthetic phantoms only" in model.data_warning
    assert model.describe()["warning"] == model.data_warning
