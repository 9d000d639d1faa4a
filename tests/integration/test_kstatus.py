"""The health GitOps tools compute for our resources: good and broken MapDatasets, MapServices and
MapJobs applied to the real apiserver, reconciled by the real operator, served by real MapServer
pods, each object read back and given to the real kstatus library (hack/kstatus: the
sigs.k8s.io/cli-utils/pkg/kstatus that Flux's `wait`/healthChecks and Argo-style checks use).

Current: done and healthy. InProgress: work in progress (Reconciling=True, or status not yet
observed for the current generation). Failed: Stalled=True, a failure only a change can fix."""

from __future__ import annotations

import pytest

from tests.helpers import FAST_PROBES, condition, create_cr, get_cr, make_data_volume, patch_cr, wait_until
from tests.kstatus import kstatus_of

API = "maps.kube-mapserver.io/v1alpha1"
RESULTS: list[tuple[str, str, str]] = []  # (case, kstatus, message): printed at the end


@pytest.fixture
def ns(cluster, namespace, operator_process, data_root):
    make_data_volume(cluster.api, namespace, data_root)
    return namespace


def dataset(name: str, group: str, path: str = "ocean/sst-sample.tif", **spec) -> dict:
    body = {
        "apiVersion": API,
        "kind": "MapDataset",
        "metadata": {"name": name, "labels": {"group": group}},
        "spec": {"type": "raster", "source": {"path": path}, "identifier": f"test:{name}", "title": name},
    }
    body["spec"].update(spec)
    return body


def service(name: str, group: str, **spec) -> dict:
    return {
        "apiVersion": API,
        "kind": "MapService",
        "metadata": {"name": name},
        "spec": {
            "datasetSelector": {"matchLabels": {"group": group}},
            "replicas": 1,
            "probes": FAST_PROBES,
            **spec,
        },
    }


def mapjob(name: str, params: dict) -> dict:
    return {
        "apiVersion": API,
        "kind": "MapJob",
        "metadata": {"name": name},
        "spec": {
            "type": "cog-convert",
            "cogConvert": params,
            "data": {"persistentVolumeClaim": "map-data"},
            "backoffLimit": 0,
        },
    }


def health(obj: dict) -> dict:
    [result] = kstatus_of([obj])
    return result


def wait_health(api, ns: str, kind: str, name: str, want: str, timeout: float = 120) -> tuple[dict, dict]:
    """Wait until kstatus computes `want` for the object as the apiserver returns it."""

    def probe():
        obj = get_cr(api, ns, kind, name)
        h = health(obj) if obj else {}
        return (obj, h) if h.get("status") == want else None

    obj, h = wait_until(probe, f"kstatus {want} for {kind} {ns}/{name}", timeout=timeout)
    RESULTS.append((f"{kind} {name}", h["status"], h["message"]))
    return obj, h


def conditions(obj: dict) -> dict[str, str]:
    return {t: condition(obj, t).get("status") for t in ("Ready", "Reconciling", "Stalled")}


def test_datasets_current_failed_and_in_progress(cluster, ns):
    created = create_cr(cluster.api, ns, dataset("good", "ds"))
    # what `kubectl apply` answers, before the operator looked: the CRD's status default
    assert created["status"] == {"observedGeneration": 0}
    h = health(created)
    assert h["status"] == "InProgress", h
    RESULTS.append(("MapDataset good, as created (no reconcile yet)", h["status"], h["message"]))
    create_cr(cluster.api, ns, dataset("missing", "ds", path="ocean/nope.tif"))

    obj, _ = wait_health(cluster.api, ns, "MapDataset", "good", "Current")
    assert conditions(obj) == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]

    obj, h = wait_health(cluster.api, ns, "MapDataset", "missing", "Failed")
    assert conditions(obj) == {"Ready": "False", "Reconciling": "False", "Stalled": "True"}
    assert condition(obj, "Stalled")["reason"] == "SourceNotFound"
    assert "ocean/nope.tif" in h["message"] and "does not exist" in h["message"]

    # right after a spec change, what `kubectl apply` returns: the new generation, not yet observed
    changed = patch_cr(cluster.api, ns, "MapDataset", "good", {"spec": {"title": "Good, renamed"}})
    h = health(changed)
    assert h["status"] == "InProgress" and "observed generation" in h["message"], h
    RESULTS.append(("MapDataset good, just after a spec change", h["status"], h["message"]))
    wait_health(cluster.api, ns, "MapDataset", "good", "Current")

    # fixing the source heals it: Stalled goes away with the spec change that fixes it
    patch_cr(cluster.api, ns, "MapDataset", "missing", {"spec": {"source": {"path": "ocean/sst-sample.tif"}}})
    obj, _ = wait_health(cluster.api, ns, "MapDataset", "missing", "Current")
    assert condition(obj, "Stalled")["status"] == "False"


def test_services_current_in_progress_and_failed(cluster, ns, data_root):
    create_cr(cluster.api, ns, dataset("good", "good"))
    create_cr(cluster.api, ns, dataset("missing", "good", path="ocean/nope.tif"))  # left out: still Current
    # valid syntax, a source GDAL reads, but a CRS PROJ does not know: MapServer refuses the mapfile
    create_cr(
        cluster.api,
        ns,
        dataset(
            "unloadable", "broken", path="ocean/zones-sample.geojson", type="vector", projection="EPSG:999999"
        ),
    )
    h = health(create_cr(cluster.api, ns, service("good", "good")))
    assert h["status"] == "InProgress", h
    create_cr(cluster.api, ns, service("broken", "broken"))
    # pods that cannot start yet (their data claim does not exist): a rollout in progress
    create_cr(cluster.api, ns, service("waiting", "good", data={"persistentVolumeClaim": "no-such-claim"}))

    obj, _ = wait_health(cluster.api, ns, "MapService", "good", "Current", timeout=180)
    assert obj["status"]["datasets"] == ["good"] and condition(obj, "Degraded")["status"] == "True"
    assert conditions(obj) == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}

    obj, h = wait_health(cluster.api, ns, "MapService", "broken", "Failed", timeout=180)
    assert condition(obj, "Stalled")["reason"] == "MapfileLoadFailed"
    assert conditions(obj) == {"Ready": "False", "Reconciling": "False", "Stalled": "True"}
    assert "MapServer cannot load the mapfile" in h["message"]
    assert "msProcessProjection" in h["message"], h["message"]  # MapServer's own words, from the pod

    def reconciling():
        o = get_cr(cluster.api, ns, "MapService", "waiting")
        c = condition(o, "Reconciling")
        return (
            o
            if c.get("status") == "True" and c.get("observedGeneration") == o["metadata"]["generation"]
            else None
        )

    obj = wait_until(reconciling, "MapService waiting: Reconciling=True for its generation", timeout=60)
    h = health(obj)
    assert h["status"] == "InProgress" and condition(obj, "Stalled")["status"] == "False", h
    RESULTS.append(("MapService waiting (pods not schedulable yet)", h["status"], h["message"]))

    # a spec change: InProgress in the answer to the change itself, then Current again
    changed = patch_cr(cluster.api, ns, "MapService", "good", {"spec": {"title": "Renamed"}})
    h = health(changed)
    assert h["status"] == "InProgress", h
    RESULTS.append(("MapService good, just after a spec change", h["status"], h["message"]))
    wait_health(cluster.api, ns, "MapService", "good", "Current", timeout=180)

    # the broken service heals when the dataset is fixed (the same MapService generation)
    patch_cr(cluster.api, ns, "MapDataset", "unloadable", {"spec": {"projection": None}})
    obj, _ = wait_health(cluster.api, ns, "MapService", "broken", "Current", timeout=180)
    assert condition(obj, "Stalled")["status"] == "False" and obj["status"]["datasets"] == ["unloadable"]


def test_jobs_failed_for_good_and_succeeded(cluster, ns):
    h = health(
        create_cr(
            cluster.api, ns, mapjob("fails", {"input": "ocean/missing.tif", "output": f"out/{ns}/x.tif"})
        )
    )
    assert h["status"] == "InProgress", h
    create_cr(
        cluster.api, ns, mapjob("works", {"input": "ocean/sst-sample.tif", "output": f"out/{ns}/y.tif"})
    )

    obj, h = wait_health(cluster.api, ns, "MapJob", "fails", "Failed", timeout=180)
    assert obj["status"]["phase"] == "Failed" and condition(obj, "Stalled")["reason"] == "JobFailed"
    assert "missing.tif" in h["message"]

    obj, _ = wait_health(cluster.api, ns, "MapJob", "works", "Current", timeout=180)
    assert obj["status"]["phase"] == "Succeeded"
    assert conditions(obj) == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}


def test_zz_print_the_results(capsys):
    """The kstatus results of the cases above (for the record; run with -s to see them)."""
    with capsys.disabled():
        for case, status, message in RESULTS:
            print(f"\n  kstatus {status:<10} {case}: {message[:160]}", end="")
        print()
