#!/usr/bin/env bash
# Installs Debian's Chromium for the headless end-to-end test of the web page
# (tests/app/test_app_e2e.py). Playwright's own browser download is not used: CI
# machines may not reach it, and Debian's package is signed and pinned by apt.
#
# Idempotent and quiet: does nothing when /usr/bin/chromium already exists.
# Run as root (CI); otherwise it retries through sudo when available.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install_browser.sh: need root (or sudo) to apt-get install chromium" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
# The package lists may be missing on a fresh image; refresh them only if the
# first install attempt cannot find the package.
if ! $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; then
    $SUDO apt-get update -qq >/dev/null
    $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

if [ ! -x "$CHROMIUM" ]; then
    echo "install_browser.sh: apt-get finished but $CHROMIUM is missing" >&2
    exit 1
fi
