#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment and installs mammojax
# into it. Sourced by quickstart.sh and test.sh: one environment serves both
# (and the web page), so whichever runs second installs nothing.
#
#   MAMMOJAX_VENV   where the environment lives (default: .venv in the repo)
#   EXTRAS          pip extras to install (default: dev,app,dicom, all of them:
#                   the tests need every one)
#
# The stamp $MAMMOJAX_VENV/.mammojax-installed records "<sha256 of
# pyproject.toml>-<extras installed>". pip runs again only when pyproject.toml
# changed or a requested extra is missing; extras installed before are kept.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MAMMOJAX_VENV:-$repo/.venv}"
extras="${EXTRAS:-dev,app,dicom}"
python="${PYTHON:-python3}"

fresh=0
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating virtual environment in $venv" >&2
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  fresh=1
fi
stamp="$venv/.mammojax-installed"
deps="$(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1)"
current=0    # the stamp matches today's pyproject.toml
installed=""
if [ -f "$stamp" ]; then
  recorded="$(cat "$stamp")"
  if [ "${recorded%%-*}" = "$deps" ]; then
    current=1
    installed="${recorded#*-}"
  fi
fi
missing=""
for extra in ${extras//,/ }; do
  case ",$installed," in
    *",$extra,"*) ;;
    *) missing="$missing,$extra" ;;
  esac
done
if [ "$current" = 0 ] || [ -n "$missing" ]; then
  want="$(echo "$installed$missing" | sed 's/^,//')"
  if [ "$fresh" = 1 ] || [ ! -f "$stamp" ]; then
    echo "setup: installing mammojax[$want] (the first run downloads about 1 GB of wheels)" >&2
  else
    echo "setup: updating mammojax[$want] (pyproject.toml or the extras changed)" >&2
  fi
  "$venv/bin/python" -m pip install -q -e "$repo${want:+[$want]}"
  echo "$deps-$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
