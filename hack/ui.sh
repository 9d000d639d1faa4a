#!/usr/bin/env bash
# The /ui/ page's bundle: `npm ci` from ui/package-lock.json (exact versions, no install scripts),
# then esbuild (ui/build.mjs) into api/kms_api/ui_static/ (not in git; the facade serves it, the
# image build does the same in its own stage). Skipped when the sources and the lockfile are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[ui %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
OUT=${1:-api/kms_api/ui_static}
command -v npm >/dev/null || { log "npm is missing: run hack/setup.sh (make setup)"; exit 1; }
lock=$(sha256sum ui/package-lock.json | cut -c1-16)
if [ ! -f "ui/node_modules/.kms-lock-$lock" ]; then
  log "npm ci (ui/package-lock.json)"
  (cd ui && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  touch "ui/node_modules/.kms-lock-$lock"
fi
src=$( (cd ui && cat package-lock.json build.mjs && find src -type f | LC_ALL=C sort | xargs cat) | sha256sum | cut -c1-16)
if [ "$(cat "$OUT/.source-hash" 2>/dev/null)" != "$src" ]; then
  (cd ui && node build.mjs "$(realpath -m "../$OUT")")
  echo "$src" > "$OUT/.source-hash"
fi
