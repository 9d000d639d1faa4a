#!/usr/bin/env bash
# Run pytest from the venv. Exit code 5 (no tests collected) is a failure: a run that proves
# nothing must not pass.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest "$@"
rc=$?
if [ $rc -eq 5 ]; then echo "pytest: no tests collected (exit 5): FAILED" >&2; fi
exit $rc
