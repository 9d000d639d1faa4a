"""Progress of a running MapJob: the runner writes JSON lines with a `progress` field (0..1) to
stderr; the operator reads the newest one from the pod's log tail (the kubelet serves it)."""

from __future__ import annotations

import json
from urllib.parse import quote

DETAIL_FIELDS = ("tileset", "zoom", "tiles")


def parse_progress(text: str) -> dict | None:
    """The last JSON line with a numeric `progress` in `text` (a log tail), or None."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if not line.startswith("{") or '"progress"' not in line:
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        value = doc.get("progress")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {**doc, "progress": min(max(float(value), 0.0), 1.0)}
    return None


def describe(p: dict) -> str:
    """`running: 42% (seeding sst z5)` for the status message."""
    detail = " ".join(
        f"z{p[k]}" if k == "zoom" else str(p[k]) for k in DETAIL_FIELDS[:2] if p.get(k) is not None
    )
    what = " ".join(x for x in (str(p.get("msg") or ""), detail) if x)
    return f"running: {round(p['progress'] * 100)}%" + (f" ({what})" if what else "")


def read_progress(kube, namespace: str, pods: list[dict]) -> dict | None:
    """Progress of the newest running pod of a Job, from its log tail."""
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    if not running:
        return None
    pod = max(running, key=lambda p: p["metadata"].get("creationTimestamp") or "")
    path = f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(pod['metadata']['name'])}/log"
    try:
        status, payload = kube._call("GET", path, query={"tailLines": "20", "container": "runner"})
    except Exception:  # no kubelet to ask (or it is gone): no progress, not an error
        return None
    if status >= 400 or payload is None:
        return None
    text = payload.decode(errors="replace") if isinstance(payload, bytes) else json.dumps(payload)
    return parse_progress(text)
