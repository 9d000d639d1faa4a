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


# ------------------------------------------------------------------ services

CAPABILITIES = {
    "wms": "SERVICE=WMS&VERSION=1.3.0&REQUEST=GetCapabilities",
    "wfs": "SERVICE=WFS&VERSION=2.0.0&REQUEST=GetCapabilities",
    "wcs": "SERVICE=WCS&VERSION=2.0.1&REQUEST=GetCapabilities",
}


def _with_query(base: str, query: str) -> str:
    return f"{base}{'&' if '?' in base else '?'}{query}"


def service_urls(obj: dict, protocols: set[str]) -> dict[str, Any]:
    """Capabilities URLs of a MapService from its status: WMS always (status.url), WFS and WCS when a
    served dataset offers them, OGC API and anything else named in status.urls, and the tile cache.
    When the WMS goes through the tile cache (tileCache.wms) status.url is the cache's tiled WMS,
    which serves no WFS/WCS: those are then only shown when status.urls names them."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    base, extra = status.get("url"), status.get("urls") or {}
    via_cache = bool((spec.get("tileCache") or {}).get("wms"))
    urls: dict[str, Any] = {"wms": _with_query(base, CAPABILITIES["wms"]) if base else None}
    for proto in ("wfs", "wcs"):
        served = proto.upper() in protocols and base and not via_cache
        urls[proto] = _with_query(base, CAPABILITIES[proto]) if served else None
    urls["ogcapi"] = status.get("ogcapi")
    if isinstance(extra, dict):
        urls.update({k: v for k, v in extra.items() if k in ("wms", "wfs", "wcs", "ogcapi") and v})
    tiles = status.get("tileCache")
    urls["tiles"] = (
        {k: tiles.get(k) for k in ("url", "wmts", "tms", "xyz", "wms") if tiles.get(k)} if tiles else None
    )
    return urls


def service_item(obj: dict) -> dict[str, Any]:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    ready = condition(obj, "Ready")
    return {
        "name": meta["name"],
        "title": spec.get("title"),
        "ready": ready.get("status") == "True",
        "reason": ready.get("reason"),
        "replicas": status.get("replicas"),
        "ready_replicas": status.get("readyReplicas"),
        "dataset_count": status.get("datasetCount"),
        "url": status.get("url"),
        "created": meta.get("creationTimestamp"),
    }


def service_detail(obj: dict, protocols: set[str]) -> dict[str, Any]:
    """One MapService: readiness, conditions, replicas, datasets served and URLs (from its status)."""
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    ready = condition(obj, "Ready")
    return {
        **service_item(obj),
        "abstract": spec.get("abstract"),
        "message": ready.get("message"),
        "labels": dict(meta.get("labels") or {}),
        "generation": meta.get("generation"),
        "observed_generation": status.get("observedGeneration"),
        "conditions": list(status.get("conditions") or []),
        "dataset_selector": spec.get("datasetSelector") or {},
        "datasets": list(status.get("datasets") or []),
        "excluded": list(status.get("excluded") or []),
        "mapfile_hash": status.get("mapfileHash"),
        "config_map": status.get("configMap"),
        "urls": service_urls(obj, protocols),
    }
