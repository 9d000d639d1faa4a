"""Logins against two facade replicas of one namespace and under a flood, on the real apiserver:
failures on one replica count on the other (the throttle lives in Leases), parallel guesses take
no more slots than the limit, expired throttle Leases are deleted, an apiserver outage falls back
to each replica's own throttle (never unthrottled, never locked out), and a flood of bad logins
is answered 401/429/503 while GET /datasets keeps answering 200. No timing asserts: the flood's
effect on latency is a `make bench` figure (bench/api_bench.py)."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from kubernetes import client

from kms_api.throttle import ATTEMPTS, SELECTOR, lease_name
from tests.conftest import FacadeProcess
from tests.helpers import wait_until


def _leases(cluster, ns: str) -> dict[str, dict]:
    items = client.CoordinationV1Api(cluster.api).list_namespaced_lease(ns, label_selector=SELECTOR).items
    return {
        i.metadata.name: {
            "attempts": [a for a in (i.metadata.annotations or {}).get(ATTEMPTS, "").split(",") if a]
        }
        for i in items
    }


def _login(fac: FacadeProcess, user: str, password: str) -> httpx.Response:
    return httpx.post(f"{fac.url}/token", data={"username": user, "password": password}, timeout=60)


@pytest.fixture(scope="module")
def replicas(facade_factory, tmp_path_factory):
    """Two facade processes serving one namespace (the production profile's two replicas)."""
    a = facade_factory(KMS_LOGIN_MAX_FAILURES="5", KMS_LOGIN_IP_MAX_FAILURES="1000", KMS_LOGIN_WINDOW="600")
    b = FacadeProcess(
        a.kubeconfig,
        a.namespace,
        a.data_root,
        tmp_path_factory.mktemp("replica-b") / "facade.log",
        **a.extra_env,
    )
    b.passwords = a.passwords
    b.start()
    yield a, b
    b.stop()


def test_failures_on_one_replica_count_on_the_other(cluster, replicas):
    a, b = replicas
    # an attacker alternating between the replicas gets the limit, not twice the limit
    codes = [_login((a, b)[i % 2], "editor", f"guess-{i}").status_code for i in range(10)]
    assert codes == [401] * 5 + [429] * 5, codes
    for fac in (a, b):
        r = _login(fac, "editor", a.passwords["editor"])
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1, r.text
    leases = _leases(cluster, a.namespace)
    assert len(leases[lease_name("u:editor")]["attempts"]) == 5
    assert not [n for n in leases if "editor" in n], "Lease names are opaque"
    # the other users are not affected, on either replica; a success gives its address slot back
    assert _login(b, "viewer", a.passwords["viewer"]).status_code == 200
    assert _login(a, "admin", a.passwords["admin"]).status_code == 200
    assert lease_name("u:admin") not in _leases(cluster, a.namespace)


def test_parallel_guesses_on_both_replicas_take_no_more_than_the_limit(cluster, replicas):
    a, b = replicas
    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(lambda i: _login((a, b)[i % 2], "viewer", f"guess-{i}").status_code, range(20)))
    seen = Counter(codes)
    print(f"\n[login-ha] 20 parallel guesses over two replicas: {dict(seen)}")
    assert set(seen) <= {401, 429, 503}, seen
    assert 1 <= seen[401] <= 5, seen  # at most the limit got a password check
    assert len(_leases(cluster, a.namespace)[lease_name("u:viewer")]["attempts"]) <= 5


def test_expired_throttle_leases_are_deleted(cluster, facade_factory):
    fac = facade_factory(KMS_LOGIN_WINDOW="5", KMS_LOGIN_MAX_FAILURES="5")
    assert _login(fac, "nobody", "wrong-password").status_code == 401
    assert lease_name("u:nobody") in _leases(cluster, fac.namespace)
    wait_until(lambda: not _leases(cluster, fac.namespace), "expired throttle Leases deleted", 60)


@pytest.mark.chaos
def test_apiserver_outage_falls_back_to_the_replica_throttle(cluster, facade_factory):
    """Chosen behaviour: without the apiserver each replica throttles on its own (same limits):
    logins keep working, guesses stay limited, and it is logged and counted."""
    if not cluster.local:
        pytest.skip("stops the local control plane's apiserver")
    from tests.integration.test_api_resilience import ApiServer, _node_ready

    fac = facade_factory(
        KMS_LOGIN_MAX_FAILURES="3", KMS_LOGIN_IP_MAX_FAILURES="1000", KMS_REQUEST_TIMEOUT="4"
    )
    api = ApiServer(cluster)
    try:
        api.stop()
        codes = [_login(fac, "editor", f"guess-{i}").status_code for i in range(4)]
        ok = _login(fac, "viewer", fac.passwords["viewer"]).status_code
        metrics = httpx.get(f"{fac.url}/metrics", timeout=10).text
    finally:
        api.restore()
        wait_until(lambda: _node_ready(cluster), "the fake node Ready again", 60)
    assert codes == [401, 401, 401, 429], codes
    assert ok == 200
    assert "shared login throttle unavailable" in fac.log_path.read_text()
    fallbacks = [ln for ln in metrics.splitlines() if ln.startswith("kms_api_login_throttle_fallbacks_total")]
    assert fallbacks and float(fallbacks[0].split()[-1]) >= 1, fallbacks


def test_login_flood_is_refused_quickly_while_lists_keep_answering(facade_factory):
    """200 bad logins at once against one password-check slot: each is answered 401, 429 or 503
    (with Retry-After), none 500 or hung, and GET /datasets answers 200 throughout."""
    fac = facade_factory(
        KMS_HASH_CONCURRENCY="1",
        KMS_HASH_WAIT="0.1",
        KMS_LOGIN_MAX_FAILURES="100000",
        KMS_LOGIN_IP_MAX_FAILURES="100000",
    )
    token = fac.token("viewer")
    flooding = threading.Event()
    lists: list[int] = []

    def reader() -> None:
        with httpx.Client(base_url=fac.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            while flooding.is_set() or not lists:
                lists.append(c.get("/datasets").status_code)

    def bad_login(i: int) -> tuple[int, str | None]:
        r = httpx.post(
            f"{fac.url}/token",
            data={"username": f"flood-{uuid.uuid4().hex[:8]}", "password": "x"},
            timeout=60,
        )
        return r.status_code, r.headers.get("retry-after")

    flooding.set()
    t = threading.Thread(target=reader)
    t.start()
    try:
        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(bad_login, range(200)))
    finally:
        flooding.clear()
        t.join(60)
    seen = Counter(code for code, _ in answers)
    print(f"\n[login-flood] 200 bad logins: {dict(seen)}; GET /datasets meanwhile: {dict(Counter(lists))}")
    assert set(seen) <= {401, 429, 503}, seen
    assert seen[503] >= 1 and seen[401] >= 1, seen
    assert all(int(ra) >= 1 for code, ra in answers if code in (429, 503) and ra is not None)
    assert all(ra is not None for code, ra in answers if code in (429, 503))
    assert lists and set(lists) == {200}, Counter(lists)
    assert "Traceback" not in fac.log_path.read_text()
