"""The one Kubernetes API client of the operator, the facade and the tools: JSON requests and watch
streams over one urllib3 pool, with bounded timeouts. Auth (kubeconfig, in-cluster token) comes from
the `kubernetes` package's configuration loaders; its generated models are not used.

Everything above this module speaks dicts; nothing here knows about datasets or jobs."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from kubernetes import client, config

from kms_crds import GROUP, VERSION

log = logging.getLogger("kms_crds.kube")

CR_BASE = f"/apis/{GROUP}/{VERSION}"


class KubeError(Exception):
    """A failed API call. status 0: the apiserver could not be reached (or timed out)."""

    def __init__(self, status: int, message: str, reason: str = "", causes: list[dict] | None = None):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message, self.reason, self.causes = status, message, reason, causes or []

    @property
    def transient(self) -> bool:
        """Retrying may help: unreachable (0), conflicts, throttling, server errors."""
        return self.status in (0, 409, 429) or self.status >= 500


def ns_path(namespace: str, plural: str, name: str | None = None, group_version: str | None = None) -> str:
    """Collection (or object) path of a namespaced resource; core resources when group_version is None."""
    base = f"/apis/{group_version}" if group_version else "/api/v1"
    path = f"{base}/namespaces/{quote(namespace, safe='')}/{plural}"
    return f"{path}/{quote(name, safe='')}" if name is not None else path


def cr_path(namespace: str, plural: str, name: str | None = None) -> str:
    return ns_path(namespace, plural, name, f"{GROUP}/{VERSION}")


class Kube:
    """JSON requests against the apiserver. Thread-safe (urllib3 pool).

    At most `max_pending` requests wait on the apiserver at once; more fail at once (status 0,
    reason TooManyPending). Requests run in the web server's thread pool, so an apiserver that
    hangs must not take all of its threads: reads from the caches need them too."""

    def __init__(self, api: client.ApiClient, timeout: float = 10.0, max_pending: int = 24):
        self.api, self.timeout = api, timeout
        self.limit_pending(max_pending)

    def limit_pending(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self._pending = threading.BoundedSemaphore(max_pending)

    @classmethod
    def from_environment(
        cls, timeout: float = 10.0, kubeconfig: str | None = None, max_pending: int = 24, pool: int = 64
    ) -> Kube:
        """In-cluster config when running in a pod, else KUBECONFIG / ~/.kube/config."""
        cfg = client.Configuration()
        try:
            if kubeconfig:
                raise config.ConfigException("explicit kubeconfig")
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException:
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        cfg.connection_pool_maxsize = pool
        cfg.retries = False
        return cls(client.ApiClient(cfg), timeout, max_pending)

    def close(self) -> None:
        self.api.close()

    def _open(self, method: str, path: str, body: Any, query: dict | None, content_type: str, timeout):
        headers = {"Accept": "application/json", "Content-Type": content_type}
        _, url, headers, _, _ = self.api.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params=headers,
            auth_settings=["BearerToken"],
        )
        try:
            return self.api.call_api(method, url, headers, body, _request_timeout=timeout)
        except Exception as e:  # refused, DNS, timeouts: report as unreachable
            raise KubeError(0, f"{method} {path}: {type(e).__name__}: {e}") from None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict | None = None,
        content_type: str = "application/json",
        timeout: float | tuple[float, float] | None = None,
        limited: bool = True,
    ) -> tuple[int, Any]:
        """One call; returns (HTTP status, decoded JSON or text). Never raises for 4xx/5xx.
        limited=False: not counted against max_pending (health checks)."""
        if limited and not self._pending.acquire(blocking=False):
            raise KubeError(
                0, f"{method} {path}: {self.max_pending} apiserver calls already pending", "TooManyPending"
            )
        try:
            resp = self._open(method, path, body, query, content_type, timeout or (5, self.timeout))
            try:
                raw = resp.read()
            except Exception as e:
                raise KubeError(
                    0, f"{method} {path}: reading the response: {type(e).__name__}: {e}"
                ) from None
        finally:
            if limited:
                self._pending.release()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        return resp.status, payload

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        """Like `request`, but raises KubeError for any status >= 400."""
        status, payload = self.request(method, path, body, **kw)
        if status >= 400:
            raise error_from(status, payload, f"{method} {path}")
        return payload

    def get(self, path: str) -> dict | None:
        status, payload = self.request("GET", path)
        if status == 404:
            return None
        if status >= 400:
            raise error_from(status, payload, f"GET {path}")
        return payload

    def list_pages(self, path: str, query: dict | None = None, limit: int = 500) -> Iterator[dict]:
        """A LIST in pages of `limit` items (each page a decoded list object): a list of thousands of
        objects is never decoded at once."""
        cont = ""
        while True:
            q = {**(query or {}), "limit": str(limit), **({"continue": cont} if cont else {})}
            page = self.call("GET", path, query=q, limited=False)
            yield page
            cont = (page.get("metadata") or {}).get("continue") or ""
            if not cont:
                return

    def watch(self, path: str, query: dict, timeout_seconds: int) -> Iterator[dict]:
        """Watch events (dicts with type/object) until the server ends the watch after timeout_seconds."""
        q = {**query, "watch": "1", "timeoutSeconds": str(timeout_seconds), "allowWatchBookmarks": "true"}
        resp = self._open("GET", path, None, q, "application/json", (5, timeout_seconds + 15))
        if resp.status >= 400:
            raw = resp.read()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = raw
            raise error_from(resp.status, payload, f"WATCH {path}")
        urllib3_resp = resp.response
        try:
            buf = b""
            for chunk in urllib3_resp.stream(amt=None, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        except Exception as e:
            raise KubeError(0, f"WATCH {path}: {type(e).__name__}: {e}") from None
        finally:
            urllib3_resp.close()
            urllib3_resp.release_conn()


def error_from(status: int, payload: Any, what: str) -> KubeError:
    if isinstance(payload, dict):
        details = payload.get("details") or {}
        return KubeError(
            status, payload.get("message") or what, payload.get("reason") or "", details.get("causes") or []
        )
    return KubeError(status, f"{what}: {str(payload)[:300]}")
