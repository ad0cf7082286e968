#!/usr/bin/env bash
# Install the environment (if needed) and run the tests. Extra arguments go to pytest.
#
#   bash tests/run.sh          the whole suite (what CI runs): starts PostgreSQL and installs Chromium
#   bash tests/run.sh --fast   the fast tier (a few minutes): leaves out the tests marked browser,
#                              postgres, subprocess, trains or slow (pyproject.toml), and so needs neither
set -euo pipefail
cd "$(dirname "$0")/.."
FAST=0
if [[ "${1:-}" == "--fast" ]]; then FAST=1; shift; fi
bash set_up_env.sh --dev --install-only
if [[ $FAST == 1 ]]; then
  exec .venv/bin/python -m pytest -n "${T2I_TEST_WORKERS:-auto}" --dist loadfile \
    -m "not (browser or postgres or subprocess or trains or slow)" "$@"
fi
# The PostgreSQL backend is tested against a real local server (installed and started here).
if [[ -z "${T2I_TEST_PG_URL:-}" ]]; then
  T2I_TEST_PG_URL=$(bash tests/setup_postgres.sh)
  export T2I_TEST_PG_URL
fi
# PgBouncer (Debian's package, installed here if missing): the tests start their own in front of that server.
bash tests/setup_pgbouncer.sh >/dev/null
# The end-to-end test drives Debian's Chromium (installed here if missing) through Playwright.
bash tests/setup_browser.sh
# One worker per core (pytest-xdist), a test file's tests on one worker: the files' module fixtures (a
# web server, a browser, a seeded store) are built once. T2I_TEST_WORKERS=0 runs in this process.
exec .venv/bin/python -m pytest -n "${T2I_TEST_WORKERS:-auto}" --dist loadfile "$@"
