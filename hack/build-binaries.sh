#!/usr/bin/env bash
# Build the local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, kwok) and the real node's kubelet and kube-proxy once from the Go module proxy into a cache outside the repo keyed by version.
# Usage: hack/build-binaries.sh            (prints the bin directory on the last line)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=lib.sh
source "$here/lib.sh"

CACHE=${KMS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-mapserver}
K8S_DIR="$CACHE/bin/kubernetes-$K8S_VERSION"
ETCD_DIR="$CACHE/bin/etcd-$ETCD_VERSION"
KWOK_DIR="$CACHE/bin/kwok-$KWOK_VERSION"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
export GOPROXY=${GOPROXY:-https://proxy.golang.org}


build_kubernetes() {
  local bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
  local missing=0
  for b in "${bins[@]}"; do [ -x "$K8S_DIR/$b" ] || missing=1; done
  [ $missing -eq 0 ] && { log "kubernetes $K8S_VERSION: cached in $K8S_DIR"; return; }
  local work; work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  local staging="v0${K8S_VERSION#v1}"     # v1.34.4 -> v0.34.4
  log "kubernetes $K8S_VERSION: preparing wrapper module (staging modules at $staging)"
  local upstream_mod; upstream_mod=$(curl -fsSL --max-time 60 "$GOPROXY/k8s.io/kubernetes/@v/$K8S_VERSION.mod")
  {
    echo "module kms.local/k8sbuild"
    echo
    echo "go 1.24.0"
    echo
    echo "$upstream_mod" | grep -E '^godebug ' || true
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    echo "$upstream_mod" | sed -nE 's#^\s*(k8s\.io/[a-z0-9./-]+) => \./staging/.*#\t\1 => \1 '"$staging"'#p'
    echo ")"
  } > "$work/go.mod"
  log "kubernetes: $(grep -c '=>' "$work/go.mod") staging replaces"
  cat > "$work/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
  (cd "$work" && with_heartbeat "kubernetes: go mod tidy (downloads modules)" go mod tidy -e)
  local major=${K8S_VERSION#v}; major=${major%%.*}
  local minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
  local ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  mkdir -p "$K8S_DIR.tmp"
  (cd "$work" && with_heartbeat "kubernetes $K8S_VERSION: go build ${bins[*]}" \
    go build -trimpath -tags tools -ldflags "$ld" -o "$K8S_DIR.tmp/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl \
      k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
  rm -rf "$K8S_DIR"; mv "$K8S_DIR.tmp" "$K8S_DIR"
}

build_etcd() {
  [ -x "$ETCD_DIR/etcd" ] && { log "etcd $ETCD_VERSION: cached in $ETCD_DIR"; return; }
  local work; work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  log "etcd $ETCD_VERSION: preparing wrapper module"
  cat > "$work/go.mod" <<MOD
module kms.local/etcdbuild

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION

replace (
	go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/pkg/v3 => go.etcd.io/etcd/client/pkg/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 $ETCD_VERSION
	go.etcd.io/etcd/pkg/v3 => go.etcd.io/etcd/pkg/v3 $ETCD_VERSION
)
MOD
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > "$work/tools.go"
  (cd "$work" && with_heartbeat "etcd: go mod tidy" go mod tidy -e)
  mkdir -p "$ETCD_DIR.tmp"
  (cd "$work" && with_heartbeat "etcd $ETCD_VERSION: go build" \
    go build -trimpath -tags tools -ldflags "-s -w" -o "$ETCD_DIR.tmp/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$ETCD_DIR"; mv "$ETCD_DIR.tmp" "$ETCD_DIR"
}

build_kwok() {
  [ -x "$KWOK_DIR/kwok" ] && { log "kwok $KWOK_VERSION: cached in $KWOK_DIR"; return; }
  mkdir -p "$KWOK_DIR.tmp"
  with_heartbeat "kwok $KWOK_VERSION: go install" \
    env GOBIN="$KWOK_DIR.tmp" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  rm -rf "$KWOK_DIR"; mv "$KWOK_DIR.tmp" "$KWOK_DIR"
}

command -v go >/dev/null || { log "go is not installed (apt-get install golang-go or a Go >= 1.26 toolchain)"; exit 1; }
build_etcd
build_kwok
build_kubernetes
log "all binaries ready"
echo "$K8S_DIR:$ETCD_DIR:$KWOK_DIR"
