"""Status conditions in the Kubernetes shape, with stable lastTransitionTime."""

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


def merge_conditions(old: list[dict] | None, new: list[dict]) -> list[dict]:
    """New conditions, keeping lastTransitionTime where the status did not change."""
    previous = {c.get("type"): c for c in old or []}
    out = []
    for c in new:
        before = previous.get(c["type"])
        same = before is not None and before.get("status") == c["status"]
        out.append({**c, "lastTransitionTime": before.get("lastTransitionTime") if same else now_rfc3339()})
    return out


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
