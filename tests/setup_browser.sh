#!/usr/bin/env bash
# Install Debian's Chromium for the browser test (tests/test_browser.py drives it with Playwright;
# Playwright's own browser download is not used).
set -euo pipefail
log() { echo "$@" >&2; }
SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"

if [[ ! -x /usr/bin/chromium ]]; then
  log "==> installing Chromium from Debian's packages"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >&2
fi
