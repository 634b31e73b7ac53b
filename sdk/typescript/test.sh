#!/usr/bin/env bash
# Installs the SDK's pinned dev tools from the lockfile, type-checks it (strict), builds it (dist/ with .d.ts),
# compiles the tests and the example against the built package, and runs them with Node's test runner against a
# running credits-api:
#   CREDITS_BASE_URL   the API, e.g. http://127.0.0.1:8080
#   CREDITS_API_KEY    a key of the tenant the tests use (they make their own accounts, unique per run)
#   CREDITS_EXAMPLE_API_KEY  a key of a tenant without an account "user_abc123" yet, for the guide's example
#                      (defaults to CREDITS_API_KEY; see test/example.test.ts)
#   CREDITS_EXAMPLE_RERUN_API_KEY  the same, of another such tenant, for the example run twice
# scripts/test-sdk.sh starts a private API for this; scripts/test.sh runs that.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

: "${CREDITS_BASE_URL:?set CREDITS_BASE_URL to a running credits-api}"
: "${CREDITS_API_KEY:?set CREDITS_API_KEY to one of its keys}"
export CREDITS_BASE_URL CREDITS_API_KEY

log() { printf '[sdk %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 18)) || { echo "node $node_major is too old: the SDK needs Node 18+" >&2; exit 1; }

log "npm ci (node $(node --version), npm $(npm --version))"
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
rm -rf dist build
log "tsc --noEmit (strict): the SDK"
npx tsc -p tsconfig.json --noEmit
log "tsc: dist/ with declarations"
npx tsc -p tsconfig.json
log "tsc (strict): the tests and examples/get-started.ts against the built package"
npx tsc -p tsconfig.test.json
log "node --test against $CREDITS_BASE_URL"
node --test build/test/*.test.js
