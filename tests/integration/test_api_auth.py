"""Facade auth against the real control plane: tokens, roles, JWT tampering, deleted users, throttling."""

from __future__ import annotations

import base64
import json
import time

import httpx
import jwt
import pytest
from kubernetes import client

from tests.helpers import wait_until


def _signing_key(cluster, ns: str) -> str:
    secret = client.CoreV1Api(cluster.api).read_namespaced_secret("kube-mapserver-jwt", ns)
    return base64.b64decode(secret.data["signing-key"]).decode()


def _get(facade, token: str | None, path: str = "/datasets") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{facade.url}{path}", headers=headers, timeout=10)


def test_login_token_and_protected_dataset_flow(facade):
    assert _get(facade, None).status_code == 401
    r = httpx.post(
        f"{facade.url}/token",
        data={"username": "viewer", "password": facade.passwords["viewer"]},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and body["role"] == "viewer" and body["expires_in"] > 0
    assert _get(facade, body["access_token"]).status_code == 200
    # /login takes JSON and forms alike
    for kw in (
        {"json": {"username": "editor", "password": facade.passwords["editor"]}},
        {"data": {"username": "editor", "password": facade.passwords["editor"]}},
    ):
        r = httpx.post(f"{facade.url}/login", timeout=10, **kw)
        assert r.status_code == 200, r.text
        me = _get(facade, r.json()["access_token"], "/me").json()
        assert me == {"name": "editor", "role": "editor"}
    r = httpx.post(
        f"{facade.url}/login", json={"username": "editor", "password": "wrong-password"}, timeout=10
    )
    assert r.status_code == 401 and r.json()["detail"]
    r = httpx.post(f"{facade.url}/login", json={"username": "editor"}, timeout=10)
    assert r.status_code == 422 and r.json()["field"] == "password"


def test_signing_key_secret_and_users_secret_hold_no_plain_passwords(cluster, facade):
    assert len(_signing_key(cluster, facade.namespace)) >= 32
    secret = client.CoreV1Api(cluster.api).read_namespaced_secret("kube-mapserver-users", facade.namespace)
    entries = {k: json.loads(base64.b64decode(v)) for k, v in secret.data.items()}
    assert {e["role"] for e in entries.values()} >= {"admin", "editor", "viewer"}
    for name, e in entries.items():
        assert e["hash"].startswith("$argon2")
        if name in facade.passwords:
            assert facade.passwords[name] not in json.dumps(e)
    assert all(p not in facade.log_path.read_text() for p in facade.passwords.values())


def test_unknown_users_are_checked_against_a_hash_as_costly_as_real_ones(cluster, facade, monkeypatch):
    """No user oracle by time, counted instead of timed (the times are a `make bench` figure):
    the facade's password check (kms_api.auth.verify_password, the code the facade process runs)
    verifies exactly one argon2 hash for an unknown user, a dummy one, and that hash has the same
    argon2 parameters (type, version, time, memory, parallelism, lengths) as every user's hash in
    the cluster, so an unknown user costs the same work as a known one."""
    from argon2 import extract_parameters

    from kms_api import auth

    verified: list[str] = []
    hasher = auth._hasher

    class CountingHasher:
        def verify(self, hash_: str, password: str) -> bool:
            verified.append(hash_)
            return hasher.verify(hash_, password)

    monkeypatch.setattr(auth, "_hasher", CountingHasher())
    assert not auth.verify_password(None, "some password")
    assert verified == [auth._DUMMY_HASH]

    secret = client.CoreV1Api(cluster.api).read_namespaced_secret("kube-mapserver-users", facade.namespace)
    hashes = {k: json.loads(base64.b64decode(v))["hash"] for k, v in secret.data.items()}
    assert {"admin", "editor", "viewer"} <= set(hashes)
    dummy = extract_parameters(auth._DUMMY_HASH)
    assert {name: extract_parameters(h) for name, h in hashes.items()} == dict.fromkeys(hashes, dummy)


def test_bad_tokens_are_401(cluster, facade):
    key = _signing_key(cluster, facade.namespace)
    now = int(time.time())
    good_claims = {"sub": "viewer", "role": "viewer", "iat": now, "exp": now + 600, "iss": "kube-mapserver"}
    valid = facade.token("viewer")
    good_claims["pwv"] = jwt.decode(valid, options={"verify_signature": False})["pwv"]
    assert _get(facade, jwt.encode(good_claims, key, algorithm="HS256")).status_code == 200

    expired = jwt.encode({**good_claims, "iat": now - 7200, "exp": now - 3600}, key, algorithm="HS256")
    wrong_key = jwt.encode(good_claims, "not-the-key-" * 4, algorithm="HS256")
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(json.dumps(good_claims).encode()).rstrip(b"=").decode()
    alg_none = f"{header}.{payload}."
    head, _, sig = valid.split(".")
    tampered_claims = {**jwt.decode(valid, options={"verify_signature": False}), "role": "admin"}
    tampered_payload = base64.urlsafe_b64encode(json.dumps(tampered_claims).encode()).rstrip(b"=").decode()
    tampered = f"{head}.{tampered_payload}.{sig}"
    for name, token in {
        "expired": expired,
        "wrong key": wrong_key,
        "alg none": alg_none,
        "tampered role": tampered,
        "garbage": "abc.def.ghi",
    }.items():
        r = _get(facade, token)
        assert r.status_code == 401, (name, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["detail"]
    r = httpx.post(
        f"{facade.url}/config",
        json={"minColormapClasses": 3},
        headers={"Authorization": f"Bearer {tampered}"},
    )
    assert r.status_code == 401


def test_deleted_user_and_reset_password_invalidate_tokens(facade):
    facade.add_user("temp-user", "editor")
    token = facade.token("temp-user")
    assert _get(facade, token).status_code == 200
    old = facade.passwords["temp-user"]
    done = facade.cli("reset", "temp-user", password="a-new-password-123")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: _get(facade, token).status_code == 401, "old token refused after a reset", timeout=10)
    r = httpx.post(f"{facade.url}/token", data={"username": "temp-user", "password": old}, timeout=10)
    assert r.status_code == 401
    facade.passwords["temp-user"] = "a-new-password-123"
    token = facade.token("temp-user")
    assert facade.cli("delete", "temp-user").returncode == 0
    wait_until(lambda: _get(facade, token).status_code == 401, "token of a deleted user refused", timeout=10)
    listed = facade.cli("list").stdout
    assert "temp-user" not in listed and "admin\tadmin" in listed


def test_roles(facade):
    spec = {
        "type": "raster",
        "source": {"path": "ocean/sst-sample.tif"},
        "identifier": "role-check",
        "title": "t",
    }
    with facade.client("viewer") as v, facade.client("editor") as e, facade.client("admin") as a:
        assert v.get("/datasets").status_code == 200
        r = v.post("/datasets", json={**spec, "id": "role-check-v"})
        assert r.status_code == 403 and "editor" in r.json()["detail"]
        assert v.post("/jobs/cleanup", json={"dryRun": True}).status_code == 403
        assert e.post("/config", json={"minColormapClasses": 3}).status_code == 403
        assert e.post("/config/reset").status_code == 403
        assert e.get("/users").status_code == 403
        r = e.post("/datasets", json={**spec, "id": "role-check-e"})
        assert r.status_code == 201, r.text
        assert e.delete("/datasets/role-check-e").status_code == 200
        assert {u["name"] for u in a.get("/users").json()} >= {"admin", "editor", "viewer"}


@pytest.fixture(scope="module")
def strict_facade(facade_factory):
    """A facade of its own: the brute-force test must not throttle the shared one."""
    return facade_factory(KMS_LOGIN_MAX_FAILURES="5", KMS_LOGIN_IP_MAX_FAILURES="12", KMS_LOGIN_WINDOW="60")


def test_brute_force_is_throttled_per_user_and_per_address(strict_facade):
    url = f"{strict_facade.url}/token"
    codes = [
        httpx.post(url, data={"username": "editor", "password": f"guess-{i}"}, timeout=10).status_code
        for i in range(6)
    ]
    assert codes == [401] * 5 + [429]
    r = httpx.post(
        url, data={"username": "editor", "password": strict_facade.passwords["editor"]}, timeout=10
    )
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert "too many" in r.json()["detail"]
    # an unknown user is answered like a known one with a wrong password, and both count as failed
    # logins of this address (how long each takes is a `make bench` figure: bench/api_bench.py)
    unknown = httpx.post(url, data={"username": "nobody-1", "password": "x"}, timeout=10)
    known = httpx.post(url, data={"username": "viewer", "password": "x"}, timeout=10)
    assert unknown.status_code == known.status_code == 401
    assert unknown.json() == known.json()
    assert unknown.headers.get("www-authenticate") == known.headers.get("www-authenticate") == "Bearer"
    # many user names from one address: the address is throttled too (12 failures in total)
    codes = [
        httpx.post(url, data={"username": f"spray-{i}", "password": "x"}, timeout=10).status_code
        for i in range(6)
    ]
    assert codes[-1] == 429
    assert "failed login" in strict_facade.log_path.read_text()
