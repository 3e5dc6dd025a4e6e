#!/usr/bin/env bash
# Patient-wise 5-fold cross-validation of configs/mias.py on mini-MIAS.
#   scripts/mias_cv.sh [MIAS_PATH] [WORKDIR] [extra args for scripts/mias_cv.py, e.g. --quick]
# MIAS_PATH defaults to ../shared/data/mias/all-mias-dev.tar.gz (relative to the repo).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${1:-$repo/../shared/data/mias/all-mias-dev.tar.gz}"
workdir="${2:-runs/mias_cv}"
shift $(( $# < 2 ? $# : 2 ))
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$repo/.venv/bin/activate" ]; then
    source "$repo/.venv/bin/activate"
fi
exec python "$repo/scripts/mias_cv.py" --data "$data" --workdir "$workdir" "$@"
