"""MapJobs against the real control plane; job pods run for real on the kubelet node (the
kube-mapserver image: `kube-mapserver-job` with GDAL, uid 10001, read-only root filesystem),
writing into the data volume, a hostPath folder of this host."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from osgeo import gdal

from tests.helpers import create_cr, delete_cr, get_cr, make_data_volume, patch_cr, wait_condition, wait_until


@pytest.fixture
def ns(cluster, namespace, operator_process, data_root):
    make_data_volume(cluster.api, namespace, data_root)
    return namespace


def mapjob(name: str, type_: str, params_field: str, params: dict, **spec) -> dict:
    return {
        "apiVersion": "maps.kube-mapserver.io/v1alpha1",
        "kind": "MapJob",
        "metadata": {"name": name},
        "spec": {"type": type_, params_field: params, "data": {"persistentVolumeClaim": "map-data"}, **spec},
    }


def phase_is(api, ns, name, phase):
    return wait_until(
        lambda: (
            (o := get_cr(api, ns, "MapJob", name)) and (o.get("status") or {}).get("phase") == phase and o
        ),
        f"MapJob {name} {phase}",
        timeout=90,
    )


def test_job_has_the_right_command_mounts_and_security(cluster, ns):
    create_cr(
        cluster.api,
        ns,
        mapjob(
            "cog1",
            "cog-convert",
            "cogConvert",
            {"input": "ocean/sst-sample.tif", "output": f"out/{ns}/cog1.tif"},
        ),
    )
    batch = client.BatchV1Api(cluster.api)
    job = wait_until(lambda: batch.read_namespaced_job("cog1", ns), "Job created")
    c = job.spec.template.spec.containers[0]
    assert c.command == ["kube-mapserver-job"]
    assert c.args[0] == "cog-convert"
    params = json.loads(c.args[c.args.index("--params-json") + 1])
    assert params["input"] == "ocean/sst-sample.tif" and params["compression"] == "DEFLATE"
    assert {m.mount_path for m in c.volume_mounts} == {"/data", "/tmp"}
    vols = {v.name: v for v in job.spec.template.spec.volumes}
    assert vols["data"].persistent_volume_claim.claim_name == "map-data"
    assert c.security_context.run_as_non_root and c.security_context.read_only_root_filesystem
    assert job.metadata.owner_references[0].kind == "MapJob"
    assert job.metadata.labels["app.kubernetes.io/managed-by"] == "kube-mapserver-operator"
    assert not job.spec.template.metadata.annotations, "job pods carry no annotations for a stand-in runner"


def test_cog_convert_succeeds_and_registers_the_output_dataset(cluster, ns, data_root):
    out = f"out/{ns}/sst-cog.tif"
    create_cr(
        cluster.api,
        ns,
        mapjob(
            "cog2",
            "cog-convert",
            "cogConvert",
            {"input": "ocean/sst-sample.tif", "output": out},
            output={"dataset": {"name": "sst-cog", "title": "SST as COG", "labels": {"collection": "ocean"}}},
        ),
    )
    job = phase_is(cluster.api, ns, "cog2", "Succeeded")
    result = job["status"]["result"]
    assert result["output"] == out and result["checksum"].startswith("sha256:")
    assert job["status"]["attempts"] >= 1 and job["status"]["completionTime"]
    info = gdal.Info(str(data_root / out), format="json")
    assert info["metadata"]["IMAGE_STRUCTURE"].get("LAYOUT") == "COG"
    ds = wait_condition(cluster.api, ns, "MapDataset", "sst-cog")
    assert ds["spec"]["source"]["path"] == out
    assert ds["status"].get("checksum") == result["checksum"]
    events = client.CoreV1Api(cluster.api).list_namespaced_event(
        ns, field_selector="involvedObject.name=cog2"
    )
    assert {"Queued", "Succeeded"} <= {e.reason for e in events.items}


def test_bad_input_fails_with_the_runner_message(cluster, ns):
    create_cr(
        cluster.api,
        ns,
        mapjob(
            "bad",
            "cog-convert",
            "cogConvert",
            {"input": "ocean/missing.tif", "output": f"out/{ns}/x.tif"},
            backoffLimit=0,
        ),
    )
    job = phase_is(cluster.api, ns, "bad", "Failed")
    assert "missing.tif" in job["status"]["message"]


def test_rehash_writes_checksums_into_datasets(cluster, ns):
    create_cr(
        cluster.api,
        ns,
        {
            "apiVersion": "maps.kube-mapserver.io/v1alpha1",
            "kind": "MapDataset",
            "metadata": {"name": "h1"},
            "spec": {
                "type": "raster",
                "source": {"path": "ocean/sst-sample.tif"},
                "identifier": "h1",
                "title": "h1",
            },
        },
    )
    wait_condition(cluster.api, ns, "MapDataset", "h1")
    create_cr(cluster.api, ns, mapjob("rh", "rehash", "rehash", {"datasets": ["h1"]}))
    job = phase_is(cluster.api, ns, "rh", "Succeeded")
    checksum = job["status"]["result"]["checksums"]["h1"]
    wait_until(
        lambda: get_cr(cluster.api, ns, "MapDataset", "h1")["status"].get("checksum") == checksum,
        "checksum in the dataset status",
    )


def test_cancel_and_delete_leave_nothing_behind(cluster, ns):
    # a PVC that does not exist keeps the pod Pending: the job stays active until cancelled
    body = mapjob(
        "slow",
        "cog-convert",
        "cogConvert",
        {"input": "a.tif", "output": "b.tif"},
        data={"persistentVolumeClaim": "no-such-claim"},
    )
    create_cr(cluster.api, ns, body)
    batch, core = client.BatchV1Api(cluster.api), client.CoreV1Api(cluster.api)
    wait_until(lambda: core.list_namespaced_pod(ns, label_selector="job-name=slow").items, "pod created")
    patch_cr(cluster.api, ns, "MapJob", "slow", {"spec": {"cancel": True}})
    phase_is(cluster.api, ns, "slow", "Cancelled")
    wait_until(lambda: not batch.list_namespaced_job(ns).items, "Job deleted on cancel")
    wait_until(lambda: not core.list_namespaced_pod(ns, label_selector="job-name=slow").items, "pods deleted")

    create_cr(cluster.api, ns, {**body, "metadata": {"name": "slow2"}})
    wait_until(lambda: core.list_namespaced_pod(ns, label_selector="job-name=slow2").items, "pod created")
    delete_cr(cluster.api, ns, "MapJob", "slow2")
    wait_until(lambda: get_cr(cluster.api, ns, "MapJob", "slow2") is None, "MapJob gone")
    assert not batch.list_namespaced_job(ns).items
    assert not core.list_namespaced_pod(ns, label_selector="job-name=slow2").items


def test_a_finished_job_cannot_be_cancelled(cluster, ns):
    create_cr(
        cluster.api,
        ns,
        mapjob(
            "done",
            "cog-convert",
            "cogConvert",
            {"input": "ocean/sst-sample.tif", "output": f"out/{ns}/d.tif"},
        ),
    )
    phase_is(cluster.api, ns, "done", "Succeeded")
    patch_cr(cluster.api, ns, "MapJob", "done", {"spec": {"cancel": True}})
    job = wait_until(
        lambda: (
            "cannot be cancelled"
            in ((o := get_cr(cluster.api, ns, "MapJob", "done"))["status"].get("message") or "")
            and o
        ),
        "cancel refused",
    )
    assert job["status"]["phase"] == "Succeeded"


@pytest.mark.parametrize(
    ("spec", "expect"),
    [
        ({"type": "cog-convert", "rehash": {"datasets": ["a"]}}, "type cog-convert needs spec.cogConvert"),
        (
            {"type": "rehash", "rehash": {"datasets": ["a"], "pathPrefix": "x"}},
            "exactly one of datasets or pathPrefix",
        ),
        (
            {"type": "cog-convert", "cogConvert": {"input": "../etc/passwd", "output": "x"}},
            "spec.cogConvert.input",
        ),
        ({"type": "teleport"}, "spec.type"),
    ],
    ids=["wrong-block", "rehash-both", "traversal", "bad-type"],
)
def test_wrong_params_are_rejected_by_the_apiserver(cluster, namespace, crds, spec, expect):
    body = {
        "apiVersion": "maps.kube-mapserver.io/v1alpha1",
        "kind": "MapJob",
        "metadata": {"name": "x"},
        "spec": spec,
    }
    with pytest.raises(ApiException) as e:
        create_cr(cluster.api, namespace, body)
    assert e.value.status == 422 and expect in json.loads(e.value.body)["message"]
