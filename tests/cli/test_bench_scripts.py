"""The speed scripts of issue 25 run, in their smoke modes, and print what their tables are made of.

Smoke runs only: they check that each script measures both sides and reports
the figures its README table is built from, never a speed (a speed target
belongs to the scripts' full runs, not to a timed unit test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # each script compiles and times both sides: 25-50 s on 2 cores


def run_script(*args: str, timeout: float = 600, **extra_env: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "MAMMOJAX_DETOURS", "MAMMOJAX_XLA_FLAG_SET")}
    env.update(extra_env)
    result = subprocess.run([*args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.torch
def test_bench_vs_torch_reports_a_ratio_per_case_and_the_first_calls(tmp_path):
    pytest.importorskip("torch")
    # torch.compile's on-disk cache of its own (cold, as on a fresh machine), never the machine's /tmp one.
    out = run_script(sys.executable, "scripts/bench_vs_torch.py", "--quick", "--json", "--cases", "cam224,train16",
                     TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))
    result = json.loads(out.stdout)
    assert set(result["cases"]) == {"cam224", "train16"}
    for case, row in result["cases"].items():
        lo, hi = row["ratio_range"]
        assert row["mammojax_ms"] > 0 and row["torch_ms"] > 0, case
        assert lo <= row["ratio"] <= hi and row["ratio"] == pytest.approx(row["torch_ms"] / row["mammojax_ms"],
                                                                         rel=0.5), case
    assert result["cases"]["cam224"]["torch_compile_s"] > 0 and result["cases"]["cam224"]["mammojax_first_call_s"] > 0
    assert "family" in result["cpu"] and result["rounds"] == 2


def test_bench_detours_times_an_item_both_ways_and_prints_the_platform_row():
    # The flag's probe (a predict + Grad-CAM program) compiles fastest; the training probes run the same code.
    out = run_script(sys.executable, "scripts/bench_detours.py", "--quick", "--only", "ynn_fusion_off")
    table = out.stdout
    assert "| ynn_fusion_off | resnet18 predict_cam, batch 1, 64 px |" in table
    assert "platform.MEASURED row:" in table and '"cpu-' in table
    assert "ynn_fusion_off: plain" in out.stderr and "platform key cpu-" in out.stderr


def test_gpu_check_smoke_mode_collects_the_accelerator_tests_and_prints_both_tables():
    out = run_script("bash", "scripts/gpu_check.sh", "--smoke")
    assert "tests collected" in out.stdout  # the selection a GPU run executes exists and imports
    assert "| predict + Grad-CAM, batch 1, 64 px |" in out.stdout
    assert "| training step, batch 2, 64x48, Adam |" in out.stdout
    assert "pipe/train" in out.stdout and "train pipe" in out.stdout  # bench_pipeline's table
    assert "detours taken on cpu-" in out.stdout


def test_gpu_check_on_a_machine_without_a_gpu_says_so_and_installs_nothing():
    if subprocess.run(["bash", "-c", "command -v nvidia-smi"], capture_output=True).returncode == 0:
        pytest.skip("this machine has nvidia-smi: the full mode would run")
    result = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "gpu_check: no NVIDIA GPU here (no nvidia-smi); use --smoke on a CPU" in result.stderr
    assert "installing" not in result.stderr
