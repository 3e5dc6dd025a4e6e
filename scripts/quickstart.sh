#!/usr/bin/env bash
# Sets up the environment (if needed) and runs the main job on the embedded
# default: synthetic mammogram phantoms -> train -> evaluate -> Grad-CAM.
#   scripts/quickstart.sh [WORKDIR]      (default: runs/quickstart)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
source scripts/setup_env.sh  # the same environment (and extras) as scripts/test.sh
exec mammojax quickstart --workdir "${1:-runs/quickstart}"
