"""Pure queries over datasets: list filtering/sorting, duplicate groups, HySpex missing variants."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any, Literal

SortKey = Literal[
    "id", "-id", "title", "-title", "identifier", "-identifier", "created", "-created", "type", "-type"
]
VARIANT_SUFFIX = re.compile(r"^(?P<scene>.+?)[_-](?P<variant>rgb|z)$", re.IGNORECASE)


def select(
    views: list[dict],
    q: str | None = None,
    type_: str | None = None,
    campaign: str | None = None,
    ready: bool | None = None,
    sort: SortKey = "id",
) -> list[dict]:
    """Filter and sort cached dataset views (each {"item", "search"})."""
    needle = q.lower() if q else None
    out = [
        v
        for v in views
        if (needle is None or needle in v["search"])
        and (type_ is None or v["item"]["type"] == type_)
        and (campaign is None or v["item"]["campaign"] == campaign)
        and (ready is None or v["item"]["ready"] == ready)
    ]
    key = sort.lstrip("-")
    out.sort(
        key=lambda v: (
            (v["item"].get(key) or "").lower() if key != "created" else v["item"].get(key) or "",
            v["item"]["id"],
        )
    )
    if sort.startswith("-"):
        out.reverse()
    return out


def _groups(index: dict[str, list[str]]) -> list[dict[str, Any]]:
    return [{"key": k, "datasets": sorted(v)} for k, v in sorted(index.items()) if len(v) > 1]


def duplicates(objs: list[dict]) -> dict[str, list[dict[str, Any]]]:
    """Datasets that are the same by content (checksum), by identifier, or by source path/URL."""
    by_checksum: dict[str, list[str]] = defaultdict(list)
    by_identifier: dict[str, list[str]] = defaultdict(list)
    by_source: dict[str, list[str]] = defaultdict(list)
    for o in objs:
        name, spec, status = o["metadata"]["name"], o.get("spec") or {}, o.get("status") or {}
        if status.get("checksum"):
            by_checksum[status["checksum"]].append(name)
        if spec.get("identifier"):
            by_identifier[spec["identifier"]].append(name)
        src = spec.get("source") or {}
        if src.get("path"):
            key = "path:" + "/".join(p for p in src["path"].split("/") if p not in ("", "."))
            by_source[key + (f"#{src['layer']}" if src.get("layer") else "")].append(name)
        elif src.get("url"):
            by_source["url:" + src["url"] + (f"#{src['layer']}" if src.get("layer") else "")].append(name)
    return {
        "byChecksum": _groups(by_checksum),
        "byIdentifier": _groups(by_identifier),
        "bySource": _groups(by_source),
    }


def scene_and_variant(spec: dict) -> tuple[str, str | None]:
    """(scene id, RGB/Z/None): the identifier without a trailing _rgb/-rgb/_z/-z; spec.variant wins."""
    identifier = spec.get("identifier") or ""
    m = VARIANT_SUFFIX.match(identifier)
    scene = m.group("scene") if m else identifier
    variant = spec.get("variant") or (m.group("variant").upper() if m else None)
    return scene, variant if variant in ("RGB", "Z") else None


def hyspex_missing(objs: list[dict]) -> list[dict[str, Any]]:
    """Per campaign, the scenes that have one of RGB/Z but not the other."""
    scenes: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for o in objs:
        spec = o.get("spec") or {}
        campaign = spec.get("campaign")
        if not campaign:
            continue
        scene, variant = scene_and_variant(spec)
        if variant is None:
            continue
        entry = scenes[campaign].setdefault(scene, {"present": set(), "datasets": []})
        entry["present"].add(variant)
        entry["datasets"].append(o["metadata"]["name"])
    report = []
    for campaign in sorted(scenes):
        missing = []
        for scene, e in sorted(scenes[campaign].items()):
            gap = [v for v in ("RGB", "Z") if v not in e["present"]]
            if gap:
                missing.append(
                    {
                        "scene": scene,
                        "present": sorted(e["present"]),
                        "missing": gap,
                        "datasets": sorted(e["datasets"]),
                    }
                )
        if missing:
            report.append({"campaign": campaign, "scenes": missing})
    return report
