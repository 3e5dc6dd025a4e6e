"""Where the tests find the repository and the shared data: one definition for every test folder."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
# The mini-MIAS archive lent to the project (research use only: read from ../shared, never copied in).
MIAS_ARCHIVE = REPO.parent / "shared" / "data" / "mias" / "all-mias-dev.tar.gz"
# The RSNA screening JPEG export lent to the project (research use only: read from ../shared).
RSNA_ARCHIVE = REPO.parent / "shared" / "data" / "rsna" / "rsna-screening-dev.tar.gz"
