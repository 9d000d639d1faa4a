"""Whether a MapService's rollout can still finish. A new MapServer pod whose mapfile check (the
`check-mapfile` init container runs the real mapserv) failed, or a Deployment past its progress
deadline, stalls the service (kstatus `Stalled=True`): retrying the same spec cannot help, and the
old pods keep serving the previous mapfile meanwhile (`maxUnavailable: 0`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

from .labels import HASH_ANNOTATION

CHECK_CONTAINER = "check-mapfile"
MAPFILE_LOAD_FAILED = "MapfileLoadFailed"
ROLLOUT_DEADLINE = "RolloutDeadlineExceeded"
# MapServer's own error lines: `msProcessProjection(): Projection library error. ...`
_MS_ERROR = re.compile(r"\bms[A-Z]\w*\(\): [^<\n]*")


def failed_check(pods: Iterable[dict], mapfile_hash: str) -> tuple[str, dict] | None:
    """(pod name, terminated state) of a live pod of this mapfile whose check-mapfile init
    container exited non-zero, now or before a restart; None when there is none."""
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        meta = pod["metadata"]
        if (
            meta.get("deletionTimestamp")
            or (meta.get("annotations") or {}).get(HASH_ANNOTATION) != mapfile_hash
        ):
            continue
        for st in (pod.get("status") or {}).get("initContainerStatuses") or []:
            if st.get("name") != CHECK_CONTAINER:
                continue
            for state in (st.get("state") or {}, st.get("lastState") or {}):
                term = state.get("terminated") or {}
                if term.get("exitCode", 0) != 0:
                    return meta["name"], term
    return None


def mapserver_error(log: str) -> str:
    """The MapServer error lines of a check-mapfile log (its tail when it has none)."""
    found = list(dict.fromkeys(m.group(0).strip() for m in _MS_ERROR.finditer(log)))
    if found:
        return " ".join(found)[:600]
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return " ".join(lines[-3:])[-600:]


def load_failure(pod: str, term: dict, log: str) -> tuple[str, str]:
    """The Stalled reason and message for a failed mapfile check."""
    what = f"exit code {term.get('exitCode')}" + (f", {term['reason']}" if term.get("reason") else "")
    detail = mapserver_error(log or term.get("message") or "")
    message = f"MapServer cannot load the mapfile (pod {pod}, {CHECK_CONTAINER} {what})"
    return MAPFILE_LOAD_FAILED, message + (f": {detail}" if detail else "")


def deadline_exceeded(deployment: dict) -> tuple[str, str] | None:
    """The Deployment's own verdict: no progress within spec.progressDeadlineSeconds."""
    for c in (deployment.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded":
            return ROLLOUT_DEADLINE, c.get("message") or "the MapServer rollout made no progress"
    return None


def check_log(kube, namespace: str, pod: str) -> str:
    """The check-mapfile log of the pod (its previous run when the current one wrote nothing); ''
    when it cannot be read (no kubelet to ask, or no pods/log permission)."""
    path = f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(pod)}/log"
    for previous in ("false", "true"):
        try:
            status, payload = kube.http.request(
                "GET", path, query={"container": CHECK_CONTAINER, "tailLines": "40", "previous": previous}
            )
        except Exception:
            return ""
        if status < 400 and payload:
            text = payload.decode(errors="replace") if isinstance(payload, bytes) else str(payload)
            if text.strip():
                return text
    return ""
