"""Progress and result of a MapJob's pod: the runner writes JSON lines with a `progress` field
(0..1) to stderr, read from the pod's log tail (the kubelet serves it), and its JSON result to the
termination message."""

from __future__ import annotations

import json
from datetime import datetime
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
        status, payload = kube.http.request("GET", path, query={"tailLines": "20", "container": "runner"})
    except Exception:  # no kubelet to ask (or it is gone): no progress, not an error
        return None
    if status >= 400 or payload is None:
        return None
    if isinstance(payload, bytes):
        text = payload.decode(errors="replace")
    else:  # (text; or a log of one JSON line, which the client decoded)
        text = payload if isinstance(payload, str) else json.dumps(payload)
    return parse_progress(text)


def termination_result(pods: list[dict]) -> dict | None:
    """The runner's JSON result from the newest terminated pod's termination message."""
    best = None
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated")
            if term:
                key = term.get("finishedAt") or ""
                if best is None or key >= best[0]:
                    best = (key, term)
    if not best:
        return None
    message = (best[1].get("message") or "").strip()
    try:
        value = json.loads(message)
        return value if isinstance(value, dict) else {"message": message[:1000]}
    except ValueError:
        return {"message": message[-1000:]} if message else None


def duration(start: str | None, end: str | None) -> str | None:
    """A Job's run time as MapJob status shows it ("42s", "3m5s")."""
    if not start or not end:
        return None
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    secs = int((datetime.strptime(end, fmt) - datetime.strptime(start, fmt)).total_seconds())
    return f"{secs // 60}m{secs % 60}s" if secs >= 60 else f"{secs}s"
