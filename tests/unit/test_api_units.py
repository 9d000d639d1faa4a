"""Pure parts of the facade: shaping, catalog queries, throttling, retention, config layers, names."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from kms_api import catalog, views
from kms_api.auth import (
    InvalidToken,
    LoginThrottle,
    Tokens,
    User,
    hash_password,
    parse_users,
    user_entry,
    verify_password,
)
from kms_api.cache import Store, rv_newer
from kms_api.config import AppConfig, effective, env_layer
from kms_api.errors import Problem, from_kube
from kms_api.jobs_service import select_for_cleanup
from kms_api.registry import derive_id, derive_identifier, in_roots
from kms_api.tombstones import retain
from kms_api.upload import check_filename
from kms_crds.kube import KubeError


def ds(name: str, identifier: str, path: str | None = None, checksum: str | None = None, **spec) -> dict:
    return {
        "metadata": {"name": name, "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {
            "type": "raster",
            "identifier": identifier,
            "title": name,
            "source": {"path": path or name},
            **spec,
        },
        "status": {"checksum": checksum} if checksum else {},
    }


def job(name: str, phase: str | None, completed: str | None = None) -> dict:
    status = {"phase": phase} if phase else {}
    if completed:
        status["completionTime"] = completed
    return {
        "metadata": {"name": name, "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"type": "rehash"},
        "status": status,
    }


@pytest.mark.parametrize(
    ("phase", "state"),
    [("Succeeded", "success"), ("Failed", "failure"), ("Cancelled", "cancelled"), ("Running", "in-progress"),
     ("Queued", "in-progress"), (None, "in-progress")],
)  # fmt: skip
def test_job_state_shaping(phase, state):
    assert views.job_state(phase) == state
    view = views.job_view(job("j", phase))
    assert view["state"] == state and set(view) == {
        "id", "type", "state", "phase", "message", "result", "created", "started", "finished"
    }  # fmt: skip


def test_select_search_filters_and_sort():
    objs = [ds("b", "x:b", keywords=["Ocean"]), ds("a", "x:a", campaign="c1"), ds("c", "x:c", type="vector")]
    items = [views.dataset_item(o) for o in objs]
    ids = lambda sel: [v["item"]["id"] for v in sel]  # noqa: E731
    assert ids(catalog.select(items)) == ["a", "b", "c"]
    assert ids(catalog.select(items, sort="-id")) == ["c", "b", "a"]
    assert ids(catalog.select(items, q="ocean")) == ["b"]
    assert ids(catalog.select(items, type_="vector")) == ["c"]
    assert ids(catalog.select(items, campaign="c1")) == ["a"]
    assert ids(catalog.select(items, ready=True)) == []


def test_duplicates_groups():
    objs = [
        ds("a", "same", "d/f.tif", "sha256:1"),
        ds("b", "same", "d//./f.tif", "sha256:1"),
        ds("c", "other", "g.tif", "sha256:2"),
    ]
    report = catalog.duplicates(objs)
    assert report["byChecksum"] == [{"key": "sha256:1", "datasets": ["a", "b"]}]
    assert report["byIdentifier"] == [{"key": "same", "datasets": ["a", "b"]}]
    assert report["bySource"] == [{"key": "path:d/f.tif", "datasets": ["a", "b"]}]


def test_hyspex_scene_ids_and_missing_variants():
    assert catalog.scene_and_variant({"identifier": "s1_rgb"}) == ("s1", "RGB")
    assert catalog.scene_and_variant({"identifier": "s1-Z"}) == ("s1", "Z")
    assert catalog.scene_and_variant({"identifier": "s1", "variant": "Z"}) == ("s1", "Z")
    assert catalog.scene_and_variant({"identifier": "plain"}) == ("plain", None)
    objs = [
        ds("a", "s1_rgb", campaign="c"),
        ds("b", "s1_z", campaign="c"),
        ds("c", "s2-rgb", campaign="c"),
        ds("d", "s3_rgb"),  # no campaign: not a HySpex scene
    ]
    assert catalog.hyspex_missing(objs) == [
        {
            "campaign": "c",
            "scenes": [{"scene": "s2", "present": ["RGB"], "missing": ["Z"], "datasets": ["c"]}],
        }
    ]


def test_throttle_per_user_and_per_address():
    t = LoginThrottle(max_user=3, max_ip=5, window=60)
    for i in range(3):
        assert t.retry_after("u", "1.1.1.1", now=100 + i) is None
        t.failed("u", "1.1.1.1", now=100 + i)
    assert t.retry_after("u", "2.2.2.2", now=103) == 58
    assert t.retry_after("v", "1.1.1.1", now=103) is None
    assert t.retry_after("u", "2.2.2.2", now=161) is None  # the window slid past the first failure
    t.failed("w", "1.1.1.1", now=104)
    t.failed("x", "1.1.1.1", now=105)
    assert t.retry_after("y", "1.1.1.1", now=106)  # five failures from one address
    t.succeeded("u")
    assert t.retry_after("u", "3.3.3.3", now=106) is None


def test_passwords_and_tokens():
    h = hash_password("correct horse")
    assert verify_password(h, "correct horse") and not verify_password(h, "wrong")
    assert not verify_password(None, "correct horse")
    users = parse_users({"ann": user_entry(h, "editor"), "bad": "{", "bob": '{"hash": "x", "role": "root"}'})
    assert list(users) == ["ann"] and users["ann"].role == "editor"
    tokens = Tokens("k" * 40, 60)
    claims = tokens.decode(tokens.issue(User("ann", "editor", h)))
    assert claims["sub"] == "ann" and claims["exp"] - claims["iat"] == 60
    for bad in (
        jwt.encode({"sub": "ann", "exp": 1, "iat": 0, "pwv": "x", "iss": "kube-mapserver"}, "k" * 40),
        jwt.encode(
            {"sub": "ann", "exp": 2**40, "iat": 0, "pwv": "x", "iss": "kube-mapserver"}, "other-key" * 4
        ),
        jwt.encode({"sub": "ann", "exp": 2**40, "iat": 0, "iss": "kube-mapserver"}, "k" * 40),  # no pwv
        jwt.encode({"sub": "ann", "exp": 2**40, "iat": 0, "pwv": "x"}, None, algorithm="none"),
    ):
        with pytest.raises(InvalidToken):
            tokens.decode(bad)


def test_tombstone_retention():
    now = datetime(2024, 6, 1, tzinfo=UTC)
    at = lambda days: (now - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    entries = [{"id": f"j{i}", "deletedAt": at(40 - 10 * i)} for i in range(5)]  # 40, 30, 20, 10, 0 days old
    assert [e["id"] for e in retain(entries, now, 10, 25 * 86400)] == ["j2", "j3", "j4"]
    assert [e["id"] for e in retain(entries, now, 2, 365 * 86400)] == ["j3", "j4"]


def test_cleanup_selection():
    now = datetime(2024, 1, 1, 1, tzinfo=UTC)
    objs = [
        job("old-ok", "Succeeded", "2024-01-01T00:00:00Z"),
        job("new-bad", "Failed", "2024-01-01T00:59:50Z"),
        job("running", "Running"),
    ]
    assert [o["metadata"]["name"] for o in select_for_cleanup(objs, None, None, now)] == ["old-ok", "new-bad"]
    assert [o["metadata"]["name"] for o in select_for_cleanup(objs, 600, None, now)] == ["old-ok"]
    assert [o["metadata"]["name"] for o in select_for_cleanup(objs, None, ["failure"], now)] == ["new-bad"]


def test_config_layers():
    env = env_layer(
        {"KMS_MAX_UPLOAD_MB": "64", "KMS_ALLOWED_DATA_ROOTS": "a, b/", "KMS_CACHE_SEED_MAX_ZOOM": "x"}
    )
    assert env == {"maxUploadMb": "64", "allowedDataRoots": ["a", "b/"]}
    cfg = effective(env, {"maxUploadMb": 5, "minColormapClasses": 0})  # an invalid override is dropped
    assert cfg.max_upload_mb == 5 and cfg.min_colormap_classes == AppConfig().min_colormap_classes
    assert effective(env, {}).max_upload_mb == 64


@pytest.mark.parametrize("name", ["a.tif", "Zones_2024-01.geojson", "x.TIFF", "b+c.fgb"])
def test_good_file_names(name):
    assert check_filename(name) == name


@pytest.mark.parametrize(
    "name", ["", "../a.tif", "a/b.tif", "a\\b.tif", ".a.tif", "a\x00.tif", "a b.tif", "a.exe"]
)
def test_bad_file_names(name):
    with pytest.raises(Problem) as e:
        check_filename(name)
    assert e.value.status == 422 and e.value.field == "file"


def test_names_and_roots():
    assert derive_id("no.met:SST_2024-01") == "no-met-sst-2024-01"
    assert derive_identifier(".zones sample") == "zones-sample"
    assert in_roots("ocean/a.tif", ["ocean"]) and in_roots("x.tif", [])
    assert not in_roots("oceanic/a.tif", ["ocean"])


def test_apiserver_errors_map_to_client_answers():
    cause = [{"field": "spec.source.path", "message": "bad"}]
    p = from_kube(KubeError(422, "invalid", "Invalid", cause))
    assert (p.status, p.field) == (422, "source.path")
    assert from_kube(KubeError(409, "exists")).status == 409
    assert from_kube(KubeError(0, "connection refused")).status == 503


def test_store_keeps_the_newest_version():
    s = Store(kube=None, path="/x", what="x")  # type: ignore[arg-type]
    obj = lambda rv, title: {"metadata": {"name": "a", "resourceVersion": rv}, "spec": {"title": title}}  # noqa: E731
    s.upsert(obj("5", "new"))
    s.upsert(obj("3", "stale watch event"))
    assert s.get("a")["spec"]["title"] == "new"
    s.forget("a", "6")
    s.upsert(obj("5", "late event of a deleted object"))
    assert s.get("a") is None
    s.upsert(obj("7", "re-created"))
    assert s.get("a")["spec"]["title"] == "re-created"
    assert rv_newer("10", "9") and not rv_newer("9", "10") and rv_newer("abc", "9")


class ScriptedApi:
    """Stands in for the apiserver's list/watch answers to drive the watch loop through a 410. It
    asserts nothing itself (it runs on the store's thread, whose errors the loop logs and survives):
    it records what it was asked, for the test to check."""

    def __init__(self, store_ref: list):
        self.lists = 0
        self.watches = 0
        self.watch_versions: list[str] = []
        self.store_ref = store_ref

    def call(self, method: str, path: str, query: dict | None = None) -> dict:
        self.lists += 1
        rv = str(10 * self.lists)
        items = [{"metadata": {"name": f"obj-{self.lists}", "resourceVersion": rv}}]
        return {"kind": "ThingList", "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": items}

    def watch(self, path: str, query: dict, timeout_seconds: int):
        self.watches += 1
        self.watch_versions.append(query.get("resourceVersion"))
        if self.watches == 1:
            yield {"type": "ADDED", "object": {"metadata": {"name": "late", "resourceVersion": "11"}}}
            yield {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}
        elif self.watches == 2:
            yield {"type": "DELETED", "object": {"metadata": {"name": "obj-2", "resourceVersion": "21"}}}
        else:
            self.store_ref[0].stop()
            return


def test_watch_loop_relists_after_410_gone_and_resumes(caplog: pytest.LogCaptureFixture):
    holder: list = []
    api = ScriptedApi(holder)
    store = Store(api, "/things", "things", watch_timeout=1)  # type: ignore[arg-type]
    holder.append(store)
    with caplog.at_level(logging.INFO, logger="kms_api.cache"):
        store.start()
        store._thread.join(timeout=10)
        store.stop()
    # the loop logs and survives what goes wrong on its thread: any of it fails the test here, with
    # the thread's own exception when there is one
    trouble = [r for r in caplog.records if r.name == "kms_api.cache" and r.levelno >= logging.WARNING]
    for record in trouble:
        if record.exc_info and record.exc_info[1] is not None:
            raise record.exc_info[1]
    assert not trouble, [r.getMessage() for r in trouble]
    assert not store._thread.is_alive()
    # listed, watched from the list, relisted on 410 Gone, watched on from the relist and from there
    assert api.watch_versions == ["10", "20", "21"]
    assert api.lists == 2 and store.relists == 2
    assert store.get("obj-1") is None and store.get("late") is None  # replaced by the relist
    assert store.get("obj-2") is None  # deleted by the watch after the relist
    assert store.resource_version == "21"
