#!/usr/bin/env bash
# etcd v3 for the service-discovery tests (tests/runtime/discovery): a dedicated
# single-member instance on 127.0.0.1:52379 (peer port 52380), its data in /tmp,
# apart from any system etcd. Idempotent: installs Debian's etcd-server when
# missing, starts the instance when it does not answer. Tests that restart etcd
# start their own etcd on free ports (tests/runtime/discovery/conftest.py),
# never this one.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

PORT=52379
PEER_PORT=52380
DIR=/tmp/flare-etcd-$PORT
apt_install etcd-server curl

healthy() {
  curl -fsS --max-time 2 "http://127.0.0.1:$PORT/health" 2>/dev/null | grep -q '"health":"true"'
}

if healthy; then
  echo "etcd: 127.0.0.1:$PORT ready"
  exit 0
fi
mkdir -p "$DIR"
# The Debian package's binary is /usr/bin/etcd; its own service (if enabled)
# listens on 2379 and is left alone.
setsid nohup /usr/bin/etcd --name flare-test --data-dir "$DIR/data" \
  --listen-client-urls "http://127.0.0.1:$PORT" --advertise-client-urls "http://127.0.0.1:$PORT" \
  --listen-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-cluster "flare-test=http://127.0.0.1:$PEER_PORT" \
  --log-level error >"$DIR/etcd.log" 2>&1 &
echo $! >"$DIR/etcd.pid"
for _ in $(seq 1 50); do
  healthy && break
  sleep 0.2
done
healthy || { tail -20 "$DIR/etcd.log"; exit 1; }
echo "etcd: 127.0.0.1:$PORT ready"
