#!/usr/bin/env bash
# Build helm (and with --actionlint / --kind those too) once from the Go module proxy into the same
# cache as the control plane: ~/.cache/kube-mapserver/bin/<name>-<version>/ (override with
# KMS_CACHE_DIR). Versions: hack/tool-versions.env.
# Usage: hack/build-helm.sh [--actionlint] [--kind]   (prints the binary path(s) on the last line)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tool-versions.env
source "$here/tool-versions.env"
# shellcheck source=lib.sh
source "$here/lib.sh"

CACHE=${KMS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-mapserver}
HELM_DIR="$CACHE/bin/helm-$HELM_VERSION"
ACTIONLINT_DIR="$CACHE/bin/actionlint-$ACTIONLINT_VERSION"
KIND_DIR="$CACHE/bin/kind-$KIND_VERSION"
export GOTOOLCHAIN=local CGO_ENABLED=0
export GOPROXY=${GOPROXY:-https://proxy.golang.org}


# go_install NAME DIR MODULE@VERSION [ldflags]
go_install() {
  local name=$1 dir=$2 pkg=$3 ld=${4:-"-s -w"}
  if [ -x "$dir/$name" ]; then log "$name: cached in $dir"; return; fi
  rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
  with_heartbeat "$name ${pkg##*@}: go install" \
    env GOBIN="$dir.tmp" go install -trimpath -ldflags "$ld" "$pkg"
  rm -rf "$dir"; mv "$dir.tmp" "$dir"
}

command -v go >/dev/null || { log "go is not installed (apt-get install golang-go or a Go >= 1.24 toolchain)"; exit 1; }
out=()
# Set the ldflags like upstream's Makefile: the version, and the Kubernetes version `helm template`
# and `helm lint` assume (from the client-go it is built with; without it helm assumes v1.20).
helm_ldflags() {
  local mod client_go major minor ld="-s -w"
  mod=$(curl -fsSL --max-time 60 "$GOPROXY/helm.sh/helm/v3/@v/$HELM_VERSION.mod")
  client_go=$(echo "$mod" | sed -nE 's#^\s*k8s\.io/client-go v0\.([0-9]+)\..*#\1#p' | head -1)
  [ -n "$client_go" ] || { log "helm: cannot read the client-go version from its go.mod"; return 1; }
  major=1; minor=$client_go
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ld+=" -X $pkg.k8sVersionMajor=$major -X $pkg.k8sVersionMinor=$minor"
  done
  ld+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ld+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  echo "$ld"
}
if [ -x "$HELM_DIR/helm" ]; then
  log "helm: cached in $HELM_DIR"
else
  go_install helm "$HELM_DIR" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "$(helm_ldflags)"
fi
out+=("$HELM_DIR/helm")
for arg in "$@"; do
  case $arg in
    --actionlint)
      go_install actionlint "$ACTIONLINT_DIR" "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION" \
        "-s -w -X github.com/rhysd/actionlint.version=$ACTIONLINT_VERSION"
      out+=("$ACTIONLINT_DIR/actionlint") ;;
    --kind)
      go_install kind "$KIND_DIR" "sigs.k8s.io/kind@$KIND_VERSION"
      out+=("$KIND_DIR/kind") ;;
    *) log "unknown option $arg"; exit 2 ;;
  esac
done
echo "${out[*]}"
