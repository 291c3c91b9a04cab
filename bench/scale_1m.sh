#!/usr/bin/env bash
# One million idle Flare WebSocket connections on one host (bench/README.md, "Scale").
#
# For a 16-core / 128 GB Linux machine with the repository and its .venv:
#   bash bench/scale_1m.sh                 # connections
#   bash bench/scale_1m.sh --im            # IM sessions (needs PostgreSQL at
#                                          # FLARE_IM_POSTGRES_DSN and redis-server on PATH)
# Extra arguments go to bench/scale_bench.py. What it needs from the machine:
#   * a hard open-files limit of at least 20,000 per process (64 workers x ~15,600
#     connections, 60 client processes x ~16,700): `ulimit -Hn`;
#   * enough ephemeral ports: 1,000,000 client sockets from 127.0.0.1 to one port
#     need 36+ destination addresses at 28,232 ports each (net.ipv4.ip_local_port_range
#     32768-60999); the bench spreads over 127.0.0.1-127.0.0.40;
#   * ~16 GB for the server (RSS), ~20 GB for the clients, ~8 GB of kernel socket memory.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS=${CONNECTIONS:-1000000}
WORKERS=${WORKERS:-64}     # >= 51: 1,000,000 / 19,990 sockets per process
CLIENTS=${CLIENTS:-60}     # <= 18,000 connections each
ADDRESSES=${ADDRESSES:-40}

echo "cores: $(nproc), memory: $(free -g | awk '/Mem:/ {print $2}') GB, fd limit: $(ulimit -Hn)"
if [ "$(ulimit -Hn)" -lt 20000 ]; then
    echo "the hard open-files limit is below 20,000: raise it (limits.conf, systemd LimitNOFILE)" >&2
    exit 1
fi
ulimit -Sn "$(ulimit -Hn)"
# Best effort (needs root): a deep accept queue for the handshake burst.
sysctl -qw net.core.somaxconn=65535 2>/dev/null || true
sysctl -qw net.ipv4.tcp_max_syn_backlog=65535 2>/dev/null || true

exec .venv/bin/python -m bench.scale_bench \
    --connections "$CONNECTIONS" --workers "$WORKERS" --clients "$CLIENTS" \
    --addresses "$ADDRESSES" --uvloop --settle 10 --json "$@"
