"""The one Kubernetes API client of the operator, the facade and the tools: JSON requests and watch
streams over one urllib3 pool, with bounded timeouts. Where the apiserver is and how to
authenticate: kubeconfig.py (in-cluster service account, or a kubeconfig).

Everything above this module speaks dicts; nothing here knows about datasets or jobs."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import urllib3

from kms_crds import GROUP, VERSION
from kms_crds.kubeconfig import Connection
from kms_crds.kubeconfig import load as load_connection

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

    def __init__(self, conn: Connection | None, timeout: float = 10.0, max_pending: int = 24, pool: int = 64):
        self.conn, self.timeout = conn, timeout
        self.pool = (
            urllib3.PoolManager(maxsize=pool, ssl_context=conn.ssl_context, retries=False) if conn else None
        )
        self.limit_pending(max_pending)

    def limit_pending(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self._pending = threading.BoundedSemaphore(max_pending)

    @classmethod
    def from_environment(
        cls, timeout: float = 10.0, kubeconfig: str | None = None, max_pending: int = 24, pool: int = 64
    ) -> Kube:
        """In-cluster config when running in a pod, else KUBECONFIG / ~/.kube/config."""
        return cls(load_connection(kubeconfig), timeout, max_pending, pool)

    @property
    def namespace(self) -> str:
        """The namespace of the service account or of the kubeconfig's context."""
        return self.conn.namespace if self.conn else "default"

    def close(self) -> None:
        if self.pool is not None:
            self.pool.clear()

    def _open(
        self, method: str, path: str, body: Any, query: dict | None, content_type: str, timeout
    ) -> urllib3.BaseHTTPResponse:
        """Send one request; the response is not read yet (a watch streams it)."""
        if self.pool is None or self.conn is None:
            raise KubeError(0, f"{method} {path}: no cluster configured")
        url, headers, body = prepare(self.conn, method, path, body, query, content_type)
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        try:
            return self.pool.request(
                method,
                url,
                body=body,
                headers=headers,
                timeout=urllib3.Timeout(connect=connect, read=read),
                preload_content=False,
            )
        except Exception as e:  # refused, DNS, timeouts, a failing credential plugin: unreachable
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
                resp.release_conn()
        finally:
            if limited:
                self._pending.release()
        return resp.status, decode(raw)

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
        urllib3_resp = resp
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


def prepare(
    conn: Connection, method: str, path: str, body: Any, query: dict | None, content_type: str
) -> tuple[str, dict[str, str], Any]:
    """(url, headers, body) of one request, the same for both transports (kube_async.py). A
    failing credential (an exec plugin, a token file) is unreachable: KubeError status 0."""
    headers = {"Accept": "application/json", "Content-Type": content_type}
    url = conn.server + path + (f"?{urlencode(query)}" if query else "")
    if body is not None and not isinstance(body, bytes | str):
        body = json.dumps(body)
    try:
        token = conn.token()
    except Exception as e:
        raise KubeError(0, f"{method} {path}: {type(e).__name__}: {e}") from None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return url, headers, body


def decode(raw: bytes) -> Any:
    """A response body: decoded JSON, else text (None when empty)."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace") if isinstance(raw, bytes) else raw


def error_from(status: int, payload: Any, what: str) -> KubeError:
    if isinstance(payload, dict):
        details = payload.get("details") or {}
        return KubeError(
            status, payload.get("message") or what, payload.get("reason") or "", details.get("causes") or []
        )
    return KubeError(status, f"{what}: {str(payload)[:300]}")
