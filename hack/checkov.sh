#!/usr/bin/env bash
# Install the pinned checkov (hack/requirements-checkov.txt: checkov and its whole tree) once into
# its own venv, keyed by version and the requirements' hash:
# ~/.cache/kube-mapserver/checkov-<version>-<hash>/ (KMS_CACHE_DIR overrides the cache). Its pins
# conflict with the project's .venv (packaging, python-dateutil), so it never goes there.
# Prints the checkov binary's path on the last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=$(/usr/bin/python3 "$here/checkov_scan.py" dir)
if [ ! -f "$dir/.done" ]; then
  echo "[checkov] installing $(grep '^checkov==' "$here/requirements-checkov.txt") into $dir" >&2
  rm -rf "$dir"
  /usr/bin/python3 -m venv "$dir"
  "$dir/bin/python" -m pip install -q --no-deps -r "$here/requirements-checkov.txt"
  "$dir/bin/checkov" --version >/dev/null
  touch "$dir/.done"
fi
echo "$dir/bin/checkov"
