#!/usr/bin/env bash
# Redis for the cluster broker tests (tests/runtime/cluster): a dedicated
# instance on 127.0.0.1:56379, no persistence, apart from any system Redis.
# Idempotent: installs Debian's redis-server when missing, starts the instance
# when it does not answer. Tests that restart Redis start their own
# redis-server on a free port (tests/runtime/cluster/conftest.py), never this one.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

PORT=56379
DIR=/tmp/flare-redis-$PORT
apt_install redis-server

if redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null | grep -qx PONG; then
  echo "redis: 127.0.0.1:$PORT ready"
  exit 0
fi
mkdir -p "$DIR"
redis-server --bind 127.0.0.1 --port "$PORT" --daemonize yes \
  --dir "$DIR" --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log" \
  --save '' --appendonly no --protected-mode no
for _ in $(seq 1 50); do
  redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null | grep -qx PONG && break
  sleep 0.2
done
redis-cli -h 127.0.0.1 -p "$PORT" ping | grep -qx PONG
echo "redis: 127.0.0.1:$PORT ready"
