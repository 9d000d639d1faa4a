# Shared by the hack/build-*.sh scripts: progress logging while slow go builds run.

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Print progress while a long go build runs (go itself is silent for minutes).
with_heartbeat() {
  local what=$1; shift
  local start=$SECONDS
  ( while sleep 30; do log "$what: still building ($((SECONDS - start))s)"; done ) &
  local hb=$!
  local rc=0
  "$@" || rc=$?
  kill "$hb" 2>/dev/null; wait "$hb" 2>/dev/null || true
  if [ $rc -ne 0 ]; then log "$what: FAILED after $((SECONDS - start))s"; return $rc; fi
  log "$what: done in $((SECONDS - start))s"
}
