"""A MapService's status and Events, computed from what its reconcile found (pure, no I/O): the
MapServer rollout, the datasets served and left out, the mapfile, the tile cache."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from .conditions import Problem, get_condition, status_conditions


class Rollout(NamedTuple):
    """The MapServer Deployment's rollout: done (`rolled`), wanted and ready replicas."""

    rolled: bool
    replicas: int
    ready: int


def rollout_of(deployment: Mapping, default_replicas: int) -> Rollout:
    """Rolled out: the Deployment's controller saw its spec, and every wanted replica is updated and
    ready with no old pod left."""
    dstatus = deployment.get("status") or {}
    want = (deployment.get("spec") or {}).get("replicas", default_replicas)
    ready = dstatus.get("readyReplicas", 0)
    rolled = (
        dstatus.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
        and dstatus.get("updatedReplicas", 0) >= want
        and ready >= want
        and dstatus.get("replicas", 0) == want
    )
    return Rollout(rolled, want, ready)


def left_out(excluded: Sequence[str]) -> str:
    return ("left out: " + ", ".join(excluded))[:1000] if excluded else ""


def service_status(
    generation: int | None,
    rollout: Rollout,
    stall: Problem | None,
    datasets: Sequence[str],
    excluded: list[str],
    mapfile_hash: str,
    config_map: str,
    url: str,
    tile_cache: dict | None,
    tile_cache_wms: bool,
    ogcapi: str | None = None,
) -> tuple[dict, list[dict]]:
    """The status (without conditions) and the condition set of a MapService."""
    rolled = rollout.rolled
    serving = f"{rollout.ready}/{rollout.replicas} replicas ready, {len(datasets)} datasets served"
    conds = status_conditions(
        generation,
        ready=rolled,
        reason="Available" if rolled else (stall[0] if stall else "RolloutInProgress"),
        message=stall[1] if stall else serving,
        reconciling=None if rolled else "RollingOut",
        stalled=stall,
        degraded=("DatasetsExcluded", left_out(excluded)) if excluded else None,
        settled="RolloutComplete",
    )
    status = {
        "observedGeneration": generation,
        "replicas": rollout.replicas,
        "readyReplicas": rollout.ready,
        "datasetCount": len(datasets),
        "datasets": list(datasets),
        "excluded": excluded,
        "mapfileHash": mapfile_hash,
        "configMap": config_map,
        "url": tile_cache["url"] if tile_cache_wms and tile_cache else url,
        "ogcapi": ogcapi,
        "tileCache": tile_cache,
    }
    return status, conds


def _same_problem(status: Mapping, problem: Problem) -> bool:
    stalled = get_condition(status, "Stalled") or {}
    return stalled.get("status") == "True" and (stalled.get("reason"), stalled.get("message")) == problem


def service_events(
    old: Mapping, status: Mapping, conds: list[dict], stall: Problem | None
) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events a status change from `old` to `status` deserves."""
    events = []
    excluded = status["excluded"]
    if excluded and excluded != old.get("excluded"):
        events.append(("Warning", "DatasetsExcluded", left_out(excluded)))
    if stall and not _same_problem(old, stall):
        events.append(("Warning", *stall))
    was = get_condition(dict(old), "Ready")
    if conds[0]["status"] == "True" and (not was or was.get("status") != "True"):
        events.append(("Normal", "Ready", conds[0]["message"]))
    return events
