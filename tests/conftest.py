"""Shared test fixtures and paths.

Tests are grouped in folders that mirror the package (``tests/scoring/`` for
``mammojax/scoring``, ...); the support modules (``eval_support``,
``app_support``, ``train_support``, ...) stay in ``tests/`` and are importable
from every folder because this directory is put on ``sys.path`` here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from paths import MIAS_ARCHIVE  # noqa: E402  (importable once tests/ is on the path)


@pytest.fixture(scope="session")
def mias_archive() -> Path:
    """The shared mini-MIAS archive (research use only; read from ../shared, never copied in)."""
    if not MIAS_ARCHIVE.is_file():
        pytest.skip(f"mini-MIAS archive not found at {MIAS_ARCHIVE}")
    return MIAS_ARCHIVE
