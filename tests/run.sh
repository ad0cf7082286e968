#!/usr/bin/env bash
# Install the environment (if needed) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash set_up_env.sh --dev --install-only
exec .venv/bin/python -m pytest "$@"
