#!/usr/bin/env bash
# Install the environment (if needed) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash set_up_env.sh --dev --install-only
# The PostgreSQL backend is tested against a real local server (installed and started here).
if [[ -z "${T2I_TEST_PG_URL:-}" ]]; then
  T2I_TEST_PG_URL=$(bash tests/setup_postgres.sh)
  export T2I_TEST_PG_URL
fi
# The end-to-end test drives Debian's Chromium (installed here if missing) through Playwright.
bash tests/setup_browser.sh
exec .venv/bin/python -m pytest "$@"
