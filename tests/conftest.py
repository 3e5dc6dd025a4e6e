"""Shared test fixtures and paths.

Tests are grouped in folders that mirror the package (``tests/scoring/`` for
``mammojax/scoring``, ...); the support modules (``eval_support``,
``app_support``, ``train_support``, ...) stay in ``tests/`` and are importable
from every folder because this directory is put on ``sys.path`` here.
"""

from __future__ import annotations

import collections
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

# The suite never reads or writes the user's cache (~/.cache/mammojax: prepared
# datasets, phantoms, XLA programs): one empty root per session, inherited by
# every subprocess the tests start, removed at the end. Set before any test
# module imports mammojax; tests that need a cache of their own still set
# MAMMOJAX_CACHE_DIR themselves.
TEST_CACHE = Path(tempfile.mkdtemp(prefix="mammojax-test-cache-"))
os.environ["MAMMOJAX_CACHE_DIR"] = str(TEST_CACHE)


def pytest_unconfigure(config):
    shutil.rmtree(TEST_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Modules with the most ``slow`` tests run first (stable otherwise: each module's tests stay in order).

    scripts/test.sh hands whole modules to one pytest-xdist worker per core
    (``--dist loadfile``) in this order; a run ends when its longest chain
    does, so starting the long modules first keeps a heavy one from being the
    last thing one worker does while the other waits (longest first).
    """
    slow = collections.Counter(item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.nodeid.split("::")[0]])

from paths import MIAS_ARCHIVE  # noqa: E402  (importable once tests/ is on the path)


@pytest.fixture(scope="session")
def mias_archive() -> Path:
    """The shared mini-MIAS archive (research use only; read from ../shared, never copied in)."""
    if not MIAS_ARCHIVE.is_file():
        pytest.skip(f"mini-MIAS archive not found at {MIAS_ARCHIVE}")
    return MIAS_ARCHIVE


@pytest.fixture(scope="module")
def phantom_films(tmp_path_factory) -> Path:
    """Four phantom PNG films of two women (W0, W1; label = view index) and a ``manifest.csv`` naming them."""
    from app_support import png_bytes

    folder = tmp_path_factory.mktemp("films")
    rows = ["path,label,patient_id"]
    for i, (height, width) in enumerate([(80, 64), (72, 60), (90, 70), (64, 64)]):
        name = f"W{i // 2}_{'LR'[i % 2]}_CC.png"
        (folder / name).write_bytes(png_bytes(height, width, seed=i))
        rows.append(f"{name},{i % 2},W{i // 2}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="session")
def run_cli():
    """``run_cli(args)``: runs ``mammojax ARGS`` in-process (stdout and stderr apart), asserting exit 0."""
    from click.testing import CliRunner

    from mammojax.cli import cli

    def run(args):
        result = CliRunner().invoke(cli, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result

    return run
