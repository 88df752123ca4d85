#!/usr/bin/env bash
# Installs the PostgreSQL server the state-store tests start (see
# tests/src/postgres.rs), unless one is already installed. Idempotent.
# Debian/Ubuntu only: the tests look for /usr/lib/postgresql/*/bin/initdb.
set -euo pipefail

if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  echo "postgresql: already installed ($(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1))"
  exit 0
fi

if ! command -v apt-get >/dev/null; then
  echo "postgresql: apt-get not found; install the PostgreSQL server (initdb, pg_ctl) by hand" >&2
  exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  sudo=(sudo)
fi

echo "postgresql: installing Debian's postgresql package"
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
