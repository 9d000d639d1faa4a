"""A MapService's status, conditions and Events from what its reconcile found
(service_status.py, pure)."""

from __future__ import annotations

from kms_operator.conditions import merge_conditions
from kms_operator.service_status import Rollout, rollout_of, service_events, service_status


def deployment(generation=2, observed=2, replicas=2, updated=2, ready=2, total=2) -> dict:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "replicas": total,
        },
    }


def status_of(rollout, stall=None, excluded=(), tile_cache=None, wms=False):
    return service_status(
        7,
        rollout,
        stall,
        ["a", "b"],
        list(excluded),
        "abc123",
        "svc-mapfile-abc123",
        "http://svc/",
        tile_cache,
        wms,
        "http://svc/svc/ogcapi",
    )


def by_type(conds):
    return {c["type"]: c for c in conds}


def test_rollout_is_done_only_when_every_replica_is_updated_ready_and_no_old_pod_is_left() -> None:
    assert rollout_of(deployment(), 1) == Rollout(True, 2, 2)
    assert not rollout_of(deployment(observed=1), 1).rolled  # controller has not seen the spec yet
    assert not rollout_of(deployment(updated=1), 1).rolled
    assert rollout_of(deployment(ready=1), 1) == Rollout(False, 2, 1)
    assert not rollout_of(deployment(total=3), 1).rolled  # an old pod still there
    assert rollout_of({"metadata": {}, "spec": {}, "status": {}}, 3) == Rollout(False, 3, 0)


def test_a_rolled_out_service_is_ready_and_available() -> None:
    status, conds = status_of(Rollout(True, 2, 2))
    c = by_type(conds)
    assert c["Ready"]["status"] == "True" and c["Ready"]["reason"] == "Available"
    assert c["Ready"]["message"] == "2/2 replicas ready, 2 datasets served"
    assert c["Progressing"]["reason"] == "RolloutComplete" and c["Degraded"]["status"] == "False"
    assert status == {
        "observedGeneration": 7,
        "replicas": 2,
        "readyReplicas": 2,
        "datasetCount": 2,
        "datasets": ["a", "b"],
        "excluded": [],
        "mapfileHash": "abc123",
        "configMap": "svc-mapfile-abc123",
        "url": "http://svc/",
        "ogcapi": "http://svc/svc/ogcapi",
        "tileCache": None,
    }


def test_rolling_out_stalled_and_degraded() -> None:
    c = by_type(status_of(Rollout(False, 2, 1))[1])
    assert c["Ready"]["reason"] == "RolloutInProgress" and c["Reconciling"]["reason"] == "RollingOut"
    c = by_type(status_of(Rollout(False, 2, 0), stall=("MapfileLoadFailed", "bad"))[1])
    assert (c["Ready"]["reason"], c["Ready"]["message"]) == ("MapfileLoadFailed", "bad")
    assert c["Stalled"]["status"] == "True" and c["Reconciling"]["status"] == "False"
    c = by_type(status_of(Rollout(True, 1, 1), excluded=["x (InvalidSpec)"])[1])
    assert c["Ready"]["status"] == "True" and c["Degraded"]["reason"] == "DatasetsExcluded"
    assert c["Degraded"]["message"] == "left out: x (InvalidSpec)"


def test_the_tile_cache_takes_the_wms_url_when_it_serves_wms() -> None:
    cache = {"url": "http://svc-tiles/wms", "tilesets": 2}
    assert status_of(Rollout(True, 1, 1), tile_cache=cache)[0]["url"] == "http://svc/"
    status, _ = status_of(Rollout(True, 1, 1), tile_cache=cache, wms=True)
    assert status["url"] == "http://svc-tiles/wms" and status["tileCache"] == cache


def test_events_are_sent_on_changes_only() -> None:
    status, conds = status_of(Rollout(True, 1, 1), excluded=["x (InvalidSpec)"])
    events = service_events({}, status, conds, None)
    assert events == [
        ("Warning", "DatasetsExcluded", "left out: x (InvalidSpec)"),
        ("Normal", "Ready", "1/1 replicas ready, 2 datasets served"),
    ]
    old = {**status, "conditions": merge_conditions(None, conds)}
    assert service_events(old, status, conds, None) == []  # already said
    stall = ("ProgressDeadlineExceeded", "stuck")
    status, conds = status_of(Rollout(False, 1, 0), stall=stall)
    assert service_events(old, status, conds, stall) == [("Warning", *stall)]
    old = {**status, "conditions": merge_conditions(None, conds)}
    assert service_events(old, status, conds, stall) == []
