"""scripts/setup_env.sh: one environment for quickstart.sh and test.sh, installed once.

Runs the real scripts against a fake virtual environment whose ``python`` and
``mammojax`` only record how they were called (no download, no pip).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPS = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()


@pytest.fixture()
def venv(tmp_path) -> Path:
    root = tmp_path / "venv"
    (root / "bin").mkdir(parents=True)
    for name in ("python", "mammojax"):
        stub = root / "bin" / name
        stub.write_text(f'#!/usr/bin/env bash\necho "{name} $*" >> "{root}/calls.log"\n')
        stub.chmod(0o755)
    return root


def _run(venv: Path, script: str, **env) -> tuple[list[str], str]:
    """(calls the fake environment received, stderr) for one run of ``script``."""
    log = venv / "calls.log"
    before = log.read_text().splitlines() if log.exists() else []
    command = ["bash", "-c", "source scripts/setup_env.sh"] if script == "setup" else ["bash", script]
    full_env = {k: v for k, v in os.environ.items() if k not in ("EXTRAS", "VIRTUAL_ENV")}
    result = subprocess.run(command, cwd=REPO, env={**full_env, "MAMMOJAX_VENV": str(venv), **env},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    after = log.read_text().splitlines() if log.exists() else []
    return after[len(before):], result.stderr


def test_first_setup_installs_every_extra_once_then_nothing(venv):
    calls, err = _run(venv, "setup")
    assert calls == [f"python -m pip install -q -e {REPO}[dev,app,dicom]"]
    assert "about 1 GB" in err
    assert (venv / ".mammojax-installed").read_text().strip() == f"{DEPS}-dev,app,dicom"
    assert _run(venv, "setup") == ([], "")
    calls, err = _run(venv, "scripts/quickstart.sh")
    assert calls == ["mammojax quickstart --workdir runs/quickstart"] and "setup:" not in err
    assert _run(venv, "setup", EXTRAS="dicom") == ([], "")  # a subset of what is there


def test_setup_adds_missing_extras_and_follows_pyproject(venv):
    stamp = venv / ".mammojax-installed"
    stamp.write_text(f"{DEPS}-dicom\n")  # an environment an older quickstart.sh made
    calls, err = _run(venv, "setup")
    assert calls == [f"python -m pip install -q -e {REPO}[dicom,dev,app]"]
    assert "updating" in err and "1 GB" not in err
    assert stamp.read_text().strip() == f"{DEPS}-dicom,dev,app"
    assert _run(venv, "setup") == ([], "")

    stamp.write_text("0123abcd-dev,app,dicom\n")  # pyproject.toml changed since
    calls, _ = _run(venv, "setup")
    assert calls == [f"python -m pip install -q -e {REPO}[dev,app,dicom]"]
