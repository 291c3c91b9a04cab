#!/usr/bin/env bash
# Node.js packages for the gRPC interop test (tests/runtime/transports/test_grpc_interop.py):
# a stock @grpc/grpc-js + @grpc/proto-loader client, installed from npm into
# tests/runtime/transports/grpc_js/node_modules (never committed), pinned by its package-lock.json.
# Idempotent: installs Node.js when missing and the packages when absent or out of date.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

command -v node >/dev/null 2>&1 || apt_install nodejs npm
DIR="$(cd "$(dirname "$0")/../.." && pwd)/tests/runtime/transports/grpc_js"
STAMP="$DIR/node_modules/.flare-installed"
if [ ! -e "$STAMP" ] || [ "$DIR/package-lock.json" -nt "$STAMP" ]; then
  (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error)
  touch "$STAMP"
fi
echo "node: $(node --version), @grpc/grpc-js $(node -p "require('$DIR/node_modules/@grpc/grpc-js/package.json').version")"
