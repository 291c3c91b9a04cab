#!/usr/bin/env bash
# PostgreSQL for the IM storage tests (tests/im): a dedicated cluster "flare"
# on 127.0.0.1:55432 with database flare_test, user flare, password flare.
# Idempotent: installs when missing, creates the cluster once, starts it when down.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

PORT=55432
apt_install postgresql

VERSION=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | awk '{print $2}' | grep -qx flare; then
  pg_createcluster "$VERSION" flare --port "$PORT" -- --auth-host=scram-sha-256 >/dev/null
  CONF=/etc/postgresql/$VERSION/flare/postgresql.conf
  {
    echo "listen_addresses = '127.0.0.1'"
    echo "max_connections = 200"
    # A throwaway test cluster: durability is tested on SQLite, speed matters here.
    echo "fsync = off"
    echo "synchronous_commit = off"
    echo "full_page_writes = off"
  } >> "$CONF"
fi
if ! pg_lsclusters -h | awk '$2 == "flare" {print $4}' | grep -qx online; then
  pg_ctlcluster "$VERSION" flare start
fi
for _ in $(seq 1 50); do
  pg_isready -q -h 127.0.0.1 -p "$PORT" && break
  sleep 0.2
done
su postgres -c "psql -q -p $PORT -tAc \"SELECT 1 FROM pg_roles WHERE rolname = 'flare'\"" | grep -q 1 \
  || su postgres -c "psql -q -p $PORT -c \"CREATE ROLE flare LOGIN PASSWORD 'flare'\""
su postgres -c "psql -q -p $PORT -tAc \"SELECT 1 FROM pg_database WHERE datname = 'flare_test'\"" | grep -q 1 \
  || su postgres -c "createdb -p $PORT -O flare flare_test"
echo "postgresql: 127.0.0.1:$PORT/flare_test ready"
