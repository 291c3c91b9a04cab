#!/usr/bin/env bash
# Node.js packages of the TypeScript client (clients/typescript: @flare/client, its tests,
# protoc-gen-es for `flare gen --ts`, and esbuild for the IM chat page's bundle), installed from
# npm into clients/typescript/node_modules (never committed), pinned by its package-lock.json.
# Used by tests/clients/test_typescript.py, tests/codegen/test_codegen_typescript.py and
# tests/im/web/test_im_chat_bundle.py.
# Idempotent: installs Node.js when missing and the packages when absent or out of date.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

command -v node >/dev/null 2>&1 || apt_install nodejs npm
DIR="$(cd "$(dirname "$0")/../.." && pwd)/clients/typescript"
STAMP="$DIR/node_modules/.flare-installed"
if [ ! -e "$STAMP" ] || [ "$DIR/package-lock.json" -nt "$STAMP" ]; then
  (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error)
  touch "$STAMP"
fi
echo "node: $(node --version), typescript $(node -p "require('$DIR/node_modules/typescript/package.json').version")"
