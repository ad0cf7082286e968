#!/usr/bin/env bash
# Install (Debian's package) and start a local PostgreSQL server for the tests, on loopback only.
# Prints the admin URL the tests use to create and drop throwaway databases.
set -euo pipefail
log() { echo "$@" >&2; }
SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  log "==> installing PostgreSQL from Debian's packages"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >&2
fi
VERSION=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | awk '{print $1, $2}' | grep -q "^$VERSION main$"; then
  $SUDO pg_createcluster "$VERSION" main >&2
fi
PORT=$(pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" {print $3}')
if ! pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" {print $4}' | grep -q online; then
  log "==> starting PostgreSQL $VERSION on port $PORT"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$VERSION" main start >&2
fi
as_postgres() { if [[ $(id -u) == 0 ]]; then su postgres -c "$1"; else sudo -u postgres sh -c "$1"; fi; }
as_postgres "psql -p $PORT -qtAc \"SELECT 1 FROM pg_roles WHERE rolname = 't2i_test'\"" | grep -q 1 ||
  as_postgres "psql -p $PORT -qc \"CREATE ROLE t2i_test LOGIN CREATEDB PASSWORD 't2i_test'\"" >&2
echo "postgresql://t2i_test:t2i_test@127.0.0.1:$PORT/postgres"
