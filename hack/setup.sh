#!/usr/bin/env bash
# One-time machine setup, idempotent: Debian packages, the project venv, pinned Python deps.
# mapscript only comes from Debian's python3-mapscript, so the venv is made by Debian's
# /usr/bin/python3 with --system-site-packages.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# mapserver-bin: mapserv, which the facade's previews (POST /datasets/preview) run per render
DEB_PACKAGES=(python3-venv python3-mapscript mapserver-bin gdal-bin python3-gdal openssl curl golang-go mapcache-cgi mapcache-tools
  containerd runc containernetworking-plugins iptables debootstrap buildah  # the real node + image builds
  nodejs npm chromium chromium-driver)  # the /ui/ bundle (npm ci + esbuild) and its browser tests
missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# a Go toolchain already on PATH (>= 1.24) is fine; do not pull Debian's older one over it; the
# same for a Node.js with its npm (e.g. NodeSource's nodejs, which conflicts with Debian's npm)
drop() { for i in "${!missing[@]}"; do [ "${missing[$i]}" = "$1" ] && unset 'missing[i]'; done; return 0; }
if command -v go >/dev/null; then drop golang-go; fi
if command -v node >/dev/null && command -v npm >/dev/null; then drop nodejs; drop npm; fi
# a browser with its driver already there (e.g. CI runners' Chrome; Ubuntu's chromium is a snap)
if command -v chromedriver >/dev/null && { command -v chromium || command -v google-chrome; } >/dev/null; then
  drop chromium; drop chromium-driver
fi
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  log "creating .venv with /usr/bin/python3 (system site packages, for mapscript)"
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.deps-$( (cat pyproject.toml; ls -d */kms_*/ 2>/dev/null) | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  log "installing pinned Python dependencies"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  rm -f .venv/.deps-*; touch "$stamp"
fi
.venv/bin/python -c "import mapscript, kopf, kubernetes, fastapi" \
  || { log "the venv cannot import mapscript/kopf/kubernetes/fastapi"; exit 1; }
command -v mapserv >/dev/null && command -v prlimit >/dev/null \
  || { log "mapserv (mapserver-bin) or prlimit (util-linux) is missing: previews need them"; exit 1; }
hack/ui.sh  # the /ui/ page's bundle (npm ci from the lockfile + esbuild)
log "ready: .venv ($(.venv/bin/python --version))"
