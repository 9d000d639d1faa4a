"""The dataset controller's pure decisions (dataset_watch.py), its store (snapshots.SnapshotStore)
and the render digest that lets a restarted operator keep a live mapfile."""

from __future__ import annotations

from types import SimpleNamespace

from kms_operator.builders import Owner, build_configmap
from kms_operator.dataset_watch import DatasetWatch, needs_reconcile
from kms_operator.labels import FINALIZER
from kms_operator.services import live_mapfile
from kms_operator.snapshots import SnapshotStore, dataset_snapshot, newer, render_digest


def body(name="d1", rv="10", gen=1, labels=None, finalizers=(FINALIZER,), deleting=False, ready=None):
    status = {}
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": ready, "reason": "R", "observedGeneration": gen}]
    meta = {
        "name": name,
        "namespace": "ns",
        "uid": "u-" + name,
        "resourceVersion": rv,
        "generation": gen,
        "labels": labels or {"a": "b"},
        "finalizers": list(finalizers),
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-11-30T00:00:00Z"
    return {"metadata": meta, "spec": {"identifier": "x:" + name, "type": "raster"}, "status": status}


def snap(**kw):
    return dataset_snapshot(body(**kw))


def test_work_is_asked_for_on_new_spec_labels_or_an_old_finalizer_only() -> None:
    seen = snap(finalizers=())
    assert needs_reconcile(None, seen), "new to this process (a restart re-checks every source)"
    assert not needs_reconcile(seen, snap(rv="11", finalizers=(), ready="True")), "a status change"
    assert needs_reconcile(seen, snap(rv="11", finalizers=(), gen=2)), "a new spec"
    assert needs_reconcile(seen, snap(rv="11", finalizers=(), labels={"a": "c"})), "new labels"
    assert not needs_reconcile(seen, snap(rv="11", finalizers=(), deleting=True)), "nothing to release"
    legacy = snap()  # the finalizer an earlier version added
    assert not needs_reconcile(legacy, snap(rv="11", ready="True")), "it stays until deletion"
    assert needs_reconcile(legacy, snap(rv="11", deleting=True)), "deleted: release, then let it go"


def test_the_store_keeps_one_snapshot_per_object_by_namespace() -> None:
    store = SnapshotStore()
    assert store.put(snap(name="a")) is None
    old = store.put(snap(name="a", rv="11"))
    assert old["rv"] == "10" and store.find("ns", "a")["rv"] == "11"
    store.put(snap(name="b"))
    assert sorted(d["name"] for d in store.get("ns")) == ["a", "b"] and len(store) == 2
    assert store.keys(None) == {("ns", "a"), ("ns", "b")} and store.keys("other") == set()
    store.remove("ns", "a")
    store.remove("ns", "b")
    assert list(store.get("ns")) == [] and not store.by_ns


def test_resource_versions_compare_as_revisions() -> None:
    assert newer("11", "9") and not newer("9", "11") and not newer("9", "9")
    assert newer("abc", "9") and not newer("abc", "abc")


def test_a_live_mapfile_is_taken_only_when_made_from_the_same_inputs() -> None:
    key = (1, (("d1", 1, "True", "SourceValid", 1, "[]"),))
    digest = render_digest(key, "http://svc/ogcapi")
    assert digest == render_digest(key, "http://svc/ogcapi")
    assert digest != render_digest((2, key[1]), "http://svc/ogcapi")
    assert digest != render_digest(key, "http://other/ogcapi")
    cm = build_configmap(Owner("svc", "ns", "uid"), "MAP\nEND\n", "CONFIG\nEND\n", "abc", digest)
    assert "".join(live_mapfile(cm, digest)) == "MAP\nEND\n"
    assert live_mapfile(cm, render_digest((2, key[1]), None)) is None
    assert live_mapfile(None, digest) is None
    unannotated = build_configmap(Owner("svc", "ns", "uid"), "MAP\nEND\n", "CONFIG\nEND\n", "abc")
    assert live_mapfile(unannotated, digest) is None
    big = "".join(f"  LAYER {i}\n" for i in range(100_000))  # stored gzipped, read back by lines
    gz = build_configmap(Owner("svc", "ns", "uid"), big, "CONFIG\nEND\n", "abc", digest)
    assert "service.map.gz" in gz["binaryData"] and "".join(live_mapfile(gz, digest)) == big


def test_the_namespace_is_settled_when_its_last_dataset_awaiting_inspection_is_done() -> None:
    """The count of datasets awaiting inspection per namespace, kept from the store's changes: it
    reaching 0 is what lets a waiting service render at once (a bulk apply is inspected)."""
    watch = SimpleNamespace(pending={})
    settled = DatasetWatch._settled.__get__(watch)  # (the method alone: no API client needed)
    assert not settled(None, snap(name="a"))  # new, not inspected: 1 awaiting
    assert not settled(None, snap(name="b"))  # 2
    assert not settled(None, snap(name="c", ready="True"))  # listed Ready: not counted
    assert not settled(snap(name="a"), snap(name="a", rv="11", ready="True"))  # 1 left
    assert not settled(snap(name="b", rv="11"), snap(name="b", rv="12"))  # still awaiting
    assert settled(snap(name="b", rv="12"), snap(name="b", rv="13", ready="False"))  # inspected: 0
    assert watch.pending == {}
    assert not settled(None, snap(name="d"))
    assert settled(snap(name="d"), None)  # deleted before its inspection: 0 again
