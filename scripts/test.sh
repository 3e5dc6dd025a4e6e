#!/usr/bin/env bash
# Sets up the environment (if needed) and runs the test suite. This is the
# README's test command, and .ci/run calls exactly this script.
#   scripts/test.sh [pytest args...]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
source scripts/setup_env.sh  # the same environment (and extras) as scripts/quickstart.sh
# The end-to-end web test drives Debian's Chromium; install it when missing.
bash scripts/install_browser.sh || echo "test: chromium unavailable; the browser test will skip" >&2
# The package's floors ([tool.importlinter] in pyproject.toml, docs/ARCHITECTURE.md): an import
# that runs upward fails the run here, before the tests.
lint-imports
# One pytest worker per core (MAMMOJAX_TEST_WORKERS overrides; 0 runs in this process): many tests
# wait on subprocesses or compile on one thread, so a single worker left a 2-core machine 30 % idle.
# --dist loadfile keeps each module's tests, and so its module-scoped training runs, on one worker.
exec python -m pytest -q -n "${MAMMOJAX_TEST_WORKERS:-auto}" --dist loadfile "$@"
