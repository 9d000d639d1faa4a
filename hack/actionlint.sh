#!/usr/bin/env bash
# Lint the GitHub Actions workflows with the pinned actionlint (built once by hack/build-helm.sh).
# Usage: hack/actionlint.sh [actionlint args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bins=$(hack/build-helm.sh --actionlint | tail -1)
actionlint=${bins##* }
echo "actionlint $("$actionlint" --version | head -1): .github/workflows/" >&2
exec "$actionlint" "$@"
