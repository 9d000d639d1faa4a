"""Login throttling shared by every facade replica: one coordination.k8s.io Lease per throttle key.

A login attempt takes a slot in its user's and its address's Lease *before* the password is
checked, by a write at the Lease's resourceVersion (optimistic concurrency): replicas, and parallel
requests on one replica, cannot take more slots than the limit between them. Throttled attempts
are refused from the watch-fed cache without any write, and a successful login gives its slots back.

A Lease lists the wall-clock times of its attempts (annotation) and expires `window` seconds after
the last one (spec.renewTime + leaseDurationSeconds); every replica deletes expired Leases.

When the apiserver cannot take the write (unreachable, slow, refused) the facade falls back to the
replica-local throttle (same limits, per replica) for `fallback_seconds`, logs a warning and counts
`kms_api_login_throttle_fallbacks_total`: logins keep working (never locked out) and stay throttled
per replica (at most limit x replicas attempts), never unthrottled."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from datetime import UTC, datetime

from prometheus_client import Counter

from kms_crds.kube import Kube, KubeError, error_from, ns_path

from .cache import Store

log = logging.getLogger("kms_api.throttle")

GROUP_VERSION = "coordination.k8s.io/v1"
ATTEMPTS = "maps.kube-mapserver.io/login-attempts"
COMPONENT = "login-throttle"
MANAGER = "kube-mapserver-api"
SELECTOR = f"app.kubernetes.io/component={COMPONENT},app.kubernetes.io/managed-by={MANAGER}"
FALLBACKS = Counter(
    "kms_api_login_throttle_fallbacks_total",
    "Login attempts throttled by the replica-local fallback (apiserver unavailable for the shared one)",
)


def lease_name(key: str) -> str:
    """`u:alice` → kms-login-u-<hash>: any user name or address maps to a valid, opaque name."""
    kind, _, _ = key.partition(":")
    return f"kms-login-{kind}-{hashlib.sha256(key.encode()).hexdigest()[:24]}"


def attempts_of(obj: dict | None, now: float, window: float) -> list[float]:
    """The attempt times of a Lease still inside the window (malformed entries ignored)."""
    raw = (((obj or {}).get("metadata") or {}).get("annotations") or {}).get(ATTEMPTS, "")
    out = []
    for part in raw.split(","):
        try:
            t = float(part)
        except ValueError:
            continue
        if now - window < t <= now + window:  # a clock far ahead does not pin a key forever
            out.append(t)
    return sorted(out)


def wait_for(times: list[float], limit: int, now: float, window: float) -> int | None:
    """Seconds until a slot frees when `times` already holds `limit` attempts, else None."""
    if len(times) < limit:
        return None
    return max(1, int(times[-limit] + window - now) + 1)


def micro_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def expired(obj: dict, now: float, window: float) -> bool:
    return not attempts_of(obj, now, window)


class Conflict(Exception):
    """The Lease changed (or appeared) since it was read."""


class Contended(Exception):
    """A Lease kept changing under every retry: the caller answers "busy", never lets it through."""


class SharedThrottle:
    """Attempt slots per user name and per client address, kept in Leases of one namespace."""

    RETRIES = 8

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        max_user: int,
        max_ip: int,
        window: float,
        timeout: float = 2.0,
        fallback_seconds: float = 5.0,
        watch_timeout: int = 60,
    ):
        self.kube, self.namespace = kube, namespace
        self.max_user, self.max_ip, self.window = max_user, max_ip, window
        self.timeout, self.fallback_seconds = timeout, fallback_seconds
        self.path = ns_path(namespace, "leases", group_version=GROUP_VERSION)
        self.store = Store(kube, self.path, "leases", watch_timeout=watch_timeout, label_selector=SELECTOR)
        self._down_until = 0.0
        self._stop = threading.Event()

    def _limits(self, username: str, ip: str) -> list[tuple[str, int]]:
        return [(f"u:{username}", self.max_user), (f"ip:{ip}", self.max_ip)]

    # -------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self.store.start()
        threading.Thread(target=self._collect, name="throttle-gc", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.store.stop()

    @property
    def degraded(self) -> bool:
        """True while the shared state is bypassed (the replica-local throttle alone applies)."""
        return time.monotonic() < self._down_until

    # -------------------------------------------------------------- reads (cache only)

    def cached_retry_after(self, username: str, ip: str, now: float | None = None) -> int | None:
        """Seconds to wait when the cache already shows this user or address at its limit."""
        now = time.time() if now is None else now
        waits = [
            wait_for(attempts_of(self.store.get(lease_name(key)), now, self.window), limit, now, self.window)
            for key, limit in self._limits(username, ip)
        ]
        found = [w for w in waits if w]
        return max(found) if found else None

    # -------------------------------------------------------------- writes (apiserver)

    def reserve(self, username: str, ip: str) -> tuple[int | None, float | None]:
        """Take a slot for this user and this address: (None, stamp) when taken, (seconds, None)
        when either is at its limit. Raises KubeError when the apiserver cannot take it (the
        caller falls back to the local throttle; while degraded it raises at once), Contended
        when the Lease kept changing (the caller answers busy)."""
        if self.degraded:
            raise KubeError(0, "shared login throttle degraded (recent apiserver failure)", "Degraded")
        now = round(time.time(), 6)
        user_key, ip_key = (k for k, _ in self._limits(username, ip))
        try:
            wait = self._update(user_key, self.max_user, lambda ts: [*ts, now])
            if wait:
                return wait, None
            wait = self._update(ip_key, self.max_ip, lambda ts: [*ts, now])
            if wait:  # the address is throttled: this attempt was not made, give the user's slot back
                self._update(user_key, None, lambda ts: _without(ts, now))
                return wait, None
        except KubeError as e:
            if e.status in (0, 429) or e.status >= 500 or e.status in (401, 403):
                self._down_until = time.monotonic() + self.fallback_seconds
            raise
        return None, now

    def release(self, username: str, ip: str, stamp: float) -> None:
        """A successful login: forget the user's failures and give the address's slot back."""
        self._delete(lease_name(f"u:{username}"))
        self._update(f"ip:{ip}", None, lambda ts: _without(ts, stamp))

    def _update(self, key: str, limit: int | None, change) -> int | None:
        """Apply `change` to the key's attempt list at the Lease's resourceVersion, re-reading on a
        conflict. limit: refuse (return the wait) instead when the list is already at it."""
        name = lease_name(key)
        obj = self.store.get(name)
        for _ in range(self.RETRIES):
            now = time.time()
            times = attempts_of(obj, now, self.window)
            if limit is not None and (wait := wait_for(times, limit, now, self.window)):
                return wait
            new = change(times)
            if obj is None and not new:
                return None
            try:
                self._write(name, obj, new)
                return None
            except Conflict:
                obj = self._read(name)
        raise Contended(f"lease {name}: still changing after {self.RETRIES} attempts")

    def _body(self, name: str, obj: dict | None, times: list[float]) -> dict:
        meta: dict = {
            "name": name,
            "labels": {
                "app.kubernetes.io/part-of": "kube-mapserver",
                "app.kubernetes.io/managed-by": MANAGER,
                "app.kubernetes.io/component": COMPONENT,
            },
            "annotations": {ATTEMPTS: ",".join(f"{t:.6f}" for t in times)},
        }
        if obj is not None:
            meta["resourceVersion"] = obj["metadata"]["resourceVersion"]
        last = max(times) if times else time.time()
        return {
            "apiVersion": GROUP_VERSION,
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": MANAGER,
                "leaseDurationSeconds": max(1, int(self.window)),
                "renewTime": micro_time(last),
            },
        }

    def _write(self, name: str, obj: dict | None, times: list[float]) -> None:
        body = self._body(name, obj, times)
        if obj is None:
            status, payload = self._request("POST", self.path, body)
        else:
            status, payload = self._request("PUT", f"{self.path}/{name}", body)
        if status == 409 or (status == 404 and obj is not None):
            raise Conflict(name)
        if status >= 400:
            raise error_from(status, payload, f"write lease {name}")
        self.store.upsert(payload)

    def _read(self, name: str) -> dict | None:
        status, payload = self._request("GET", f"{self.path}/{name}")
        if status == 404:
            self.store.forget(name)
            return None
        if status >= 400:
            raise error_from(status, payload, f"GET lease {name}")
        self.store.upsert(payload)
        return payload

    def _delete(self, name: str, rv: str | None = None) -> None:
        body = {"preconditions": {"resourceVersion": rv}} if rv else None
        status, payload = self._request("DELETE", f"{self.path}/{name}", body)
        if status >= 400 and status not in (404, 409):
            raise error_from(status, payload, f"DELETE lease {name}")
        if status < 400 or status == 404:
            self.store.forget(name)

    def _request(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        return self.kube.request(method, path, body, timeout=(self.timeout, self.timeout))

    # -------------------------------------------------------------- garbage

    def collect(self, now: float | None = None) -> int:
        """Delete the Leases whose attempts all left the window (at their resourceVersion, so a
        Lease written meanwhile stays). Returns how many were deleted."""
        now = time.time() if now is None else now
        done = 0
        for obj in self.store.items():
            if expired(obj, now, self.window):
                self._delete(obj["metadata"]["name"], obj["metadata"].get("resourceVersion"))
                done += 1
        return done

    def _collect(self) -> None:
        period = max(1.0, min(self.window, 30.0))
        while not self._stop.wait(period):
            try:
                self.collect()
            except KubeError as e:
                log.warning("could not delete expired login throttle leases: %s", e)
            except Exception:  # a bug must not stop the collection silently
                log.exception("login throttle garbage collection failed")


def _without(times: list[float], stamp: float) -> list[float]:
    out = list(times)
    for i, t in enumerate(out):
        if abs(t - stamp) < 1e-5:
            del out[i]
            break
    return out
