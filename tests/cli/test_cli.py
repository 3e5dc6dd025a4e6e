"""The command line as a user meets it: fast help, one-line errors, benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from mammojax.cli import COMMANDS

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def run_cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "mammojax", *args], capture_output=True, text=True,
                          env=env or ENV, timeout=timeout)


def test_help_lists_every_command_without_importing_jax_or_tensorflow():
    code = ("import sys, time; t = time.perf_counter(); from mammojax.cli import main; "
            "rc = main(['--help']); "
            "print('HEAVY', sorted(m for m in ('jax', 'tensorflow', 'orbax', 'matplotlib', 'torch') "
            "if m in sys.modules)); print('SECONDS', time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV).stdout
    for name in COMMANDS:
        assert name in out
    assert "HEAVY []" in out


def test_help_answers_quickly():
    start = time.perf_counter()
    result = run_cli("--help")
    elapsed = time.perf_counter() - start
    assert result.returncode == 0
    # The bound is 2 s for the whole process, interpreter start included.
    assert elapsed < 2.0, f"mammojax --help took {elapsed:.2f} s"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name):
    result = run_cli(name, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


@pytest.mark.parametrize("args, expected", [
    (("benchmark", "--models", "resnet99"), "resnet99"),
    (("train", "--config", "configs/default.py", "--workdir", "/tmp/x", "--config.optim.lrr=1"), "optim.lr"),
    (("predict", "--checkpoint", "/nonexistent/ckpt", "/nonexistent/image.png"), "/nonexistent"),
    (("data", "summary", "--dataset", "mias", "--data-dir", "/nonexistent/mias"), "/nonexistent/mias"),
    (("benchmark", "--batch-sizes", "one"), "--batch-sizes"),
])
def test_user_errors_are_one_line_and_nonzero(args, expected):
    result = run_cli(*args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]


def test_benchmark_json_reports_flops_and_latency(tmp_path):
    env = {**ENV, "MAMMOJAX_CACHE_DIR": str(tmp_path / "cache")}
    result = run_cli("benchmark", "--models", "resnet18", "--image-size", "48x32", "--batch-sizes", "1,2",
                     "--repeats", "2", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert "image 48x32" in result.stderr
    rows = json.loads(result.stdout)
    assert [r["batch_size"] for r in rows] == [1, 2] and {r["image_size"] for r in rows} == {"48x32"}
    for row in rows:
        assert row["params"] == 11_171_266
        assert row["gflops_per_image"] > 0
        assert row["predict"]["median_ms"] > 0 and row["predict_cam"]["median_ms"] > 0
        assert row["predict"]["p95_ms"] >= row["predict"]["median_ms"]
    # XLA's flop count is per image: the same at every batch size.
    assert rows[0]["gflops_per_image"] == pytest.approx(rows[1]["gflops_per_image"], rel=1e-3)
    # The persistent compilation cache was written, so a rerun need not recompile.
    assert any((tmp_path / "cache" / "xla").iterdir())


def test_a_bad_image_size_is_refused_naming_the_option_and_the_value():
    result = run_cli("benchmark", "--models", "resnet18", "--image-size", "1024x")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Invalid value for '--image-size': '1024x' must be a side S or HxW" in result.stderr, result.stderr


def test_compilation_cache_survives_an_earlier_setup_without_it(tmp_path):
    # import_tensorflow() runs setup(compilation_cache=False); a later setup()
    # must still turn the persistent cache on.
    code = ("from mammojax import runtime; runtime.setup(compilation_cache=False); runtime.setup(); "
            "import jax; print(jax.config.jax_compilation_cache_dir)")
    env = {**ENV, "MAMMOJAX_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout
    assert out.strip() == str(tmp_path / "xla")
