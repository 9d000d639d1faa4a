"""Job routes with the real operator and job pods: state shaping, cancel, tombstones, cleanup."""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client

from tests.helpers import create_cr, get_cr, wait_until


@pytest.fixture
def editor(facade):
    with facade.client("editor") as c:
        yield c


def cog(editor, name: str, input_: str = "ocean/sst-sample.tif", **extra) -> dict:
    body = {"name": name, "params": {"input": input_, "output": f"out/api/{name}.tif"}, **extra}
    r = editor.post("/jobs/cog-convert", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def state_of(editor, name: str) -> str:
    return editor.get(f"/jobs/{name}").json()["state"]


def wait_state(editor, name: str, state: str, timeout: float = 90) -> dict:
    return wait_until(
        lambda: (j := editor.get(f"/jobs/{name}").json())["state"] == state and j,
        f"job {name} {state}",
        timeout,
    )


def pending_job(cluster, ns: str, name: str) -> None:
    """A MapJob whose pod can never start (its claim does not exist): it stays in progress."""
    create_cr(
        cluster.api,
        ns,
        {
            "apiVersion": "maps.kube-mapserver.io/v1alpha1",
            "kind": "MapJob",
            "metadata": {"name": name},
            "spec": {
                "type": "cog-convert",
                "cogConvert": {"input": "a.tif", "output": "b.tif"},
                "data": {"persistentVolumeClaim": "no-such-claim"},
            },
        },
    )


def test_a_running_job_is_refreshed_to_success_in_the_list(cluster, facade, editor):
    name = f"cog-{uuid.uuid4().hex[:6]}"
    job = cog(editor, name, output={"dataset": {"name": name, "title": "SST COG"}})
    assert job["state"] == "in-progress" and job["type"] == "cog-convert" and job["finished"] is None
    assert next(j["id"] for j in editor.get("/jobs", params={"type": "cog-convert"}).json()["items"]) == name

    def listed_success():
        items = editor.get("/jobs", params={"state": "success"}).json()["items"]
        return next((j for j in items if j["id"] == name), None)

    done = wait_until(listed_success, "job listed as success", timeout=90)
    assert done["phase"] == "Succeeded" and done["result"]["checksum"].startswith("sha256:")
    assert done["started"] and done["finished"] and done["created"]
    # the result was registered as a MapDataset by the operator
    wait_until(lambda: editor.get(f"/datasets/{name}").status_code == 200, "output dataset")


def test_status_shaping_for_all_five_cases(cluster, facade, editor):
    tag = uuid.uuid4().hex[:6]
    ok, bad, pend, canc = f"ok-{tag}", f"bad-{tag}", f"pend-{tag}", f"canc-{tag}"
    cog(editor, ok)
    cog(editor, bad, input_="ocean/missing.tif", backoffLimit=0)
    pending_job(cluster, facade.namespace, pend)
    pending_job(cluster, facade.namespace, canc)
    wait_until(lambda: editor.get(f"/jobs/{pend}").status_code == 200, "watch delivers the CR")
    assert wait_state(editor, ok, "success")["phase"] == "Succeeded"
    failed = wait_state(editor, bad, "failure")
    assert failed["phase"] == "Failed" and "missing.tif" in failed["message"]
    r = editor.post(f"/jobs/{canc}/cancel")
    assert r.status_code == 202, r.text
    assert wait_state(editor, canc, "cancelled")["phase"] == "Cancelled"
    pending = editor.get(f"/jobs/{pend}").json()
    assert pending["state"] == "in-progress" and pending["phase"] in (None, "Queued", "Running")
    r = editor.get(f"/jobs/no-such-{tag}")
    assert r.status_code == 404 and r.json()["state"] == "unknown" and r.json()["id"] == f"no-such-{tag}"
    # finished jobs cannot be cancelled
    r = editor.post(f"/jobs/{ok}/cancel")
    assert r.status_code == 409 and "success" in r.json()["detail"]
    assert editor.post(f"/jobs/no-such-{tag}/cancel").json()["state"] == "unknown"
    with facade.client("viewer") as viewer:
        assert viewer.post(f"/jobs/{pend}/cancel").status_code == 403


def test_typed_creation_validates_the_parameters(facade, editor):
    r = editor.post("/jobs/cog-convert", json={"params": {"input": "../x.tif", "output": "o.tif"}})
    assert r.status_code == 422 and r.json()["field"] == "params.input"
    r = editor.post("/jobs/cog-convert", json={"params": {"input": "a.tif"}})
    assert r.status_code == 422 and r.json()["field"] == "params.output"
    r = editor.post("/jobs/rehash", json={"params": {"datasets": ["a"], "pathPrefix": "ocean"}})
    assert r.status_code == 422
    r = editor.post("/jobs/merge-terrain", json={"params": {"inputs": [], "output": "m.tif"}})
    assert r.status_code == 422 and r.json()["field"] == "params.inputs"
    r = editor.post(
        "/jobs/nc-to-geotiff", json={"params": {"input": "a.nc", "variable": "sst", "output": "a.tif"}}
    )
    assert r.status_code == 201 and r.json()["type"] == "nc-to-geotiff"
    r = editor.post("/jobs/hyspex-variants", json={"params": {"campaign": "c1"}, "name": "Bad Name"})
    assert r.status_code == 422 and r.json()["field"] == "name"


def test_delete_leaves_a_tombstone(cluster, facade, editor):
    name = f"tomb-{uuid.uuid4().hex[:6]}"
    cog(editor, name)
    wait_state(editor, name, "success")
    r = editor.delete(f"/jobs/{name}")
    assert r.status_code == 200 and r.json()["state"] == "success"
    assert editor.get(f"/jobs/{name}").status_code == 404
    stones = editor.get("/jobs/tombstones").json()["items"]
    stone = next(s for s in stones if s["id"] == name)
    assert stone["type"] == "cog-convert" and stone["finalState"] == "success"
    assert stone["deletedBy"] == "editor" and stone["deletedAt"].endswith("Z")
    wait_until(lambda: get_cr(cluster.api, facade.namespace, "MapJob", name) is None, "MapJob gone")
    cm = client.CoreV1Api(cluster.api).read_namespaced_config_map(
        "kube-mapserver-tombstones", facade.namespace
    )
    assert name in cm.data["tombstones.json"]
    assert editor.delete(f"/jobs/{name}").json()["state"] == "unknown"


def test_cleanup_by_status_and_by_age(facade_factory, operator_process):
    fac = facade_factory(KMS_TOMBSTONE_MAX="3")
    with fac.client("editor") as ed:
        for i in range(2):
            cog(ed, f"ok{i}")
        cog(ed, "bad0", input_="ocean/missing.tif", backoffLimit=0)
        for n in ("ok0", "ok1"):
            wait_state(ed, n, "success")
        wait_state(ed, "bad0", "failure")
        r = ed.post("/jobs/cleanup", json={"states": ["failure"], "dryRun": True})
        assert r.status_code == 200 and [j["id"] for j in r.json()["jobs"]] == ["bad0"]
        assert ed.get("/jobs/bad0").status_code == 200  # dry run deleted nothing
        r = ed.post("/jobs/cleanup", json={"states": ["failure"]})
        assert r.json()["count"] == 1 and ed.get("/jobs/bad0").status_code == 404
        # by age: nothing finished an hour ago; everything finished at least 1 s ago
        assert ed.post("/jobs/cleanup", json={"olderThanSeconds": 3600, "dryRun": True}).json()["count"] == 0
        wait_until(
            lambda: (
                ed.post("/jobs/cleanup", json={"olderThanSeconds": 1, "dryRun": True}).json()["count"] == 2
            ),
            "both jobs finished more than 1 s ago",
            10,
        )
        r = ed.post("/jobs/cleanup", json={"olderThanSeconds": 1, "dryRun": False})
        assert sorted(j["id"] for j in r.json()["jobs"]) == ["ok0", "ok1"]
        assert ed.get("/jobs").json()["total"] == 0
        stones = ed.get("/jobs/tombstones").json()["items"]
        assert {s["id"] for s in stones} == {"bad0", "ok0", "ok1"}
        r = ed.post("/jobs/cleanup", json={"states": ["running"]})
        assert r.status_code == 422 and r.json()["field"].startswith("states")
        # retention: at most KMS_TOMBSTONE_MAX=3 entries, the newest kept
        cog(ed, "ok2")
        wait_state(ed, "ok2", "success")
        ed.delete("/jobs/ok2").raise_for_status()
        stones = ed.get("/jobs/tombstones").json()["items"]
        assert len(stones) == 3 and stones[0]["id"] == "ok2" and "bad0" not in {s["id"] for s in stones}
