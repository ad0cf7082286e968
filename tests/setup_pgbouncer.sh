#!/usr/bin/env bash
# Install Debian's PgBouncer for the tests (as tests/setup_postgres.sh installs PostgreSQL). The tests start
# their own, one per test on a free port in transaction mode (scripts/local_pgbouncer.py), so that one of
# them can restart it under running executors; nothing is started here. Prints the binary's path.
set -euo pipefail
SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"
if ! command -v pgbouncer >/dev/null && [[ ! -x /usr/sbin/pgbouncer ]]; then
  echo "==> installing PgBouncer from Debian's packages" >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq pgbouncer >&2
  # the package's own service is not wanted: the tests run theirs on free ports
  $SUDO systemctl disable --now pgbouncer >/dev/null 2>&1 || true
fi
command -v pgbouncer || echo /usr/sbin/pgbouncer
