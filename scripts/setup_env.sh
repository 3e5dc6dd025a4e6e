#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment and installs mammojax
# into it. Sourced by the other scripts; safe to run again: pip only installs
# what is missing.
#
#   MAMMOJAX_VENV   where the environment lives (default: .venv in the repo)
#   EXTRAS          pip extras to install (default: dev,app,dicom)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MAMMOJAX_VENV:-$repo/.venv}"
extras="${EXTRAS:-dev,app,dicom}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating virtual environment in $venv" >&2
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
fi
stamp="$venv/.mammojax-installed"
# Reinstall only when the dependency list changed since the last install.
want="$(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1)-$extras"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing mammojax[$extras] (first run downloads ~1 GB of wheels)" >&2
  "$venv/bin/python" -m pip install -q -e "$repo[$extras]"
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
