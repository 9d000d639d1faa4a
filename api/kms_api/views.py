"""Pure shaping of custom resources into API views (no I/O)."""

from __future__ import annotations

from typing import Any

TERMINAL_STATES = {"Succeeded": "success", "Failed": "failure", "Cancelled": "cancelled"}


def condition(obj: dict, type_: str) -> dict:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return {}


def dataset_item(obj: dict) -> dict[str, Any]:
    """The light list entry of a MapDataset, with its search text and deletion flag (for the cache)."""
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    ready = condition(obj, "Ready")
    item = {
        "id": meta["name"],
        "identifier": spec.get("identifier"),
        "title": spec.get("title"),
        "type": spec.get("type"),
        "campaign": spec.get("campaign"),
        "variant": spec.get("variant"),
        "keywords": list(spec.get("keywords") or []),
        "ready": ready.get("status") == "True",
        "reason": ready.get("reason"),
        "created": meta.get("creationTimestamp"),
        "url": status.get("url"),
    }
    words = [meta["name"], spec.get("identifier") or "", spec.get("title") or "", *item["keywords"]]
    return {
        "item": item,
        "search": "\n".join(words).lower(),
        "_deleting": bool(meta.get("deletionTimestamp")),
    }


def dataset_detail(obj: dict) -> dict[str, Any]:
    meta = obj["metadata"]
    ready = condition(obj, "Ready")
    return {
        "id": meta["name"],
        "labels": dict(meta.get("labels") or {}),
        "created": meta.get("creationTimestamp"),
        "ready": ready.get("status") == "True",
        "reason": ready.get("reason"),
        "message": ready.get("message"),
        "spec": obj.get("spec") or {},
        "status": obj.get("status"),
    }


def job_state(phase: str | None) -> str:
    """success / failure / cancelled for finished jobs, in-progress for everything else."""
    return TERMINAL_STATES.get(phase or "", "in-progress")


def job_view(obj: dict) -> dict[str, Any]:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    return {
        "id": meta["name"],
        "type": spec.get("type"),
        "state": job_state(status.get("phase")),
        "phase": status.get("phase"),
        "message": status.get("message"),
        "result": status.get("result"),
        "created": meta.get("creationTimestamp"),
        "started": status.get("startTime"),
        "finished": status.get("completionTime"),
    }


def is_terminal(obj: dict) -> bool:
    return (obj.get("status") or {}).get("phase") in TERMINAL_STATES
