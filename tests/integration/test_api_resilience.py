"""The facade while the kube-apiserver is gone (stopped: connections refused; frozen with SIGSTOP:
connections hang): every call that needs the apiserver answers 503 with a JSON body (the facade
gives up by itself: a call it does not answer fails at the client's 60 s timeout), cached reads
keep working and are not queued behind hanging writes, and the facade recovers by itself
afterwards. Also: an unknown user and a wrong password get the same answer (no user oracle), and
dataset lists come from the watch cache (no LIST per request).

Nothing here asserts on time: the order of answers and the facade's own counters are checked.
How long things take is measured by `make bench` (bench/api_bench.py: list latency, login timing,
/health with a hung apiserver). Each test prints what it saw."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from kubernetes import client

from tests.conftest import cluster_mod
from tests.helpers import GROUP, VERSION, create_cr, get_cr, wait_until

REQUEST_TIMEOUT = 4  # KMS_REQUEST_TIMEOUT of the facade under test
UNAVAILABLE = "Kubernetes API is unavailable"  # the facade's 503 body (kms_api.errors.from_kube)
NO_ANSWER = "unreachable or no answer in time"  # ... when its own call failed or timed out
TOO_MANY = "too many calls waiting for it"  # ... when it refused the call at once (KMS_KUBE_MAX_PENDING)


def ds_spec(id_: str) -> dict:
    return {
        "id": id_,
        "type": "raster",
        "source": {"path": "ocean/sst-sample.tif"},
        "identifier": id_,
        "title": f"Resilience {id_}",
    }


class ApiServer:
    """The session plane's kube-apiserver: stop/start (refused connections) or freeze/thaw (hangs)."""

    def __init__(self, cluster):
        self.plane = cluster_mod.Plane(cluster.kubeconfig.parent)
        self.frozen = False

    @property
    def pid(self) -> int:
        return self.plane.load()["pids"]["kube-apiserver"]

    def stop(self) -> None:
        """SIGKILL (a crash; also the shortest outage for the rest of the session's plane)."""
        pid = self.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        wait_until(lambda: not cluster_mod.alive(pid), "kube-apiserver gone after SIGKILL", 10, 0.05)

    def freeze(self) -> None:
        os.killpg(self.pid, signal.SIGSTOP)
        self.frozen = True

    def restore(self) -> None:
        """Running and /readyz again, whatever state the test left it in."""
        state = self.plane.load()
        pid = state["pids"]["kube-apiserver"]
        if self.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGCONT)
            self.frozen = False
        if not cluster_mod.alive(pid):
            cluster_mod.start_process(self.plane, state, "kube-apiserver", state["argv"]["kube-apiserver"])
        pki = self.plane.dir / "pki"
        cluster_mod.wait_for(
            "kube-apiserver /readyz",
            lambda: cluster_mod.api_get(state, pki, "/readyz")[0] == 200,
            self.plane,
            state,
            60,
            "kube-apiserver",
        )


def _node_ready(cluster) -> bool:
    nodes = client.CoreV1Api(cluster.api).list_node().items
    return bool(nodes) and all(
        any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or []) for n in nodes
    )


def _upload_dir(root) -> set[str]:
    d = root / "uploads"
    return {p.name for p in d.iterdir()} if d.exists() else set()


def _detail(resp: httpx.Response) -> str:
    """The `detail` of an error body ("" for anything else)."""
    try:
        payload = resp.json()
    except ValueError:
        return ""
    return str(payload.get("detail") or "") if isinstance(payload, dict) else ""


@pytest.mark.chaos
@pytest.mark.parametrize("mode", ["stopped", "frozen"])
def test_facade_answers_503_while_the_apiserver_is_gone_and_recovers(
    cluster, facade_factory, operator_process, tmp_path, capsys, mode
):
    if not cluster.local:
        pytest.skip("stops the local control plane's apiserver")
    root = tmp_path / "data"
    (root / "ocean").mkdir(parents=True)
    fac = facade_factory(
        root=root,
        KMS_WATCH_TIMEOUT="5",
        KMS_REQUEST_TIMEOUT=str(REQUEST_TIMEOUT),
        KMS_LOGIN_IP_MAX_FAILURES="100",
    )
    (root / "ocean" / "sst-sample.tif").write_bytes(
        (operator_process.data_root / "ocean" / "sst-sample.tif").read_bytes()
    )
    tag = uuid.uuid4().hex[:6]
    editor = fac.client("editor")
    before = f"before-{tag}"
    r = editor.post("/datasets", json=ds_spec(before))
    assert r.status_code == 201, r.text
    r = editor.post("/jobs/inspect", json={"params": {"dataset": before}, "name": f"job-{tag}"})
    assert r.status_code == 201, r.text
    headers = dict(editor.headers)
    uploads_before = _upload_dir(root)

    def call(name: str, method: str, path: str, **kw) -> tuple[str, int, dict | str]:
        try:  # the 60 s client timeout only catches a facade that hangs instead of giving up itself
            resp = httpx.request(method, fac.url + path, headers=headers, timeout=60, **kw)
        except httpx.HTTPError as e:  # the facade itself did not answer: reported as status 0
            return name, 0, f"{type(e).__name__}: {e}"
        try:
            payload = resp.json()
        except ValueError:
            payload = resp.text[:300]
        return name, resp.status_code, payload

    writes = {  # each needs the apiserver: 503
        "GET /health": ("GET", "/health", {}),
        "POST /datasets": ("POST", "/datasets", {"json": ds_spec(f"during-{tag}")}),
        "DELETE /datasets/{id}": ("DELETE", f"/datasets/{before}", {}),
        "POST /datasets/upload": (
            "POST",
            "/datasets/upload",
            {"files": {"file": (f"up-{tag}.geojson", b'{"type": "FeatureCollection", "features": []}')}},
        ),
        "POST /jobs/inspect": ("POST", "/jobs/inspect", {"json": {"params": {"dataset": before}}}),
        "POST /jobs/{id}/cancel": ("POST", f"/jobs/job-{tag}/cancel", {}),
        "DELETE /jobs/{id}": ("DELETE", f"/jobs/job-{tag}", {}),
    }
    reads = {  # served from the watch cache (or the loaded users): still 200
        "GET /datasets/{id}": ("GET", f"/datasets/{before}", {}),
        "GET /datasets": ("GET", "/datasets", {}),
        "GET /jobs/{id}": ("GET", f"/jobs/job-{tag}", {}),
        "GET /me": ("GET", "/me", {}),
    }
    api = ApiServer(cluster)
    outage = 0.0
    try:
        t_down = time.monotonic()
        api.stop() if mode == "stopped" else api.freeze()
        # all at once: the outage stays short (the session's node lease and controllers share the plane)
        with ThreadPoolExecutor(len(writes) + len(reads)) as pool:
            futures = [pool.submit(call, n, m, p, **kw) for n, (m, p, kw) in {**writes, **reads}.items()]
            results = {f.result()[0]: f.result()[1:] for f in futures}
        # a login needs no apiserver once the users are loaded
        r = httpx.post(
            f"{fac.url}/token", data={"username": "viewer", "password": fac.passwords["viewer"]}, timeout=60
        )
        login_status = r.status_code
    finally:
        api.restore()
        outage = time.monotonic() - t_down  # printed only
        wait_until(lambda: _node_ready(cluster), "the fake node Ready again", 60)

    problems = []
    for name, (status, payload) in results.items():
        want = 503 if name in writes else 200
        if status != want:
            problems.append(f"{name}: HTTP {status} (want {want}): {payload}")
        elif name in writes and name != "GET /health":
            assert isinstance(payload, dict) and UNAVAILABLE in payload["detail"], payload
            assert "127.0.0.1" not in payload["detail"], "internal addresses leak into the error body"
        elif name == "GET /health":
            comps = {c["name"]: c["status"] for c in payload["components"]}
            assert payload["status"] == "down" and comps["kubernetes"] == "down", payload
            assert "127.0.0.1" not in str(payload), "the public health report names internal addresses"
    assert not problems, "\n".join(problems)
    assert login_status == 200
    assert _upload_dir(root) == uploads_before, "a failed upload left a file behind"

    # recovery, without touching the facade: health, writes, and the watches resynced
    t_up = time.monotonic()
    wait_until(fac.ready, "facade healthy again", 60)
    healthy_after = time.monotonic() - t_up  # printed only
    after = f"after-{tag}"
    r = wait_until(
        lambda: (x := editor.post("/datasets", json=ds_spec(after))).status_code == 201 and x, "write"
    )
    assert r.json()["id"] == after
    outside = f"outside-{tag}"  # written behind the facade's back: only the watch can tell it
    create_cr(
        cluster.api,
        fac.namespace,
        {
            "apiVersion": "maps.kube-mapserver.io/v1alpha1",
            "kind": "MapDataset",
            "metadata": {"name": outside},
            "spec": {k: v for k, v in ds_spec(outside).items() if k != "id"},
        },
    )
    wait_until(lambda: editor.get(f"/datasets/{outside}").status_code == 200, "watch delivers a new CR", 30)
    # the facade and the apiserver agree on every object touched during the outage (a frozen
    # apiserver may still carry out a request the facade gave up on: then the cache must show it)
    for name in (before, f"during-{tag}", after, outside):
        in_cluster = get_cr(cluster.api, fac.namespace, "MapDataset", name)
        live = in_cluster is not None and not in_cluster["metadata"].get("deletionTimestamp")
        wait_until(
            lambda n=name, want=live: (editor.get(f"/datasets/{n}").status_code == 200) == want,
            f"facade and apiserver agree on {name} (in cluster: {live})",
            30,
        )
    if mode == "stopped":  # nothing reached the apiserver: the refused delete deleted nothing
        assert get_cr(cluster.api, fac.namespace, "MapDataset", before) is not None
    editor.close()
    with capsys.disabled():
        print(
            f"\n[chaos] facade with the apiserver {mode} ({outage:.1f}s outage): "
            f"{len(writes)} calls answered 503, {len(reads) + 1} cached reads/logins answered 200, "
            f"0 hangs; healthy {healthy_after:.1f}s after the apiserver returned, objects lost=0"
        )


# ------------------------------------------------------------------ logins (no user oracle)


def test_unknown_user_and_wrong_password_get_the_same_answer(facade_factory):
    """An unknown user and a known one with a wrong password get the same status, body and headers,
    and are throttled alike. (How long each takes is a `make bench` figure: bench/api_bench.py.)"""
    fac = facade_factory(
        KMS_LOGIN_MAX_FAILURES="3", KMS_LOGIN_IP_MAX_FAILURES="100000", KMS_LOGIN_WINDOW="600"
    )
    url = f"{fac.url}/token"

    def attempts(username: str) -> list[tuple]:
        out = []
        for i in range(4):  # 3 failures allowed per user name, the 4th is throttled
            r = httpx.post(url, data={"username": username, "password": f"not-the-password-{i}"}, timeout=30)
            out.append(
                (
                    r.status_code,
                    r.json(),
                    r.headers.get("www-authenticate"),
                    r.headers.get("content-type"),
                    "retry-after" in r.headers,  # its value counts down: only its presence is compared
                )
            )
        return out

    known, unknown = attempts("editor"), attempts("nobody")
    assert [a[0] for a in known] == [401, 401, 401, 429], known
    assert unknown == known


# ------------------------------------------------------------------ reads from the watch cache

CACHED = 60  # datasets; three pages of 20, keywords row-0, row-1, row-2


def _cache_lists(url: str) -> int:
    """Full LISTs the facade's dataset cache has done (its start, 410 Gone, errors)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    m = re.search(r'^kms_api_cache_lists\{resource="mapdatasets"\} ([0-9.]+)$', text, re.M)
    assert m, "kms_api_cache_lists{resource=mapdatasets} missing from /metrics"
    return int(float(m.group(1)))


def test_dataset_lists_are_served_from_the_watch_cache(cluster, facade_factory, capsys):
    """Paging, sorting and searching GET /datasets answer from the watch cache: right pages, and the
    facade's count of full LISTs stays the same over every request. (Their latency at 1,000
    datasets is a `make bench` figure: bench/api_bench.py.)"""
    fac = facade_factory()
    names = [f"cached-{i:03d}" for i in range(CACHED)]
    titles = {n: f"Cached tile {i}" for i, n in enumerate(names)}
    for i, name in enumerate(names):  # behind the facade's back: only its watch sees them
        create_cr(
            cluster.api,
            fac.namespace,
            {
                "apiVersion": "maps.kube-mapserver.io/v1alpha1",
                "kind": "MapDataset",
                "metadata": {"name": name},
                "spec": {
                    "type": "raster",
                    "source": {"path": f"perf/tile-{i:03d}.tif"},
                    "identifier": f"no.test:{name}",
                    "title": titles[name],
                    "keywords": ["cached", f"row-{i // 20}"],
                },
            },
        )
    by_title_desc = sorted(names, key=lambda n: (titles[n].lower(), n))[::-1]
    queries = [  # params, the ids of the page, total
        ({"limit": 20}, names[:20], CACHED),
        ({"limit": 20, "offset": 50, "sort": "-title"}, by_title_desc[50:70], CACHED),
        ({"limit": 50, "q": "row-1"}, names[20:40], 20),
    ]
    rounds = 20
    try:
        with fac.client("viewer") as c:
            wait_until(
                lambda: c.get("/datasets", params={"limit": 1}).json()["total"] == CACHED,
                f"{CACHED} datasets in the facade's cache",
            )
            lists_before = _cache_lists(fac.url)
            for _ in range(rounds):
                for params, ids, total in queries:
                    r = c.get("/datasets", params=params)
                    assert r.status_code == 200, r.text
                    page = r.json()
                    assert page["total"] == total, (params, page)
                    assert [item["id"] for item in page["items"]] == ids, (params, page)
            lists_after = _cache_lists(fac.url)
    finally:  # leave the session's operator nothing to do
        client.CustomObjectsApi(cluster.api).delete_collection_namespaced_custom_object(
            GROUP, VERSION, fac.namespace, "mapdatasets"
        )
    assert lists_before == lists_after >= 1, (lists_before, lists_after)  # none LISTed
    with capsys.disabled():
        print(
            f"\n[cache] {rounds * len(queries)} GET /datasets (pages, sorted, searched) over {CACHED} "
            f"datasets: right pages, full LISTs by the facade meanwhile: {lists_after - lists_before}"
        )


# ------------------------------------------------------------------ reads while writes hang

WRITES = 50
READS = 10
MAX_PENDING = 24  # KMS_KUBE_MAX_PENDING of the facade under test (its default)


@pytest.mark.chaos
def test_cached_reads_are_answered_while_writes_hang_on_a_frozen_apiserver(
    cluster, facade_factory, operator_process, capsys
):
    """50 writes hang on a frozen apiserver at once: reads from the cache must not queue behind them
    (the web server has 40 threads; at most KMS_KUBE_MAX_PENDING=24 calls may wait on the
    apiserver, the other writes are refused at once). Checked by order, not by time: every read
    is answered before the first write that waited on the apiserver comes back."""
    if not cluster.local:
        pytest.skip("freezes the local control plane's apiserver")
    fac = facade_factory(
        KMS_WATCH_TIMEOUT="5", KMS_REQUEST_TIMEOUT="8", KMS_KUBE_MAX_PENDING=str(MAX_PENDING)
    )
    tag = uuid.uuid4().hex[:6]
    with fac.client("editor") as editor:
        assert editor.post("/datasets", json=ds_spec(f"seen-{tag}")).status_code == 201
        headers = dict(editor.headers)
    api = ApiServer(cluster)
    answers: list[tuple[str, int, str]] = []  # (write|read, status, detail) in the order they came back
    lock = threading.Lock()

    def call(kind: str, method: str, path: str, **kw) -> None:
        r = httpx.request(method, fac.url + path, headers=headers, timeout=60, **kw)
        with lock:
            answers.append((kind, r.status_code, _detail(r)))

    def refused() -> int:
        with lock:
            return sum(1 for k, s, d in answers if k == "write" and s == 503 and TOO_MANY in d)

    try:
        api.freeze()
        with ThreadPoolExecutor(WRITES + 1) as pool:
            writes = [
                pool.submit(call, "write", "POST", "/datasets", json=ds_spec(f"w{i}-{tag}"))
                for i in range(WRITES)
            ]
            # every write is in once all but MAX_PENDING of them were refused: the others (or a
            # cache's own relist) hold every slot for apiserver calls, and wait on the frozen apiserver
            wait_until(
                lambda: refused() >= WRITES - MAX_PENDING,
                f"{WRITES - MAX_PENDING} writes refused at once (KMS_KUBE_MAX_PENDING={MAX_PENDING})",
                30,
                0.02,
            )
            for _ in range(READS):  # one after the other, while those writes still wait
                pool.submit(call, "read", "GET", f"/datasets/seen-{tag}").result()
            for f in writes:  # each answered by the facade (an exception: no answer within 60 s)
                f.result()
    finally:
        api.restore()
        wait_until(lambda: _node_ready(cluster), "the fake node Ready again", 60)
    reads = [(i, s) for i, (k, s, _) in enumerate(answers) if k == "read"]
    waited = [
        (i, s, d) for i, (k, s, d) in enumerate(answers) if k == "write" and not (s == 503 and TOO_MANY in d)
    ]
    with capsys.disabled():
        print(
            f"\n[chaos] frozen apiserver, {WRITES} concurrent writes: {WRITES - len(waited)} refused at "
            f"once, {len(waited)} waited on the apiserver ({sorted({s for _, s, _ in waited})}); "
            f"{len(reads)} cached reads meanwhile {sorted({s for _, s in reads})}, the last answered "
            f"as #{max(i for i, _ in reads) + 1} of {len(answers)}, the first waiting write as "
            f"#{min((i for i, _, _ in waited), default=-1) + 1}"
        )
    assert len(answers) == WRITES + READS
    assert {s for _, s in reads} == {200}, answers
    assert 1 <= len(waited) <= MAX_PENDING, answers
    # the facade gave up on each by itself (its request timeout), or the apiserver took it
    assert all(s == 201 or (s == 503 and NO_ANSWER in d) for _, s, d in waited), waited
    assert max(i for i, _ in reads) < min(i for i, _, _ in waited), answers


@pytest.mark.chaos
def test_facade_started_during_an_outage_serves_once_the_apiserver_returns(
    cluster, facade_factory, operator_process, capsys
):
    """A facade (re)started while the apiserver is down: 503s, never 500 or a hang (a call it
    does not answer fails at the client's 60 s timeout); then it serves."""
    if not cluster.local:
        pytest.skip("stops the local control plane's apiserver")
    fac = facade_factory(KMS_WATCH_TIMEOUT="5", KMS_REQUEST_TIMEOUT=str(REQUEST_TIMEOUT))
    token = fac.token("editor")
    fac.stop()
    api = ApiServer(cluster)
    answers: dict[str, tuple[int, dict]] = {}
    try:
        api.stop()
        fac.start(wait_ready=False)
        for name, method, path, kw in [
            ("GET /health", "GET", "/health", {}),
            ("POST /token", "POST", "/token", {"data": {"username": "editor", "password": "x"}}),
            ("GET /datasets (token)", "GET", "/datasets", {"headers": {"Authorization": f"Bearer {token}"}}),
            (
                "POST /datasets (token)",
                "POST",
                "/datasets",
                {"headers": {"Authorization": f"Bearer {token}"}},
            ),
        ]:
            r = httpx.request(method, fac.url + path, timeout=60, **kw)
            answers[name] = (r.status_code, r.json())
    finally:
        api.restore()
        wait_until(lambda: _node_ready(cluster), "the fake node Ready again", 60)
    for name, (status, body) in answers.items():
        assert status == 503, (name, status, body)
        assert "127.0.0.1" not in str(body), (name, body)
    wait_until(fac.ready, "facade ready after the apiserver returned", 60)
    with fac.client("editor") as editor:  # a fresh login, and the token from before the restart still works
        assert editor.get("/datasets").status_code == 200
    r = httpx.get(f"{fac.url}/datasets", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200
    with capsys.disabled():
        print(
            f"\n[chaos] facade started during an apiserver outage: {len(answers)} calls answered 503, "
            f"server errors=0; serving again once the apiserver returned"
        )
