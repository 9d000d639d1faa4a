#!/usr/bin/env bash
# kube-mapserver on kind (needs Docker): the real image, the real chart, real MapServer pods.
#   hack/kind.sh up      kind cluster, docker build + kind load, helm install (values-local),
#                        sample data on the data volume, the example MapService
#   hack/kind.sh smoke   hack/smoke.sh through port-forwards to the facade and the MapService
#   hack/kind.sh logs    pods, events, custom resources and every container's log (on failure)
#   hack/kind.sh down    delete the cluster
# Used by `make kind-up` / `make kind-smoke` and by .github/workflows/smoke-kind.yml.
# Environment: KIND_CLUSTER (kube-mapserver), KMS_NAMESPACE (kube-mapserver), KUBECTL (kubectl),
# KMS_IMAGE (ghcr.io/kube-mapserver/kube-mapserver:dev), KMS_LOG_DIR (logs: also write files there).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tool-versions.env
source hack/tool-versions.env

CLUSTER=${KIND_CLUSTER:-kube-mapserver}
NS=${KMS_NAMESPACE:-kube-mapserver}
RELEASE=kube-mapserver
IMAGE=${KMS_IMAGE:-ghcr.io/kube-mapserver/kube-mapserver:dev}
# our MapServer (Apache + mod_fcgid) and tile cache (Apache + mod_mapcache) images, from images/
MAPSERVER_IMAGE=${KMS_MAPSERVER_IMAGE:-ghcr.io/kube-mapserver/mapserver:dev}
MAPCACHE_IMAGE=${KMS_MAPCACHE_IMAGE:-ghcr.io/kube-mapserver/mapcache:dev}
DEBIAN_IMAGE=${KMS_DEBIAN_IMAGE:-debian:12-slim}
KUBECTL=${KUBECTL:-kubectl}
CONTEXT="kind-$CLUSTER"

log() { printf '[kind %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
k() { "$KUBECTL" --context "$CONTEXT" "$@"; }

tools() {
  local bins
  bins=$(hack/build-helm.sh --kind | tail -1)
  HELM=${bins%% *}
  KIND=${bins##* }
  command -v docker >/dev/null || { log "docker is required"; exit 2; }
  command -v "$KUBECTL" >/dev/null || { log "kubectl is required (or set KUBECTL)"; exit 2; }
}

up() {
  tools
  if "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    log "cluster $CLUSTER exists"
  else
    log "creating cluster $CLUSTER (kind $KIND_VERSION)"
    "$KIND" create cluster --name "$CLUSTER" --wait 120s
  fi
  log "building $IMAGE, $MAPSERVER_IMAGE, $MAPCACHE_IMAGE"
  docker build --build-arg VERSION=dev -t "$IMAGE" .
  docker build --build-arg BASE_IMAGE="$DEBIAN_IMAGE" -t "$MAPSERVER_IMAGE" images/mapserver
  docker build --build-arg BASE_IMAGE="$DEBIAN_IMAGE" -t "$MAPCACHE_IMAGE" images/mapcache
  log "loading images into the node"
  "$KIND" load docker-image --name "$CLUSTER" "$IMAGE" "$MAPSERVER_IMAGE" "$MAPCACHE_IMAGE"
  log "namespace $NS, enforcing the restricted Pod Security Standard on every pod"
  k create namespace "$NS" --dry-run=client -o yaml | k apply -f -
  k label namespace "$NS" --overwrite pod-security.kubernetes.io/enforce=restricted \
    pod-security.kubernetes.io/warn=restricted
  log "helm upgrade --install $RELEASE (values-local)"
  "$HELM" --kube-context "$CONTEXT" upgrade --install "$RELEASE" charts/kube-mapserver \
    --namespace "$NS" -f charts/kube-mapserver/values-local.yaml \
    --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
    --set mapserverImage.repository="${MAPSERVER_IMAGE%:*}" --set mapserverImage.tag="${MAPSERVER_IMAGE##*:}" \
    --set mapcacheImage.repository="${MAPCACHE_IMAGE%:*}" --set mapcacheImage.tag="${MAPCACHE_IMAGE##*:}" \
    --wait --timeout 5m
  k -n "$NS" rollout status "deployment/$RELEASE-operator" --timeout=120s
  k -n "$NS" rollout status "deployment/$RELEASE-api" --timeout=120s
  seed
  log "example MapService ocean (serves datasets labelled collection=ocean) with its tile cache volume"
  k -n "$NS" apply -f examples/tile-cache-volume.yaml
  k -n "$NS" apply -f examples/service.yaml
  log "ready: make kind-smoke"
}

# The example datasets' files (hack/sample_data.py) on the data volume, written by a pod running
# the product image as uid 10001 (it has GDAL and numpy).
seed() {
  log "writing sample data onto the data volume (claim map-data)"
  k -n "$NS" create configmap kms-sample-data --from-file=sample_data.py=hack/sample_data.py \
    --dry-run=client -o yaml | k apply -f -
  k -n "$NS" delete pod kms-seed --ignore-not-found --wait=true
  k -n "$NS" apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata: {name: kms-seed, labels: {app.kubernetes.io/part-of: kube-mapserver}}
spec:
  restartPolicy: Never
  securityContext: {runAsNonRoot: true, runAsUser: 10001, fsGroup: 10001, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: seed
      image: $IMAGE
      imagePullPolicy: Never
      command: [python, /scripts/sample_data.py, /data]
      securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
      volumeMounts: [{name: data, mountPath: /data}, {name: scripts, mountPath: /scripts}, {name: tmp, mountPath: /tmp}]
  volumes:
    - {name: data, persistentVolumeClaim: {claimName: map-data}}
    - {name: scripts, configMap: {name: kms-sample-data}}
    - {name: tmp, emptyDir: {}}
EOF
  k -n "$NS" wait --for=jsonpath='{.status.phase}'=Succeeded pod/kms-seed --timeout=180s \
    || { k -n "$NS" logs kms-seed || true; log "seeding the data volume failed"; exit 1; }
  k -n "$NS" logs kms-seed | tail -3
  k -n "$NS" delete pod kms-seed --wait=false
}

PF_PIDS=()
stop_port_forwards() { for pid in "${PF_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }

port_forward() { # TARGET LOCAL:REMOTE
  k -n "$NS" port-forward "$1" "$2" >/dev/null 2>&1 &
  PF_PIDS+=($!)
}

# The facade through a port-forward; MapServer through the apiserver's service proxy (kubectl
# proxy), which follows the Service while the MapServer Deployment rolls to a new mapfile.
smoke() {
  command -v "$KUBECTL" >/dev/null || { log "kubectl is required (or set KUBECTL)"; exit 2; }
  trap stop_port_forwards EXIT
  port_forward "svc/$RELEASE-api" 18000:80
  k proxy --port=18001 >/dev/null 2>&1 &
  PF_PIDS+=($!)
  sleep 3
  local password
  password=$(k -n "$NS" get secret "$RELEASE-admin" -o jsonpath='{.data.password}' | base64 -d)
  KMS_URL=http://127.0.0.1:18000 KMS_USERNAME=admin KMS_PASSWORD="$password" \
    SMOKE_WMS_BASE="http://127.0.0.1:18001/api/v1/namespaces/$NS/services/ocean:http/proxy" \
    SMOKE_TILES_BASE="http://127.0.0.1:18001/api/v1/namespaces/$NS/services/ocean-tiles:http/proxy" \
    SMOKE_REQUIRE_WMS=1 SMOKE_TIMEOUT=${SMOKE_TIMEOUT:-300} hack/smoke.sh
}

logs() {
  local dir=${KMS_LOG_DIR:-}
  [ -n "$dir" ] && mkdir -p "$dir"
  out() { if [ -n "$dir" ]; then tee -a "$dir/$1"; else cat; fi; }
  {
    echo "=== pods"; k get pods -A -o wide
    echo "=== events ($NS)"; k -n "$NS" get events --sort-by=.lastTimestamp
    echo "=== custom resources"; k -n "$NS" get mapdatasets,mapservices,mapjobs -o yaml
    echo "=== deployments, jobs"; k -n "$NS" get deployments,replicasets,jobs,services,pvc -o wide
    echo "=== describe unready pods"
    for p in $(k -n "$NS" get pods -o jsonpath='{range .items[?(@.status.phase!="Succeeded")]}{.metadata.name}{"\n"}{end}'); do
      k -n "$NS" describe pod "$p"
    done
  } 2>&1 | out state.txt
  for p in $(k -n "$NS" get pods -o jsonpath='{.items[*].metadata.name}'); do
    for c in $(k -n "$NS" get pod "$p" -o jsonpath='{.spec.initContainers[*].name} {.spec.containers[*].name}'); do
      { echo "=== log $p/$c"; k -n "$NS" logs "$p" -c "$c" --tail=300 || true
        k -n "$NS" logs "$p" -c "$c" --previous --tail=100 2>/dev/null || true; } 2>&1 | out "logs-$p-$c.txt"
    done
  done
}

down() {
  tools
  "$KIND" delete cluster --name "$CLUSTER"
}

case ${1:-} in
  up) up ;;
  seed) seed ;;
  smoke) smoke ;;
  logs) logs ;;
  down) down ;;
  *) echo "usage: $0 up|smoke|logs|down" >&2; exit 2 ;;
esac
