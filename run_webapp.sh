#!/usr/bin/env bash
# Start the web app and restart it if it dies (set_up_env.sh runs this; so can you).
#
#   bash run_webapp.sh [streamlit options...]
#
# It listens on T2I_ADDRESS, default 127.0.0.1: this machine only. To serve others, put a TLS proxy
# on this host in front of it (the default is right for that), or set T2I_ADDRESS to an interface's
# address (0.0.0.0: every interface). T2I_PORT: default 8501. The store is $T2I_DB.
set -uo pipefail
cd "$(dirname "$0")"
ADDRESS=${T2I_ADDRESS:-127.0.0.1}
PORT=${T2I_PORT:-8501}
exec bash scripts/supervise.sh web always \
  .venv/bin/streamlit run webapp.py --server.address "$ADDRESS" --server.port "$PORT" --server.headless true "$@"
