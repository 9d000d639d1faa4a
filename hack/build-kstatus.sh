#!/usr/bin/env bash
# Build hack/kstatus (prints the health sigs.k8s.io/cli-utils/pkg/kstatus computes for objects on
# stdin: what Flux and Argo-style health checks see) once into the same cache as the control plane:
# ~/.cache/kube-mapserver/bin/kstatus-<cli-utils version>-<source hash>/ (override with KMS_CACHE_DIR).
# The cli-utils version is pinned in hack/kstatus/go.mod (with go.sum).
# Usage: hack/build-kstatus.sh [--print-path]   (prints the binary path on the last line; with
#        --print-path only that, building nothing)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

CACHE=${KMS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-mapserver}
src="$here/kstatus"
version=$(sed -nE 's#^\s*(require )?sigs\.k8s\.io/cli-utils (v[^ ]+).*#\2#p' "$src/go.mod")
hash=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-12)
dir="$CACHE/bin/kstatus-$version-$hash"
if [ "${1:-}" = "--print-path" ]; then echo "$dir/kstatus"; exit 0; fi
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
export GOPROXY=${GOPROXY:-https://proxy.golang.org}

if [ -x "$dir/kstatus" ]; then
  log "kstatus (cli-utils $version): cached in $dir"
else
  command -v go >/dev/null || { log "go is not installed (apt-get install golang-go or a Go >= 1.24 toolchain)"; exit 1; }
  rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
  (cd "$src" && with_heartbeat "kstatus (cli-utils $version): go build" \
    go build -trimpath -ldflags "-s -w" -o "$dir.tmp/kstatus" .)
  rm -rf "$dir"; mv "$dir.tmp" "$dir"
fi
echo "$dir/kstatus"
