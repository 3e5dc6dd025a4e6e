#!/usr/bin/env bash
# Patient-wise 5-fold cross-validation of configs/mias.py on mini-MIAS: a thin wrapper over `mammojax cv`.
#   scripts/mias_cv.sh [MIAS_PATH] [WORKDIR] [--config.KEY=VALUE ...]
# MIAS_PATH defaults to ../shared/data/mias/all-mias-dev.tar.gz (relative to the repo).
# Smoke-test sizes: mammojax cv --config configs/mias_smoke.py --data-dir MIAS_PATH --workdir DIR
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${1:-$repo/../shared/data/mias/all-mias-dev.tar.gz}"
workdir="${2:-runs/mias_cv}"
shift $(( $# < 2 ? $# : 2 ))
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$repo/.venv/bin/activate" ]; then
    source "$repo/.venv/bin/activate"
fi
exec python -m mammojax cv --config "$repo/configs/mias.py" --data-dir "$data" --workdir "$workdir" "$@"
