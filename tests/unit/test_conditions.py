"""The condition set the operator writes (conditions.status_conditions, rollout.py), and the health
the real kstatus library (hack/kstatus, `make kstatus`) computes from it."""

from __future__ import annotations

import pytest

from kms_operator import rollout
from kms_operator.conditions import TYPES, merge_conditions, status_conditions
from kms_operator.labels import HASH_ANNOTATION
from tests.helpers import REPO
from tests.kstatus import kstatus_of


def by_type(conds: list[dict]) -> dict[str, dict]:
    return {c["type"]: c for c in conds}


def test_done_is_ready_with_reconciling_and_stalled_false() -> None:
    conds = status_conditions(3, ready=True, reason="Available", message="1/1", settled="RolloutComplete")
    assert [c["type"] for c in conds] == list(TYPES)
    c = by_type(conds)
    assert c["Ready"]["status"] == "True" and c["Ready"]["message"] == "1/1"
    assert {
        t: c[t]["status"] for t in ("Progressing", "Degraded", "Reconciling", "Stalled")
    } == dict.fromkeys(("Progressing", "Degraded", "Reconciling", "Stalled"), "False")
    assert c["Progressing"]["reason"] == "RolloutComplete"
    assert all(x["observedGeneration"] == 3 for x in conds)


def test_stalled_wins_over_reconciling_and_degrades() -> None:
    c = by_type(
        status_conditions(
            1,
            ready=False,
            reason="MapfileLoadFailed",
            message="m",
            reconciling="RollingOut",
            stalled=("X", "why"),
        )
    )
    assert (c["Stalled"]["status"], c["Stalled"]["reason"], c["Stalled"]["message"]) == ("True", "X", "why")
    assert c["Reconciling"]["status"] == c["Progressing"]["status"] == "False"
    assert (c["Degraded"]["status"], c["Degraded"]["reason"]) == ("True", "X")
    assert c["Ready"]["status"] == "False"


def test_not_ready_without_a_reason_to_stall_is_in_progress() -> None:
    c = by_type(status_conditions(1, ready=False, reason="RolloutInProgress", message="0/1"))
    assert (c["Reconciling"]["status"], c["Reconciling"]["reason"]) == ("True", "RolloutInProgress")
    assert c["Stalled"]["status"] == "False"


def test_degraded_alone_leaves_the_resource_ready() -> None:
    c = by_type(
        status_conditions(1, ready=True, reason="Available", degraded=("DatasetsExcluded", "left out: a"))
    )
    assert (c["Degraded"]["status"], c["Degraded"]["message"]) == ("True", "left out: a")
    assert c["Ready"]["status"] == "True" and c["Stalled"]["status"] == "False"


def test_unknown_ready_while_running() -> None:
    c = by_type(status_conditions(1, ready=None, reason="Running", reconciling="Running"))
    assert c["Ready"]["status"] == "Unknown" and c["Reconciling"]["status"] == "True"


def test_transition_time_kept_while_the_status_holds() -> None:
    first = merge_conditions(None, status_conditions(1, ready=False, reason="R", stalled=("S", "m")))
    again = merge_conditions(first, status_conditions(2, ready=False, reason="R", stalled=("S", "m2")))
    assert [c["lastTransitionTime"] for c in first] == [c["lastTransitionTime"] for c in again]


def _pod(name: str, digest: str, exit_code: int | None, where: str = "state", deleting: bool = False) -> dict:
    st: dict = {"name": rollout.CHECK_CONTAINER, "state": {"running": {}}}
    if exit_code is not None:
        st[where] = {"terminated": {"exitCode": exit_code, "reason": "Error" if exit_code else "Completed"}}
    meta: dict = {"name": name, "annotations": {HASH_ANNOTATION: digest}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"initContainerStatuses": [st]}}


def test_failed_check_only_counts_live_pods_of_the_current_mapfile() -> None:
    assert rollout.failed_check([_pod("ok", "new", 0), _pod("old", "old", 1)], "new") is None
    assert rollout.failed_check([_pod("gone", "new", 1, deleting=True)], "new") is None
    name, term = rollout.failed_check([_pod("a", "new", None), _pod("b", "new", 1, "lastState")], "new")
    assert name == "b" and term["exitCode"] == 1


def test_load_failure_message_names_the_mapserver_error() -> None:
    log = (
        "Content-Type: text/html\n\n<HTML><BODY>msProcessProjection(): Projection library error. proj error "
    )
    log += '"crs not found" for "init=epsg:999999"\n</BODY></HTML>\n'
    reason, message = rollout.load_failure("svc-abc", {"exitCode": 1, "reason": "Error"}, log)
    assert reason == "MapfileLoadFailed"
    assert "pod svc-abc" in message and "exit code 1" in message
    assert 'msProcessProjection(): Projection library error. proj error "crs not found"' in message
    assert "<" not in message
    _, bare = rollout.load_failure("p", {"exitCode": 2}, "")
    assert bare.endswith("(pod p, check-mapfile exit code 2)")


def test_deadline_exceeded_is_the_deployments_own_verdict() -> None:
    cond = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    dep = {"status": {"conditions": [{**cond, "message": "ReplicaSet x has timed out progressing."}]}}
    assert rollout.deadline_exceeded(dep) == (
        "RolloutDeadlineExceeded",
        "ReplicaSet x has timed out progressing.",
    )
    assert (
        rollout.deadline_exceeded({"status": {"conditions": [{"type": "Progressing", "reason": "X"}]}})
        is None
    )


# ------------------------------------------------------------ the real kstatus library on these sets


def _obj(name: str, generation: int, conds: list[dict] | None, observed: int | None = None) -> dict:
    status: dict = {"observedGeneration": generation if observed is None else observed}
    if conds is not None:
        status["conditions"] = merge_conditions(None, conds)
    return {
        "apiVersion": "maps.kube-mapserver.io/v1alpha1",
        "kind": "MapDataset",
        "metadata": {"name": name, "namespace": "ns", "generation": generation},
        "status": status,
    }


CASES = [  # condition set, observedGeneration (None: current), kstatus, Argo CD health check
    (dict(ready=True, reason="SourceValid"), None, "Current", "Healthy"),
    (
        dict(ready=True, reason="Available", degraded=("DatasetsExcluded", "left out: a")),
        None,
        "Current",
        "Healthy",
    ),
    (
        dict(ready=False, reason="SourceNotFound", stalled=("SourceNotFound", "nope")),
        None,
        "Failed",
        "Degraded",
    ),
    (
        dict(ready=False, reason="RolloutInProgress", reconciling="RollingOut"),
        None,
        "InProgress",
        "Progressing",
    ),
    (dict(ready=None, reason="Running", reconciling="Running"), None, "InProgress", "Progressing"),
    (dict(ready=False, reason="X"), None, "InProgress", "Progressing"),
    (dict(ready=True, reason="SourceValid"), 1, "InProgress", "Progressing"),  # spec changed, not seen yet
    (dict(ready=False, reason="JobFailed", stalled=("JobFailed", "x")), 1, "InProgress", "Progressing"),
]


@pytest.mark.parametrize("conds, observed, expect, argocd", CASES)
def test_kstatus_and_the_argocd_check_read_the_condition_sets(
    conds: dict, observed: int | None, expect: str, argocd: str
) -> None:
    obj = _obj("x", 2, status_conditions(2, **conds), observed)
    [result] = kstatus_of([obj])
    assert result["status"] == expect, result
    [health] = kstatus_of([obj], argocd_lua=True)
    assert health["status"] == argocd, health
    if expect == "Failed":
        assert result["message"] == "nope" and health["message"] == "SourceNotFound: nope"


def test_argocd_check_without_status_waits_for_the_operator() -> None:
    obj = _obj("x", 1, None)
    del obj["status"]
    [health] = kstatus_of([obj], argocd_lua=True)
    assert health == {**health, "status": "Progressing", "message": "waiting for the operator"}


def test_readme_carries_the_argocd_check() -> None:
    """The README's argocd-cm example holds docs/argocd-health.lua for each of our kinds."""
    import yaml

    readme = (REPO / "README.md").read_text()
    start = readme.index("```yaml\napiVersion: v1\nkind: ConfigMap\n") + len("```yaml\n")
    cm = yaml.safe_load(readme[start : readme.index("```", start)])
    script = (REPO / "docs" / "argocd-health.lua").read_text()
    assert cm["data"] == {
        f"resource.customizations.health.maps.kube-mapserver.io_{kind}": script
        for kind in ("MapDataset", "MapService", "MapJob")
    }
