"""Status conditions in the Kubernetes shape, with stable lastTransitionTime, following the kstatus
conventions (sigs.k8s.io/cli-utils/pkg/kstatus, what Flux and Argo-style health checks compute):
work in progress is `Reconciling=True`, a failure that needs a change to go away is `Stalled=True`,
done is `Ready=True` with both False, and `status.observedGeneration` tells which spec was seen."""

from __future__ import annotations

from .kube import now_rfc3339


def condition(type_: str, ok: bool | None, reason: str, message: str, generation: int | None) -> dict:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


Problem = tuple[str, str]  # (CamelCase reason, message)
TYPES = ("Ready", "Progressing", "Degraded", "Reconciling", "Stalled")


def status_conditions(
    generation: int | None,
    *,
    ready: bool | None,
    reason: str,
    message: str = "",
    reconciling: str | None = None,
    stalled: Problem | None = None,
    degraded: Problem | None = None,
    settled: str = "AsExpected",
) -> list[dict]:
    """The whole condition set of a resource, in the order of TYPES.

    `ready`/`reason`/`message` make the Ready condition. `reconciling` is the reason of work still
    in progress (Reconciling and Progressing True); `stalled` a failure retrying cannot fix (Stalled
    and Degraded True; it wins over `reconciling`); `degraded` a partial problem that leaves the
    resource working (Degraded True only); `settled` the Progressing reason once nothing is in
    progress. A resource that is not Ready is either in progress or stalled: without either, it
    counts as in progress with the Ready reason (kstatus would report it InProgress anyway)."""
    if stalled is not None:
        reconciling = None
    elif not ready and reconciling is None:
        reconciling = reason
    busy = reconciling is not None
    problem = stalled or degraded
    return [
        condition("Ready", ready, reason, message, generation),
        condition("Progressing", busy, reconciling or (stalled[0] if stalled else settled), "", generation),
        condition(
            "Degraded",
            problem is not None,
            problem[0] if problem else "AsExpected",
            problem[1] if problem else "",
            generation,
        ),
        condition("Reconciling", busy, reconciling or "AsExpected", message if busy else "", generation),
        condition(
            "Stalled",
            stalled is not None,
            stalled[0] if stalled else "AsExpected",
            stalled[1] if stalled else "",
            generation,
        ),
    ]


def merge_conditions(old: list[dict] | None, new: list[dict]) -> list[dict]:
    """New conditions, keeping lastTransitionTime where the status did not change."""
    previous = {c.get("type"): c for c in old or []}
    out = []
    for c in new:
        before = previous.get(c["type"])
        same = before is not None and before.get("status") == c["status"]
        out.append({**c, "lastTransitionTime": before.get("lastTransitionTime") if same else now_rfc3339()})
    return out


def settle_status(old: dict | None, status: dict, conds: list[dict]) -> bool:
    """Set status["conditions"] to `conds` merged into the old ones (transition times kept); True
    when the status then differs from `old` (a patch is needed)."""
    status["conditions"] = merge_conditions((old or {}).get("conditions"), conds)
    return status_changed(old, status)


def get_condition(status: dict | None, type_: str) -> dict | None:
    for c in (status or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None


def status_changed(old: dict | None, new: dict) -> bool:
    """True when `new` differs from `old` in any field it sets (ignoring transition times)."""
    old = old or {}
    for key, value in new.items():
        if key == "conditions":
            strip = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in value]
            have = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in old.get(key) or []]
            if strip != have:
                return True
        elif old.get(key) != value:
            return True
    return False
