"""The health the real kstatus library computes (sigs.k8s.io/cli-utils/pkg/kstatus, what Flux and
Argo-style health checks use), through hack/kstatus (built and cached by `make kstatus`)."""

from __future__ import annotations

import json
import subprocess

from tests.helpers import REPO, require_tool


def kstatus_binary() -> str:
    path = subprocess.run(
        [str(REPO / "hack" / "build-kstatus.sh"), "--print-path"], check=True, capture_output=True, text=True
    ).stdout.strip()
    require_tool(path, "hack/kstatus (sigs.k8s.io/cli-utils kstatus)", "kstatus")
    return path


ARGOCD_HEALTH = REPO / "docs" / "argocd-health.lua"


def kstatus_of(objects: list[dict], argocd_lua: bool = False) -> list[dict]:
    """{kind, name, status: Current | InProgress | Failed | ..., message} for each object; with
    argocd_lua what our Argo CD health check (docs/argocd-health.lua, run by gopher-lua as Argo CD
    runs it) says instead: Healthy | Progressing | Degraded."""
    out = subprocess.run(
        [kstatus_binary(), *(["-argocd-lua", str(ARGOCD_HEALTH)] if argocd_lua else [])],
        input="\n".join(json.dumps(o) for o in objects),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines()]
