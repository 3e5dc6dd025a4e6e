"""Jobs started together on the same data share one preparation instead of failing.

Real processes (``mammojax data prepare``) on a cold store: the ones that do
not get the lock wait for it, then find the dataset finished; a waiter whose
preparer is killed takes over and decodes only the unfinished chunks.
(Two ``mammojax train`` runs started together on a cold cache: the fixture of
``tests/train/test_resume.py``.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mammojax.data import preparation
from mammojax.data.prepared import open_prepared
from paths import REPO
from test_prepared import _big_manifest

pytestmark = pytest.mark.slow
FILMS = 24


def _command(manifest, out):
    return [sys.executable, "-m", "mammojax", "data", "prepare", "--dataset", "csv", "--data-dir", str(manifest),
            "--out", str(out), "--image-size", "64x48", "--workers", "1"]


def _counts(stderr: str) -> dict:
    """The numbers of a run's ``prepared DIR: N examples (D decoded, R reused, X redone ...`` line."""
    line = next(line for line in stderr.splitlines() if line.startswith("prepared "))
    inside = line.split("(", 1)[1].split(")", 1)[0]
    return {part.split(" ", 1)[1].split(" ")[0]: int(part.split(" ", 1)[0]) for part in inside.split(", ")}


def _start(command, log_path):
    log = open(log_path, "w")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=log, text=True), log_path


def test_preparations_started_together_all_succeed_and_decode_each_file_once(tmp_path):
    manifest = _big_manifest(tmp_path / "raw", FILMS)
    out = tmp_path / "out"
    runs = [_start(_command(manifest, out), tmp_path / f"job{i}.log") for i in range(3)]
    results = []
    for process, log_path in runs:
        stdout, _ = process.communicate(timeout=300)
        stderr = log_path.read_text()
        assert process.returncode == 0, stderr[-2000:]
        assert stdout.strip().splitlines()[-1] == str(out)
        results.append((_counts(stderr), stderr))
    assert sum(counts["decoded"] for counts, _ in results) == FILMS  # decoded once, by one of them
    for counts, stderr in results:
        assert counts["decoded"] + counts["reused"] == FILMS
        if counts["decoded"] == 0:  # it came second: it waited, or came after the first had finished
            assert "is preparing it; waiting" in stderr or counts["reused"] == FILMS
    assert open_prepared(out).num_examples == FILMS


def test_a_waiter_takes_over_when_the_preparer_is_killed(tmp_path):
    manifest = _big_manifest(tmp_path / "raw", FILMS)
    out = tmp_path / "out"
    store = out / preparation.WORK_DIR
    owner, _ = _start(_command(manifest, out), tmp_path / "owner.log")
    deadline = time.time() + 120
    while time.time() < deadline and not list(store.glob("chunk-*.json")):
        time.sleep(0.01)
    waiter, waiter_log = _start(_command(manifest, out), tmp_path / "waiter.log")
    while time.time() < deadline and "is preparing it; waiting" not in waiter_log.read_text():
        assert waiter.poll() is None, waiter_log.read_text()[-2000:]
        time.sleep(0.05)
    finished_before = len(list(store.glob("chunk-*.json")))
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert 0 < finished_before < 4, "the kill must land between the first and the last chunk"
    stdout, _ = waiter.communicate(timeout=300)
    stderr = waiter_log.read_text()
    assert waiter.returncode == 0, stderr[-2000:]
    assert "the other preparation ended" in stderr
    counts = _counts(stderr)
    assert counts["decoded"] + counts["reused"] == FILMS
    assert 0 < counts["decoded"] < FILMS and counts["reused"] >= finished_before * FILMS // 4  # only what the owner left
    prepared = open_prepared(out)
    assert prepared.num_examples == FILMS
    assert not list(store.glob("started-*.json")) and not (store / "plan.json").exists()
    assert np.isfinite(prepared.load_arrays()[0]).all()
