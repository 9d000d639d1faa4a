#!/usr/bin/env bash
# End-to-end smoke walk through a running kube-mapserver, from the outside, as an API client would:
# health -> login -> create a dataset -> Ready -> list -> cog-convert job -> success -> WMS
# GetCapabilities (+ GetMap) from the dataset's status URL -> tile cache: a tile, seeding -> clean up.
#
# Works against any installation: `make dev` (local stack), kind (`make kind-smoke`), a real cluster.
#   KMS_URL            facade base URL                      (default http://127.0.0.1:8000)
#   KMS_USERNAME       admin user                           (default admin)
#   KMS_PASSWORD       its password                         (required)
#   SMOKE_PATH         raster on the data volume            (default ocean/sst-sample.tif)
#   SMOKE_LABELS       labels of the dataset, k=v,k=v       (default collection=ocean: the example
#                      MapService `ocean` serves it)
#   SMOKE_TIMEOUT      seconds per wait                     (default 180)
#   SMOKE_WMS_BASE     replace scheme://host:port of the status URL, e.g. a port-forward to the
#                      MapService when the URL is a cluster-internal name (default: use as is)
#   SMOKE_REQUIRE_WMS  1: fail when the dataset gets no WMS URL or GetMap fails (default 0: the WMS
#                      steps need a MapService selecting the dataset; without one they are skipped)
#   SMOKE_TILES_BASE   like SMOKE_WMS_BASE, for the tile cache's URLs
#   SMOKE_TILES        0 skips the tile cache steps (default 1: run when the serving MapService has a
#                      tile cache; SMOKE_REQUIRE_WMS=1 makes a missing tile fatal)
#   SMOKE_JOB          0 skips the cog-convert job (default 1)
#   SMOKE_WMS          0 skips the WMS steps (default 1)
#   SMOKE_KEEP         1 keeps what the walk created (default 0: deleted at the end, also on failure)
#   SMOKE_MIN_COVERAGE share of the GetMap's pixels that must be drawn (default 0.2); a blank or
#                      one-colour image fails the walk (hack/png_coverage.py; tiles: any drawn pixel)
#   SMOKE_OUT          a folder to copy the GetMap and tile PNGs to (default: none)
# Exit 0 when every step passed; otherwise 1 with "SMOKE FAILED at step N (name): reason".
set -uo pipefail

KMS_URL=${KMS_URL:-http://127.0.0.1:8000}
KMS_URL=${KMS_URL%/}
KMS_USERNAME=${KMS_USERNAME:-admin}
SMOKE_PATH=${SMOKE_PATH:-ocean/sst-sample.tif}
SMOKE_LABELS=${SMOKE_LABELS:-collection=ocean}
SMOKE_TIMEOUT=${SMOKE_TIMEOUT:-180}
SMOKE_WMS_BASE=${SMOKE_WMS_BASE:-}
SMOKE_REQUIRE_WMS=${SMOKE_REQUIRE_WMS:-0}
SMOKE_TILES_BASE=${SMOKE_TILES_BASE:-}
SMOKE_TILES=${SMOKE_TILES:-1}
SMOKE_JOB=${SMOKE_JOB:-1}
SMOKE_WMS=${SMOKE_WMS:-1}
SMOKE_KEEP=${SMOKE_KEEP:-0}
SMOKE_MIN_COVERAGE=${SMOKE_MIN_COVERAGE:-0.2}
SMOKE_OUT=${SMOKE_OUT:-}
PY=${PYTHON:-python3}
HACK=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

RUN_ID=$(date +%s)-$$
NAME="smoke-$(printf '%s' "$RUN_ID" | tr -c 'a-z0-9\n' '-' | cut -c1-40)"
WORK=$(mktemp -d)
STEP=0
STEP_NAME=""
TOKEN=""
DATASET_CREATED=""
JOB_ID=""
T0=$SECONDS

log() { printf '[smoke %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
step() { STEP=$((STEP + 1)); STEP_NAME=$1; log "step $STEP: $1"; }
fail() {
  log "SMOKE FAILED at step $STEP ($STEP_NAME): $*"
  exit 1
}

# json FILE EXPR: evaluate a Python expression on the parsed JSON `d` (prints "" for None).
json() {
  "$PY" - "$1" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
v = eval(sys.argv[2], {"d": d})
print("" if v is None else (json.dumps(v) if isinstance(v, (dict, list)) else v))
PY
}

# api METHOD PATH [curl args...]: body to $WORK/body, HTTP status on stdout ("000": no answer).
api() {
  local method=$1 path=$2; shift 2
  local auth=()
  [ -n "$TOKEN" ] && auth=(-H "Authorization: Bearer $TOKEN")
  curl -sS -o "$WORK/body" -w '%{http_code}' --max-time 30 -X "$method" "${auth[@]}" "$@" "$KMS_URL$path" \
    2>"$WORK/curl.err" || true
}

body() { head -c 600 "$WORK/body" 2>/dev/null; }

cleanup() {
  local rc=$?
  if [ "$SMOKE_KEEP" != 1 ] && [ -n "$TOKEN" ]; then
    [ -n "$JOB_ID" ] && log "cleanup: DELETE /jobs/$JOB_ID -> $(api DELETE "/jobs/$JOB_ID")"
    [ -n "$DATASET_CREATED" ] && log "cleanup: DELETE /datasets/$NAME -> $(api DELETE "/datasets/$NAME")"
  fi
  rm -rf "$WORK"
  if [ $rc -eq 0 ]; then log "SMOKE PASSED: $STEP steps in $((SECONDS - T0))s"; fi
  exit $rc
}
trap cleanup EXIT

# wait_for WHAT CMD...: run CMD every 2s until it succeeds, at most SMOKE_TIMEOUT seconds.
wait_for() {
  local what=$1; shift
  local deadline=$((SECONDS + SMOKE_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    if "$@"; then return 0; fi
    sleep 2
  done
  fail "timed out after ${SMOKE_TIMEOUT}s waiting for $what; last: ${LAST:-nothing}"
}

# drawn PNG MIN: a PNG whose drawn (non-transparent) share is at least MIN and that is not one flat
# colour (hack/png_coverage.py, standard library only)
drawn() {
  "$PY" "$HACK/png_coverage.py" "$1" "$2" >>"$WORK/drawn.txt" 2>&1
}
# keep_image FILE: copy it to SMOKE_OUT (tests check its pixels)
keep_image() {
  if [ -n "$SMOKE_OUT" ] && [ -f "$1" ]; then cp "$1" "$SMOKE_OUT/"; fi
}

command -v curl >/dev/null || { log "curl is required"; exit 2; }
[ -n "${KMS_PASSWORD:-}" ] || { log "KMS_PASSWORD is required (the admin's password)"; exit 2; }
log "target $KMS_URL, user $KMS_USERNAME, dataset $NAME from $SMOKE_PATH"

# ------------------------------------------------------------------------------------------ health
step "GET /health answers (bounded wait)"
health_ok() {
  local code; code=$(api GET /health)
  LAST="HTTP $code $(body)$(cat "$WORK/curl.err" 2>/dev/null | head -c 200)"
  [ "$code" = 200 ] || return 1
  local status; status=$(json "$WORK/body" 'd.get("status")')
  LAST="status $status: $(body)"
  [ "$status" = ok ] || [ "$status" = degraded ]
}
wait_for "/health to answer 200" health_ok
log "health: $(json "$WORK/body" '", ".join(c["name"] + "=" + c["status"] for c in d.get("components", []))')"

# ------------------------------------------------------------------------------------------ login
step "POST /token as $KMS_USERNAME"
code=$(api POST /token --data-urlencode "username=$KMS_USERNAME" --data-urlencode "password=$KMS_PASSWORD")
[ "$code" = 200 ] || fail "HTTP $code: $(body)"
TOKEN=$(json "$WORK/body" 'd["access_token"]') || fail "no access_token in $(body)"
[ -n "$TOKEN" ] || fail "empty access_token"
log "logged in as $(json "$WORK/body" 'd.get("role")')"

step "protected route refuses a request without a token"
saved=$TOKEN; TOKEN=""
code=$(api POST /datasets -H 'Content-Type: application/json' -d '{}')
TOKEN=$saved
[ "$code" = 401 ] || fail "POST /datasets without a token answered HTTP $code, expected 401"

# ------------------------------------------------------------------------------------------ dataset
step "POST /datasets $NAME ($SMOKE_PATH)"
payload=$("$PY" - "$NAME" "$SMOKE_PATH" "$SMOKE_LABELS" <<'PY'
import json, sys
name, path, labels = sys.argv[1:4]
print(json.dumps({
    "id": name,
    "labels": dict(kv.split("=", 1) for kv in labels.split(",") if kv),
    "type": "raster",
    "source": {"path": path},
    "identifier": f"smoke:{name}",
    "title": f"Smoke test {name}",
    "protocols": ["WMS"],
}))
PY
)
code=$(api POST /datasets -H 'Content-Type: application/json' -d "$payload")
[ "$code" = 201 ] || fail "HTTP $code: $(body)"
DATASET_CREATED=1

step "dataset $NAME becomes Ready"
dataset_ready() {
  local code; code=$(api GET "/datasets/$NAME")
  LAST="HTTP $code $(body)"
  [ "$code" = 200 ] || return 1
  LAST="ready=$(json "$WORK/body" 'd.get("ready")') reason=$(json "$WORK/body" 'd.get("reason")') message=$(json "$WORK/body" 'd.get("message")')"
  [ "$(json "$WORK/body" 'd.get("ready")')" = True ]
}
wait_for "dataset $NAME Ready" dataset_ready
cp "$WORK/body" "$WORK/dataset.json"
log "ready: layer $(json "$WORK/dataset.json" '(d.get("status") or {}).get("layerName")'), url $(json "$WORK/dataset.json" '(d.get("status") or {}).get("url")')"

step "GET /datasets lists $NAME"
code=$(api GET "/datasets?q=$NAME&limit=50")
[ "$code" = 200 ] || fail "HTTP $code: $(body)"
[ "$(json "$WORK/body" "any(i['id'] == '$NAME' for i in d['items'])")" = True ] || fail "$NAME not in $(body)"

step "PATCH /datasets/$NAME (merge patch); its old ETag is refused (412)"
code=$(api GET "/datasets/$NAME" -D "$WORK/headers")
etag=$(tr -d '\r' <"$WORK/headers" | sed -n 's/^[Ee][Tt][Aa][Gg]: //p')
[ "$code" = 200 ] && [ -n "$etag" ] || fail "GET /datasets/$NAME: HTTP $code, ETag '$etag'"
code=$(api PATCH "/datasets/$NAME" -H 'Content-Type: application/merge-patch+json' \
  -d "{\"abstract\": \"patched by the smoke walk\"}")
[ "$code" = 200 ] || fail "PATCH: HTTP $code $(body)"
[ "$(json "$WORK/body" 'd["spec"].get("abstract")')" = "patched by the smoke walk" ] || fail "PATCH: $(body)"
code=$(api PATCH "/datasets/$NAME" -H 'Content-Type: application/merge-patch+json' -H "If-Match: $etag" \
  -d '{"title": "stale"}')
[ "$code" = 412 ] || fail "PATCH with the old ETag $etag: HTTP $code (want 412) $(body)"

# ------------------------------------------------------------------------------------------ job
if [ "$SMOKE_JOB" = 1 ]; then
  step "POST /jobs/cog-convert"
  out="smoke/$NAME.cog.tif"
  code=$(api POST /jobs/cog-convert -H 'Content-Type: application/json' \
    -d "{\"name\": \"$NAME-cog\", \"params\": {\"input\": \"$SMOKE_PATH\", \"output\": \"$out\"}}")
  [ "$code" = 201 ] || fail "HTTP $code: $(body)"
  JOB_ID=$(json "$WORK/body" 'd["id"]')

  step "job $JOB_ID succeeds"
  job_done() {
    local code; code=$(api GET "/jobs/$JOB_ID")
    LAST="HTTP $code $(body)"
    [ "$code" = 200 ] || return 1
    local state; state=$(json "$WORK/body" 'd["state"]')
    case $state in
      success) return 0 ;;
      failure | cancelled) fail "job $JOB_ID ended $state: $(json "$WORK/body" 'd.get("message")')" ;;
      *) LAST="state $state ($(json "$WORK/body" 'd.get("phase")')): $(json "$WORK/body" 'd.get("message")')"; return 1 ;;
    esac
  }
  wait_for "job $JOB_ID success" job_done
  log "job result: $(json "$WORK/body" 'd.get("result")' | head -c 300)"
fi

# ------------------------------------------------------------------------------------------ WMS
rebase() { # URL BASE: URL with BASE's scheme://host:port/path prefix (port-forwards, service proxies)
  "$PY" -c 'import sys, urllib.parse as u; a = u.urlsplit(sys.argv[1]); b = u.urlsplit(sys.argv[2]); print(u.urlunsplit((b.scheme, b.netloc, b.path.rstrip("/") + a.path, a.query, "")))' "$1" "$2"
}
url=""
[ "$SMOKE_WMS" = 1 ] && url=$(json "$WORK/dataset.json" '(d.get("status") or {}).get("url")')
layer=$(json "$WORK/dataset.json" '(d.get("status") or {}).get("layerName")')
if [ "$SMOKE_WMS" != 1 ]; then
  log "WMS steps skipped (SMOKE_WMS=0)"
elif [ -z "$url" ]; then
  # the URL arrives once a MapService selects the dataset; it may come after Ready
  wait_url() { api GET "/datasets/$NAME" >/dev/null; url=$(json "$WORK/body" '(d.get("status") or {}).get("url")'); LAST="no status.url yet"; [ -n "$url" ]; }
  if [ "$SMOKE_REQUIRE_WMS" = 1 ]; then
    step "dataset gets a WMS URL (a MapService serves it)"
    wait_for "status.url of $NAME" wait_url
  else
    for _ in $(seq 10); do wait_url && break; sleep 2; done
  fi
fi
if [ "$SMOKE_WMS" != 1 ]; then
  :
elif [ -z "$url" ]; then
  log "no MapService serves $NAME (no status.url): WMS steps skipped (SMOKE_REQUIRE_WMS=1 makes this fatal)"
else
  if [ -n "$SMOKE_WMS_BASE" ]; then
    url=$(rebase "$url" "$SMOKE_WMS_BASE")
  fi
  step "WMS GetCapabilities lists $layer"
  caps_ok() {
    local code; code=$(curl -sS -o "$WORK/caps.xml" -w '%{http_code}' --max-time 30 "$url" 2>"$WORK/curl.err" || true)
    LAST="HTTP $code from $url $(head -c 300 "$WORK/caps.xml" 2>/dev/null)$(head -c 200 "$WORK/curl.err")"
    [ "$code" = 200 ] && grep -q "WMS_Capabilities\|WMT_MS_Capabilities" "$WORK/caps.xml" && grep -q "<Name>$layer</Name>" "$WORK/caps.xml"
  }
  wait_for "GetCapabilities at $url listing $layer" caps_ok

  step "WMS GetMap PNG of $layer, drawn"
  base=${url%%\?*}
  getmap="$base?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&LAYERS=$layer&STYLES=&CRS=EPSG:4326&BBOX=-90,-180,90,180&WIDTH=256&HEIGHT=128&FORMAT=image/png&TRANSPARENT=TRUE"
  # a MapService rolling out its new mapfile briefly has a pod without the layer behind its
  # Service: a LayerNotDefined answer is waited out, like the capabilities above
  map_ok() {
    local code; code=$(curl -sS -o "$WORK/map.png" -w '%{http_code}' --max-time 60 "$getmap" 2>"$WORK/curl.err" || true)
    LAST="HTTP $code: $(head -c 600 "$WORK/map.png" 2>/dev/null | tr -d '\0')$(head -c 200 "$WORK/curl.err")"
    [ "$code" = 200 ] && drawn "$WORK/map.png" "$SMOKE_MIN_COVERAGE"
  }
  if [ "$SMOKE_REQUIRE_WMS" = 1 ]; then
    wait_for "GetMap of $layer drawn (at least $SMOKE_MIN_COVERAGE of the pixels)" map_ok
    log "GetMap: $(wc -c <"$WORK/map.png") bytes of PNG, $(tail -1 "$WORK/drawn.txt")"
  elif map_ok; then
    log "GetMap: $(wc -c <"$WORK/map.png") bytes of PNG, $(tail -1 "$WORK/drawn.txt")"
  else
    log "GetMap not reachable or blank ($LAST): skipped (SMOKE_REQUIRE_WMS=1 makes this fatal)"
  fi
  keep_image "$WORK/map.png"

  step "GET /services/<service> serves $NAME, and its live mapfile has $layer"
  api GET "/datasets/$NAME" >/dev/null
  svc=$(json "$WORK/body" '((d.get("status") or {}).get("servedBy") or [""])[0]')
  [ -n "$svc" ] || fail "no servedBy in $(body)"
  served_ok() {
    local code; code=$(api GET "/services/$svc"); LAST="HTTP $code $(body)"
    [ "$code" = 200 ] && [ "$(json "$WORK/body" "'$NAME' in d['datasets']")" = True ] || return 1
    code=$(api GET "/services/$svc/mapfile"); LAST="mapfile: HTTP $code $(body)"
    [ "$code" = 200 ] && grep -q "NAME \"$layer\"" "$WORK/body"
  }
  wait_for "service $svc listing $NAME, with $layer in its live mapfile" served_ok

  step "POST /datasets/preview of $NAME's spec: a PNG drawn by MapServer, nothing created"
  api GET "/datasets/$NAME" >/dev/null
  json "$WORK/body" 'd["spec"]' >"$WORK/spec.json"
  code=$(api POST "/datasets/preview" -H 'Content-Type: application/json' --data-binary @"$WORK/spec.json")
  [ "$code" = 200 ] || fail "preview: HTTP $code $(body)"
  cp "$WORK/body" "$WORK/preview.png"
  drawn "$WORK/preview.png" "$SMOKE_MIN_COVERAGE" || fail "preview: $(tail -1 "$WORK/drawn.txt")"
  keep_image "$WORK/preview.png"
fi

# ----------------------------------------------------------------------------------- tile cache
if [ "$SMOKE_TILES" = 1 ] && [ -n "$url" ]; then
  api GET "/datasets/$NAME/cache" >/dev/null
  xyz=$(json "$WORK/body" 'd.get("xyz") or ""')
  if [ -z "$xyz" ]; then
    log "the serving MapService has no tile cache: tile steps skipped"
  else
    step "a web-mercator tile from the tile cache (XYZ)"
    tile=${xyz//\{z\}/0}; tile=${tile//\{x\}/0}; tile=${tile//\{y\}/0}
    [ -n "$SMOKE_TILES_BASE" ] && tile=$(rebase "$tile" "$SMOKE_TILES_BASE")
    tile_ok() {
      local code; code=$(curl -sS -o "$WORK/tile.png" -w '%{http_code}' --max-time 60 "$tile" 2>"$WORK/curl.err" || true)
      LAST="HTTP $code from $tile $(head -c 200 "$WORK/tile.png" 2>/dev/null | tr -d '\\0')$(head -c 200 "$WORK/curl.err")"
      [ "$code" = 200 ] && drawn "$WORK/tile.png" 0.01
    }
    if [ "$SMOKE_REQUIRE_WMS" = 1 ]; then
      wait_for "tile at $tile" tile_ok
    else
      for _ in $(seq 10); do tile_ok && break; sleep 2; done
      tile_ok || log "tile not reachable ($LAST): skipped (SMOKE_REQUIRE_WMS=1 makes this fatal)"
    fi
    keep_image "$WORK/tile.png"

    step "POST /datasets/$NAME/cache/seed (zoom 0-1) and the seeding job succeeds"
    code=$(api POST "/datasets/$NAME/cache/seed" -H 'Content-Type: application/json' -d '{"maxZoom": 1}')
    [ "$code" = 202 ] || fail "seed: HTTP $code $(body)"
    SEED_ID=$(json "$WORK/body" 'd["id"]')
    seeded() { api GET "/jobs/$SEED_ID" >/dev/null; local s; s=$(json "$WORK/body" 'd.get("state")'); LAST="state $s: $(body)"; [ "$s" = success ] || { [ "$s" = failure ] && fail "seed job failed: $(body)"; false; }; }
    wait_for "seed job $SEED_ID" seeded
    api GET "/datasets/$NAME/cache" >/dev/null
    log "cache: $(json "$WORK/body" '{k: d.get(k) for k in ("state", "levels", "size")}')"
    [ "$SMOKE_KEEP" = 1 ] || api DELETE "/jobs/$SEED_ID" >/dev/null
  fi
fi

step "clean up"
if [ "$SMOKE_KEEP" != 1 ]; then
  if [ -n "$JOB_ID" ]; then
    code=$(api DELETE "/jobs/$JOB_ID"); [ "$code" = 200 ] || fail "DELETE /jobs/$JOB_ID: HTTP $code $(body)"
    JOB_ID=""
  fi
  code=$(api DELETE "/datasets/$NAME"); [ "$code" = 200 ] || fail "DELETE /datasets/$NAME: HTTP $code $(body)"
  DATASET_CREATED=""
  gone() { local code; code=$(api GET "/datasets/$NAME"); LAST="HTTP $code"; [ "$code" = 404 ]; }
  wait_for "dataset $NAME gone" gone
fi
